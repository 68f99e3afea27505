"""Math-reasoning adapters: MathVista, MathVerse, MathVision, MMK12, LogicVista.

Schemas follow the hub dataset cards (docs/EVAL.md lists which were checked against real files). The
`official` scorers implement only the rule-based part of each benchmark's metric.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from spark_vl.data.rows import RowContext, SkipRow, image_refs, require
from spark_vl.eval.benchmarks.base import Benchmark, accuracy_metrics, str_or_none
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import (
    Score,
    all_floats,
    extract,
    first_float,
    letters,
    letters_or_option,
    levenshtein,
    norm_text,
    strict_float,
    verifier,
)
from spark_vl.rewards.choices import LETTERS, gold_letters
from spark_vl.types import Sample


def options_block(choices: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


# ---------------------------------------------------------------------------------------------------------------
# MathVista (AI4Math/MathVista, testmini): MCQ golds are option TEXT; floats are rounded to `precision`.


def _mathvista_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    pid = str(require(row, "pid"))
    question = str(require(row, "query", "question"))
    choices = [str(c) for c in row.get("choices") or []] or None
    qtype = row.get("question_type") or ("multi_choice" if choices else "free_form")
    atype = row.get("answer_type") or "text"
    if qtype == "multi_choice" and not choices:
        raise SkipRow(f"MathVista {pid}: multi_choice question without choices")
    if "query" not in row or not row.get("query"):
        question = question + ("\nChoices:\n" + options_block(choices) if choices else "")
    precision = row.get("precision")
    meta = dict(row.get("metadata") or {})
    meta.update({"question_type": qtype, "answer_type": atype, "unit": row.get("unit")})
    return Sample(
        uid=pid,
        problem=question,
        answer=str(require(row, "answer")),
        images=image_refs(row, "decoded_image", "image"),
        choices=choices,
        answer_type={"multi_choice": "mcq_letter"}.get(qtype)
        or {"integer": "integer", "float": "float", "text": "text"}.get(atype),
        precision=int(precision) if precision not in (None, "") and atype == "float" else None,
        source="mathvista",
        category=str(meta.get("category") or ""),
        meta=meta,
    )


def _mathvista_official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    """Normalise like the official scorer (letter or nearest option text; int(); round to precision), then match."""
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    gold = sample.answer.strip()
    meta = sample.meta
    if meta.get("question_type") == "multi_choice" and sample.choices:
        found = letters(pred, len(sample.choices))
        if found is not None and len(found) == 1:
            option, rule = sample.choices[LETTERS.index(next(iter(found)))], "option_letter"
        else:
            distances = [levenshtein(norm_text(pred), norm_text(c)) for c in sample.choices]
            option, rule = sample.choices[distances.index(min(distances))], "nearest_option"
        return Score(norm_text(option) == norm_text(gold), pred, "ok", rule, {"normalized": option})
    atype = meta.get("answer_type")
    if atype in ("integer", "float"):
        value = first_float(pred)
        if value is None:
            return Score(False, pred, "ok", "not_a_number")
        gold_value = first_float(gold)
        if atype == "integer":
            return Score(gold_value is not None and int(value) == int(gold_value), pred, "ok", "integer",
                         {"normalized": str(int(value))})
        places = sample.precision if sample.precision is not None else 2
        ok = gold_value is not None and round(value, places) == round(gold_value, places)
        return Score(ok, pred, "ok", f"float_round_{places}", {"normalized": str(round(value, places))})
    if atype == "list":
        return Score(all_floats(pred) == all_floats(gold) and bool(all_floats(gold)), pred, "ok", "list")
    return Score(norm_text(pred) == norm_text(gold), pred, "ok", "text")


MATHVISTA = Benchmark(
    name="mathvista",
    label="MathVista",
    group="math",
    convert=_mathvista_convert,
    hub_id="AI4Math/MathVista",
    splits=("testmini",),
    official=_mathvista_official,
    breakdowns=("task", "skills", "grade", "question_type", "answer_type", "category", "source"),
    notes="testmini (1,000); accuracy by task/skill/grade; official: letter/nearest option, int(), "
    "round to precision, exact match (rule part of the GPT-extraction metric)",
)


# ---------------------------------------------------------------------------------------------------------------
# MathVerse (AI4Math/MathVerse, config testmini): 788 problems x 5 versions; report every version + Vision-Only.

VISION_ONLY = "Vision Only"
_VISION_ONLY_PROMPT = "Answer the question shown in the image."


def _mathverse_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    uid = str(require(row, "sample_index"))
    version = str(row.get("problem_version") or "")
    question = str_or_none(row.get("question")) or str_or_none(row.get("query_wo")) or _VISION_ONLY_PROMPT
    qtype = str(row.get("question_type") or "")
    meta = dict(row.get("metadata") or {})
    meta.update({"version": version, "question_type": qtype, "problem_index": str(row.get("problem_index", ""))})
    return Sample(
        uid=uid,
        problem=question,
        answer=str(require(row, "answer")),
        images=image_refs(row, "image"),
        answer_type="mcq_letter" if qtype.startswith("multi") else None,
        source="mathverse",
        category=str(meta.get("subject") or ""),
        group_key=meta["problem_index"] or None,
        meta=meta,
    )


def _mathverse_official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    if sample.answer_type == "mcq_letter":
        found = letters(pred, 0)
        return Score(found is not None and found == gold_letters(sample.answer, None), pred, "ok", "letter")
    correct, layer = verifier(sample, pred)
    return Score(correct, pred, "ok", layer)


def _version_slug(version: str) -> str:
    return version.lower().replace(" ", "_").replace("-", "_")


def _mathverse_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = accuracy_metrics(records, ("version", "subject", "subfield", "question_type"))
    for version, stats in out["by_version"].items():
        out[f"version/{_version_slug(version)}"] = stats["accuracy"]
    out["vision_only"] = out["by_version"].get(VISION_ONLY, {}).get("accuracy")
    return out


MATHVERSE = Benchmark(
    name="mathverse",
    label="MathVerse",
    group="math",
    convert=_mathverse_convert,
    hub_id="AI4Math/MathVerse",
    hub_config="testmini",
    splits=("testmini",),
    official=_mathverse_official,
    aggregate=_mathverse_metrics,
    notes="testmini, all 5 problem versions (3,940 rows); accuracy overall, per version (incl. Vision Only), "
    "subject, subfield; rule-based (the official metric uses a GPT judge, so this is a lower bound)",
)

MATHVERSE_VISION_ONLY = replace(
    MATHVERSE,
    name="mathverse_vision_only",
    label="MathVerse-VO",
    row_filter=lambda s: s.meta.get("version") == VISION_ONLY,
    notes="testmini Vision-Only version only (788 rows)",
)


# ---------------------------------------------------------------------------------------------------------------
# MathVision (MathLLMs/MathVision): test (3,040) and testmini (304); 5-way MCQ with letter golds + free form.


def _mathvision_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    uid = str(require(row, "id"))
    options = [str(o) for o in row.get("options") or []]
    question = str(require(row, "question"))
    if options:
        question += "\nChoices:\n" + options_block(options)
    return Sample(
        uid=uid,
        problem=question,
        answer=str(require(row, "answer")),
        images=image_refs(row, "decoded_image", "image"),
        choices=options or None,
        answer_type="mcq_letter" if options else None,
        source="mathvision",
        category=str(row.get("subject") or ""),
        solution=str_or_none(row.get("solution")),
        meta={"subject": row.get("subject"), "level": row.get("level")},
    )


def _mathvision_official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    """is_equal: letter or option value for MCQ; else lower-case string, |a-b| < 1e-6, then symbolic."""
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    if sample.choices:
        found = letters_or_option(pred, sample.choices)
        return Score(found is not None and found == gold_letters(sample.answer, sample.choices), pred, "ok",
                     "letter_or_option")
    if norm_text(pred) == norm_text(sample.answer):
        return Score(True, pred, "ok", "string")
    p, g = strict_float(pred), strict_float(sample.answer)
    if p is not None and g is not None:
        return Score(abs(p - g) < 1e-6, pred, "ok", "numeric")
    correct, layer = verifier(sample, pred)
    return Score(correct, pred, "ok", layer)


def _mathvision(name: str, split: str, label: str) -> Benchmark:
    return Benchmark(
        name=name,
        label=label,
        group="math",
        convert=_mathvision_convert,
        hub_id="MathLLMs/MathVision",
        splits=(split,),
        official=_mathvision_official,
        breakdowns=("subject", "level"),
        notes=f"{split}; accuracy by subject and level; official is_equal (string, numeric 1e-6, symbolic)",
    )


MATHVISION = _mathvision("mathvision", "test", "MathVision")
MATHVISION_MINI = _mathvision("mathvision_mini", "testmini", "MathVision-mini")


# ---------------------------------------------------------------------------------------------------------------
# MMK12 (FanqingM/MMK12, test): short answers in maths, physics, chemistry, biology.


def _mmk12_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    uid = str(row.get("id") if row.get("id") not in (None, "") else f"row{ctx.index}")
    return Sample(
        uid=uid,
        problem=str(require(row, "question")),
        answer=str(require(row, "answer")),
        images=image_refs(row, "image", "images"),
        source="mmk12",
        category=str(row.get("subject") or ""),
        meta={"subject": row.get("subject")},
    )


MMK12 = Benchmark(
    name="mmk12",
    label="MMK12",
    group="math",
    convert=_mmk12_convert,
    hub_id="FanqingM/MMK12",
    splits=("test",),
    breakdowns=("subject",),
    notes="test (2,000; unverified); accuracy by subject; verifier under both protocols",
)


# ---------------------------------------------------------------------------------------------------------------
# LogicVista: golds may name several letters ("A, C"); a hit needs the same letter SET.


# The hub copy (lscpku/LogicVista) labels items with `broad_capability` / `specific_capability`; VLMEvalKit's TSV
# with `skill` / `capability`. Each column present becomes a breakdown of the same name.
CAPABILITY_COLUMNS = ("broad_capability", "specific_capability", "skill", "capability")


def _logicvista_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    uid = str(next((row[k] for k in ("question_id", "id", "index") if row.get(k) not in (None, "")),
                   f"row{ctx.index}"))
    answer = str(require(row, "answer"))
    gold = gold_letters(answer, None, allow_compact=True)
    if not gold:
        raise SkipRow(f"LogicVista {uid}: answer {answer!r} names no option letter")
    return Sample(
        uid=uid,
        problem=str(require(row, "question")),
        answer=", ".join(sorted(gold)),
        answer_raw=answer,
        images=image_refs(row, "image", "images", "imagename"),
        answer_type="mcq_multi" if len(gold) > 1 else "mcq_letter",
        source="logicvista",
        meta={**{k: row.get(k) for k in CAPABILITY_COLUMNS if row.get(k) not in (None, "")},
              "num_gold_letters": len(gold)},
    )


def _logicvista_official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    found = letters(pred, 0, multi=True)
    return Score(found is not None and found == gold_letters(sample.answer, None, allow_compact=True), pred, "ok",
                 "letter_set",
                 {"letters": sorted(found) if found else None})


def _logicvista_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = accuracy_metrics(records, CAPABILITY_COLUMNS)
    for key in CAPABILITY_COLUMNS:  # only the labelling the data has
        if not out[f"by_{key}"]:
            del out[f"by_{key}"]
    multi = [r for r in records if (r.sample.get("meta") or {}).get("num_gold_letters", 1) > 1]
    out["multi_letter_items"] = len(multi)
    out["multi_letter_accuracy"] = sum(r.correct for r in multi) / len(multi) if multi else None
    return out


LOGICVISTA = Benchmark(
    name="logicvista",
    label="LogicVista",
    group="math",
    convert=_logicvista_convert,
    hub_id="lscpku/LogicVista",
    splits=("test",),
    official=_logicvista_official,
    aggregate=_logicvista_metrics,
    notes="test (~448; unverified); letter-SET match for multi-letter golds; accuracy by broad_capability and "
    "specific_capability (hub copy) or skill and capability (VLMEvalKit TSV)",
)
