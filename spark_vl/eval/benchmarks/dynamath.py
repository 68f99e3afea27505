"""DynaMath (DynaMath/DynaMath_Sample, splits sample_variant1..10): average and worst case over variants.

501 seed questions x 10 programmatic variants. Average-case accuracy counts every row; worst-case
accuracy counts a seed only if ALL its variants are right; reasoning robustness RR = worst / average.
The seed id is the row's `qid` (VLMEvalKit TSV) or `id`; the variant is `varid` or the split's number.
Samples are ordered seed-major, so `--limit 10k` keeps whole seeds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from spark_vl.data.rows import RowContext, image_refs, require
from spark_vl.eval.benchmarks.base import Benchmark, accuracy_metrics
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import Score, extract, first_float, letters, norm_text
from spark_vl.rewards.choices import gold_letters
from spark_vl.types import Sample

TOLERANCE = 1e-3
_VARIANT_RE = re.compile(r"(\d+)$")


def _convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    qid = str(require(row, "qid", "id"))
    varid = row.get("varid")
    if varid in (None, "") and ctx.split:
        m = _VARIANT_RE.search(ctx.split)
        varid = m.group(1) if m else ctx.split
    varid = str(varid if varid not in (None, "") else ctx.index)
    raw_type = str(row.get("answer_type") or "").lower()
    answer_type = {"multiple choice": "mcq_letter", "float": "float"}.get(raw_type)
    return Sample(
        uid=f"{qid}-v{varid}",
        problem=str(require(row, "question")),
        answer=str(require(row, "ground_truth", "answer")).strip(),
        images=image_refs(row, "decoded_image", "image"),
        answer_type=answer_type,
        tolerance=TOLERANCE if answer_type == "float" else None,
        source="dynamath",
        category=str(row.get("subject") or ""),
        group_key=qid,
        meta={"seed": qid, "variant": varid, "answer_type": raw_type, "subject": row.get("subject"),
              "knowledge_level": row.get("knowledge_level")},
    )


def _official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    """MCQ: letter equality; float: |pred - gold| <= 1e-3; otherwise case-insensitive containment of the gold."""
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    if sample.answer_type == "mcq_letter":
        found = letters(pred, 0)
        return Score(found is not None and found == gold_letters(sample.answer, None), pred, "ok", "letter")
    if sample.answer_type == "float":
        p, g = first_float(pred), first_float(sample.answer)
        return Score(p is not None and g is not None and abs(p - g) <= TOLERANCE, pred, "ok", "float_tol")
    return Score(norm_text(sample.answer) in norm_text(pred), pred, "ok", "contains")


def _metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = accuracy_metrics(records, ("subject", "knowledge_level", "answer_type"))
    seeds: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        seeds[str(r.sample.get("group_key") or r.uid)].append(r.correct)
    out["average"] = out["accuracy"]
    out["worst"] = sum(all(v) for v in seeds.values()) / len(seeds) if seeds else None
    out["seeds"] = len(seeds)
    sizes = [len(v) for v in seeds.values()]
    out["variants_per_seed"] = {"min": min(sizes), "max": max(sizes)} if sizes else None
    out["robustness"] = out["worst"] / out["average"] if out["average"] else None
    return out


def _sort_key(sample: Sample) -> tuple:
    seed, variant = sample.meta.get("seed", ""), sample.meta.get("variant", "")
    return (int(seed) if str(seed).isdigit() else 0, str(seed), int(variant) if str(variant).isdigit() else 0)


DYNAMATH = Benchmark(
    name="dynamath",
    label="DynaMath",
    group="math",
    convert=_convert,
    hub_id="DynaMath/DynaMath_Sample",
    splits=tuple(f"sample_variant{i}" for i in range(1, 11)),
    official=_official,
    aggregate=_metrics,
    sort_key=_sort_key,
    columns=lambda p: [("DynaMath", "average"), ("DynaMath-worst", "worst", False)]
    if p.scorer == "official"
    else [("DynaMath", "average")],
    notes="501 seeds x 10 variants; average (headline, as SPARK), worst case over variants and RR always "
    "reported; official: letter / |d| <= 1e-3 / substring",
)
