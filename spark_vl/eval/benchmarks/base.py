"""What a benchmark adapter is: a plain dataclass of functions, found by name in `BENCHMARKS`.

An adapter turns one raw row of the benchmark's real schema into a `Sample` (`convert`), renders the
user text (`render`, default: the protocol's format template around `sample.problem`), scores one
response (`score`, given the protocol) and aggregates item records into metrics with per-category
breakdowns (`aggregate`). `columns` names the table columns (label, metric key) under a protocol.
No inheritance: a new benchmark is a new `Benchmark(...)` value. Converters use the row vocabulary shared
with the dataset recipes (`spark_vl.data.rows`: `RowContext`, `SkipRow`, `require`, `image_refs`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_vl.data.prompts import load_template
from spark_vl.data.rows import RowContext, Skipped
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import Score, verifier_score
from spark_vl.types import Sample

Convert = Callable[[dict[str, Any], RowContext], Sample]
Scorer = Callable[[Sample, str | None, EvalProtocol], Score]
Aggregate = Callable[[list[ItemRecord], EvalProtocol], dict[str, Any]]


def render_problem(sample: Sample, protocol: EvalProtocol) -> str:
    """The default user text: the protocol's format template with the problem in its {problem} slot."""
    return load_template(protocol.template).replace("{problem}", sample.problem.strip())


def score_with_verifier(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    return verifier_score(sample, response, protocol)


@dataclass(frozen=True)
class Benchmark:
    name: str
    label: str  # table column label
    group: str  # "math" | "reward" | "general" | "other"
    convert: Convert
    hub_id: str | None = None
    hub_config: str | None = None
    splits: tuple[str | None, ...] = (None,)
    official: Scorer | None = None  # the benchmark's own rule under protocol "official"; None = the verifier
    scorer: Scorer | None = None  # a scorer used under EVERY protocol (reward benchmarks' verdict parsers)
    flip: Callable[[Sample], Sample] | None = None  # the same item with the answer order reversed (reward)
    aggregate: Aggregate | None = None  # None = accuracy + `breakdowns`
    breakdowns: tuple[str, ...] = ()  # sample.meta keys (or "category"/"source") to break accuracy down by
    render: Callable[[Sample, EvalProtocol], str] = render_problem
    columns: Callable[[EvalProtocol], list[tuple]] | None = None  # (label, key[, averaged]); None = accuracy
    sort_key: Callable[[Sample], Any] | None = None  # order after loading (e.g. DynaMath seed-major)
    row_filter: Callable[[Sample], bool] | None = None  # keep only some rows (MathVerse Vision-Only)
    notes: str = ""  # metric and protocol summary shown in docs and the report
    tts: bool = True  # whether self-reflection / best-of-N apply (not for reward benchmarks)
    # "generate": greedy text per item; "p_yes": no text, the model's own P(yes) for each candidate reply in
    # sample.meta["completions"] (spark_vl.spark.judge_score), stored as the response `{"p_yes": [...]}`
    produce: str = "generate"

    def score(self, sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
        if self.scorer is not None:
            return self.scorer(sample, response, protocol)
        if protocol.scorer == "official" and self.official is not None:
            return self.official(sample, response, protocol)
        return score_with_verifier(sample, response, protocol)

    def metrics(self, records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
        if self.aggregate is not None:
            return self.aggregate(records, protocol)
        return accuracy_metrics(records, self.breakdowns)

    def table_columns(self, protocol: EvalProtocol) -> list[tuple]:
        return self.columns(protocol) if self.columns is not None else [(self.label, "accuracy")]


# ---------------------------------------------------------------------------------------------------------------
# Aggregation helpers shared by the adapters


def _values(record: ItemRecord, key: str) -> list[str]:
    sample = record.sample
    value = sample.get(key) if key in ("category", "source") else (sample.get("meta") or {}).get(key)
    if value is None or value == "":
        return []
    if isinstance(value, list):  # e.g. MathVista skills: an item counts toward each
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)]


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def breakdown(records: list[ItemRecord], key: str) -> dict[str, dict[str, float]]:
    """Accuracy and count per value of `key` (sorted by value)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        for v in _values(r, key):
            groups[v].append(r.correct)
    return {v: {"accuracy": sum(c) / len(c), "n": len(c)} for v, c in sorted(groups.items())}


def problem_list(records: list[ItemRecord]) -> list[dict[str, Any]]:
    """Every item without a scorable answer: uid, status and the reason."""
    return [{"uid": r.uid, "status": r.status, "error": r.error} for r in records if r.status != "ok"]


def accuracy_metrics(records: list[ItemRecord], breakdowns: Iterable[str] = ()) -> dict[str, Any]:
    """Plain accuracy (every item weighs the same; items without an answer count as wrong) + breakdowns."""
    n = len(records)
    out: dict[str, Any] = {
        "accuracy": sum(r.correct for r in records) / n if n else None,
        "num_items": n,
        "num_correct": sum(r.correct for r in records),
        "no_answer": sum(r.status == "no_answer" for r in records),
        "image_errors": sum(r.status == "image_error" for r in records),
        "generation_errors": sum(r.status == "generation_error" for r in records),
    }
    for key in breakdowns:
        out[f"by_{key.replace(' ', '_')}"] = breakdown(records, key)
    out["problems"] = problem_list(records)
    return out


def str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass
class LoadedBenchmark:
    """The samples of one benchmark plus what could not be read."""

    benchmark: Benchmark
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    root: Path | None = None
    source: str = ""
    missing_splits: list[str] = field(default_factory=list)  # splits the local source does not hold
    splits: list[str] = field(default_factory=list)  # the splits asked for
