"""Typed results of an evaluation: one `ItemRecord` per item and mode, aggregated per benchmark and row.

A *row* is one (model, mode) pair: `greedy` (the plain protocol), `self_reflect` (SPARK's test-time
judge -> reflect loop) or `best_of_<n>` (n samples, the one the model itself scores highest). Rows with
and without test-time scaling are never averaged or compared with each other.

An `ItemRecord` is self-contained: it stores the response and everything the scorer needs (gold,
options, answer type, precision, grouping keys), so `--score-only` re-scores a predictions file without
the dataset or the model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from spark_vl.types import Sample

# Why an item has no scorable answer. Every such item is counted and listed in the metrics, and scored wrong.
STATUSES = ("ok", "no_answer", "image_error", "generation_error")


@dataclass
class ItemRecord:
    benchmark: str
    uid: str
    mode: str  # "greedy" | "self_reflect" | "best_of_<n>"
    protocol: str
    prompt: str  # the user text, images shown as <image>
    response: str | None  # the scored response (self-reflection: the final one)
    extracted: str | None  # the answer read from the response; None = none found
    correct: bool
    status: str = "ok"  # one of STATUSES
    decided_by: str = ""  # which rule or verifier layer decided
    error: str | None = None  # the problem behind a non-ok status
    finish_reason: str | None = None
    sample: dict[str, Any] = field(default_factory=dict)  # serialised Sample without image data
    extra: dict[str, Any] = field(default_factory=dict)  # mode/benchmark details (rounds, candidates, ...)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def sample_to_json(sample: Sample) -> dict[str, Any]:
    """A Sample without its image payloads (only how many images it had)."""
    data = {f.name: getattr(sample, f.name) for f in dataclasses.fields(Sample) if f.name != "images"}
    data["num_images"] = len(sample.images)
    data["meta"] = _jsonable(sample.meta)
    return data


def sample_from_json(data: dict[str, Any]) -> Sample:
    names = {f.name for f in dataclasses.fields(Sample)} - {"images"}
    return Sample(**{k: v for k, v in data.items() if k in names})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass
class BenchmarkResult:
    """Metrics of one benchmark in one row. `metrics` holds headline numbers and nested breakdowns."""

    benchmark: str
    mode: str
    protocol: str
    metrics: dict[str, Any]
    columns: list[tuple]  # (table label, metric key[, counts in averages: bool = True]) in table order
    group: str  # "math" | "reward" | "general" | "other": which average a column enters
    records: list[ItemRecord] = field(default_factory=list)

    def column_values(self) -> dict[str, float | None]:
        return {col[0]: _number(self.metrics.get(col[1])) for col in self.columns}


@dataclass
class EvalResult:
    """All benchmarks x modes of one model under one protocol."""

    model: str
    protocol: dict[str, Any]  # EvalProtocol.summary()
    results: list[BenchmarkResult] = field(default_factory=list)
    generated: int = 0  # items sent to the engine by this run (cache hits excluded)

    def get(self, benchmark: str, mode: str = "greedy") -> BenchmarkResult | None:
        return next((r for r in self.results if r.benchmark == benchmark and r.mode == mode), None)

    @property
    def modes(self) -> list[str]:
        return list(dict.fromkeys(r.mode for r in self.results))

    def flat_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Scalar metrics for a training log: `eval/<benchmark>/<metric>`; non-greedy modes add `@<mode>`."""
        flat: dict[str, float] = {}
        for r in self.results:
            tag = r.benchmark if r.mode == "greedy" else f"{r.benchmark}@{r.mode}"
            for key, value in r.metrics.items():
                number = _number(value)
                if number is not None:
                    flat[f"{prefix}/{tag}/{key}"] = number
        return flat


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
