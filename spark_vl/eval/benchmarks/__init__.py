"""Benchmark adapters, found by name in a plain dict (`BENCHMARKS`), in SPARK's column order.

`get_benchmark(name)` also accepts `prepared:<path>` (or just an existing path) for any prepared dataset
from the data recipes, and `package.module:attr` for a user's own `Benchmark` value.
"""

from __future__ import annotations

from pathlib import Path

from spark_vl.data.rows import RowContext, SkipRow
from spark_vl.eval.benchmarks.base import Benchmark, LoadedBenchmark, accuracy_metrics
from spark_vl.eval.benchmarks.dynamath import DYNAMATH
from spark_vl.eval.benchmarks.general import MMMU, MMSTAR
from spark_vl.eval.benchmarks.reward import MM_REWARDBENCH, VL_REWARDBENCH
from spark_vl.eval.benchmarks.rewardbench2 import REWARDBENCH2, REWARDBENCH2_PYES
from spark_vl.eval.benchmarks.spark_merged import SPARK_MERGED
from spark_vl.eval.benchmarks.visual_math import (
    LOGICVISTA,
    MATHVERSE,
    MATHVERSE_VISION_ONLY,
    MATHVISION,
    MATHVISION_MINI,
    MATHVISTA,
    MMK12,
)
from spark_vl.eval.benchmarks.wemath import WEMATH
from spark_vl.plugins import PluginError, resolve

# SPARK's Table 1 order (MVista, MVision, WeMath, MVerse, Dyna, Logic, MMK12 | reward), then Table 4's general ones.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        MATHVISTA,
        MATHVISION,
        MATHVISION_MINI,
        WEMATH,
        MATHVERSE,
        MATHVERSE_VISION_ONLY,
        DYNAMATH,
        LOGICVISTA,
        MMK12,
        SPARK_MERGED,
        VL_REWARDBENCH,
        REWARDBENCH2,
        REWARDBENCH2_PYES,
        MM_REWARDBENCH,
        MMMU,
        MMSTAR,
    )
}

ALIASES = {"mathvision_test": "mathvision", "mathvision_testmini": "mathvision_mini", "we_math": "wemath",
           "vlrewardbench": "vl_rewardbench", "vl_rb": "vl_rewardbench", "multimodal_rewardbench": "mm_rewardbench",
           "rb2": "rewardbench2", "reward_bench_2": "rewardbench2", "rb2_pyes": "rewardbench2_pyes",
           "mmmu_val": "mmmu", "mathverse_vo": "mathverse_vision_only"}

PREPARED_PREFIX = "prepared:"


class UnknownBenchmarkError(KeyError):
    """A benchmark name that is neither known, a prepared dataset path nor an importable `module:attr`."""

    def __str__(self) -> str:
        return str(self.args[0])


def _no_rows(row, ctx: RowContext):
    raise SkipRow("this benchmark is built from Sample objects, not raw rows")


def generic_benchmark(name: str, label: str | None = None) -> Benchmark:
    """An adapter for any list of Samples (a prepared dataset, the trainer's held-out split): verifier accuracy
    by category and source."""
    return Benchmark(
        name=name,
        label=label or name,
        group="other",
        convert=_no_rows,
        breakdowns=("category", "source"),
        notes="accuracy of the verifier on the dataset's own gold answers, by category and source",
    )


def benchmark_for(name: str) -> Benchmark:
    """The adapter for a name used as a key of already-loaded samples: a known name or alias, a prepared
    dataset, else a generic adapter (e.g. the trainer's "val"). Never imports or touches the filesystem."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in BENCHMARKS:
        return BENCHMARKS[key]
    if name.startswith(PREPARED_PREFIX):
        path = name.removeprefix(PREPARED_PREFIX)
        return generic_benchmark(name, label=Path(path.split("@")[0]).name or path)
    return generic_benchmark(name)


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name.lower(), name.lower())
    if key in BENCHMARKS:
        return BENCHMARKS[key]
    if name.startswith(PREPARED_PREFIX) or Path(name).exists():
        return benchmark_for(PREPARED_PREFIX + name.removeprefix(PREPARED_PREFIX))
    if ":" not in name:  # resolve() would list the names sorted and without the prepared:<path> form
        raise UnknownBenchmarkError(
            f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)} "
            f"(or prepared:<path> for a prepared dataset, or package.module:attr)"
        )
    try:
        return resolve(name, BENCHMARKS, "benchmark", expect=Benchmark)
    except PluginError as err:
        raise UnknownBenchmarkError(str(err)) from None


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "LoadedBenchmark",
    "RowContext",
    "SkipRow",
    "UnknownBenchmarkError",
    "accuracy_metrics",
    "benchmark_for",
    "generic_benchmark",
    "get_benchmark",
]
