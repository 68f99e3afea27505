"""SPARK's merged evaluation file (`benchmark_combine.json` / `_v2` from internlm/Spark-Data) as one benchmark.

Each record has `dataset`, `problem`, `answer`, `image_path` (schema from the reference notes, not checked
against the real file). Scoring is the protocol's; the headline is SPARK's: the UNWEIGHTED mean of the
per-dataset accuracies (`mean_of_datasets`), with every dataset's accuracy in `by_dataset`. Which split or
version of each benchmark the file holds is not documented, so these numbers are only comparable with SPARK's
own, not with the per-benchmark adapters. Download the file and pass it with --data spark_merged=<file>.
"""

from __future__ import annotations

from typing import Any

from spark_vl.data.rows import RowContext, require
from spark_vl.eval.benchmarks.base import Benchmark, accuracy_metrics, mean
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.types import Sample


def _convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    dataset = str(require(row, "dataset"))
    uid = row.get("id") if row.get("id") not in (None, "") else f"{dataset}-{ctx.index}"
    images = row.get("image_path") or row.get("images") or []
    return Sample(
        uid=str(uid),
        problem=str(require(row, "problem")),
        answer=str(require(row, "answer")),
        images=list(images) if isinstance(images, list) else [images],
        source=dataset,
        category=dataset,
        meta={"dataset": dataset},
    )


def _metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = accuracy_metrics(records, ("dataset",))
    out["mean_of_datasets"] = mean(d["accuracy"] for d in out["by_dataset"].values())
    return out


SPARK_MERGED = Benchmark(
    name="spark_merged",
    label="SPARK-merged",
    group="other",  # its own number, never averaged with the per-benchmark math columns
    convert=_convert,
    aggregate=_metrics,
    columns=lambda p: [("SPARK-merged", "mean_of_datasets")],
    notes="SPARK's merged file (local only); headline = unweighted mean of per-dataset accuracies, as SPARK reports",
)
