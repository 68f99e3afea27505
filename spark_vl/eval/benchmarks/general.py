"""General multimodal adapters: MMMU (validation, up to 7 interleaved images) and MMStar.

MMMU questions and options carry `<image k>` placeholders. The images are passed in the order of their
first mention, each first mention becomes an image part at its position, and a repeated mention is kept
as the text "[image k]" (one picture, one image part). `options` is a string holding a Python list and is
read with `ast.literal_eval`, never `json`.

MMMU's official parser guesses a random option when it finds none. spark-vl scores such an item wrong and
reports `random_fallback_accuracy` (accuracy plus the expected value of the guess) separately.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from spark_vl.data.rows import RowContext, SkipRow, image_refs, require
from spark_vl.eval.benchmarks.base import Benchmark, accuracy_metrics
from spark_vl.eval.benchmarks.visual_math import options_block
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import Score, all_floats, extract, letters, norm_text
from spark_vl.rewards.choices import LETTERS, gold_letters
from spark_vl.types import Sample

_MMMU_IMAGE_RE = re.compile(r"<image\s*(\d+)>")


def interleave_images(text: str, row: dict[str, Any]) -> tuple[str, list[Any]]:
    """Renumber `<image k>` mentions: first mentions stay placeholders (in order), repeats become text."""
    order: list[str] = []

    def replace(m: re.Match) -> str:
        k = m.group(1)
        if k in order:
            return f"[image {k}]"
        order.append(k)
        return f"<image {len(order)}>"

    text = _MMMU_IMAGE_RE.sub(replace, text)
    if not order:  # no placeholder: every image column that is present, shown before the text
        return text, [row[f"image_{k}"] for k in range(1, 8) if row.get(f"image_{k}") not in (None, "")]
    # A placeholder whose column is empty keeps a None reference: the item is reported as an image error.
    return text, [row.get(f"image_{k}") for k in order]


def _mmmu_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    uid = str(require(row, "id"))
    raw_options = row.get("options") or "[]"
    try:
        options = ast.literal_eval(raw_options) if isinstance(raw_options, str) else list(raw_options)
    except (ValueError, SyntaxError) as err:
        raise SkipRow(f"MMMU {uid}: options {str(raw_options)[:80]!r} is not a Python list literal: {err}") from None
    options = [str(o) for o in options]
    qtype = str(row.get("question_type") or ("multiple-choice" if options else "open"))
    text = str(require(row, "question"))
    if options and qtype == "multiple-choice":
        text += "\n" + options_block(options)
    text, images = interleave_images(text, row)
    parts = uid.split("_")
    subject = "_".join(parts[1:-1]) if len(parts) >= 3 else ""
    return Sample(
        uid=uid,
        problem=text,
        answer=str(require(row, "answer")),
        images=images,
        choices=options if qtype == "multiple-choice" and options else None,
        answer_type="mcq_letter" if qtype == "multiple-choice" and options else None,
        source="mmmu",
        category=subject,
        meta={"subject": subject, "subfield": row.get("subfield"), "question_type": qtype,
              "img_type": row.get("img_type"), "topic_difficulty": row.get("topic_difficulty")},
    )


def mmmu_choice(text: str, choices: list[str]) -> str | None:
    """The option the text picks: "(B)", a lone letter "B"/"B.", or an option's text; the LAST mention wins."""
    allowed = LETTERS[: len(choices)]
    padded = f" {text} "
    hits: list[tuple[int, str]] = []
    for letter in allowed:
        for m in re.finditer(rf"\(\s*{letter}\s*\)|(?<![A-Za-z]){letter}(?=[\s.,:;)]|$)", padded):
            hits.append((m.start(), letter))
    if not hits:
        low = padded.lower()
        for i, option in enumerate(choices):
            key = option.strip().lower()
            if len(key) > 0 and key in low:
                hits.append((low.rfind(key), allowed[i]))
    return max(hits)[1] if hits else None


def _mmmu_open_golds(answer: str) -> list[str]:
    try:
        value = ast.literal_eval(answer)
    except (ValueError, SyntaxError):
        return [answer]
    return [str(v) for v in value] if isinstance(value, list) else [answer]


def _mmmu_official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    pred = extract(response, protocol)
    if sample.choices:
        picked = mmmu_choice(pred if pred is not None else (response or ""), sample.choices)
        if picked is None:
            return Score(False, pred, "no_answer", "mmmu_choice", {"random_guess_p": 1 / len(sample.choices)})
        return Score(picked == sample.answer.strip().upper(), pred, "ok", "mmmu_choice", {"picked": picked})
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    numbers = [round(v, 2) for v in all_floats(pred)]
    text = norm_text(pred)
    for gold in _mmmu_open_golds(sample.answer):
        values = all_floats(gold)
        if len(values) == 1 and norm_text(gold).replace(",", "").lstrip("-").replace(".", "", 1).isdigit():
            if round(values[0], 2) in numbers:
                return Score(True, pred, "ok", "mmmu_open_number")
        elif norm_text(gold) and norm_text(gold) in text:
            return Score(True, pred, "ok", "mmmu_open_string")
    return Score(False, pred, "ok", "mmmu_open")


def _mmmu_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = accuracy_metrics(records, ("subject", "subfield", "question_type", "img_type", "topic_difficulty"))
    n = len(records)
    guess = sum(float(r.extra.get("random_guess_p", 0.0)) for r in records if r.status == "no_answer")
    out["random_fallback_accuracy"] = (out["num_correct"] + guess) / n if n else None
    return out


MMMU = Benchmark(
    name="mmmu",
    label="MMMU",
    group="general",
    convert=_mmmu_convert,
    hub_id="lmms-lab/MMMU",
    splits=("validation",),
    official=_mmmu_official,
    aggregate=_mmmu_metrics,
    notes="validation (900), multi-image; official: MMMU-style option/candidate parsing without the random guess "
    "(expected value of the guess reported as random_fallback_accuracy); by subject/subfield",
)


# ---------------------------------------------------------------------------------------------------------------
# MMStar (Lin-Chen/MMStar, val): 4-way MCQ, options inline in the question.


def _mmstar_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    uid = str(row.get("index") if row.get("index") not in (None, "") else f"row{ctx.index}")
    meta_info = row.get("meta_info") or {}
    return Sample(
        uid=uid,
        problem=str(require(row, "question")),
        answer=str(require(row, "answer")).strip(),
        images=image_refs(row, "image"),
        answer_type="mcq_letter",
        source="mmstar",
        category=str(row.get("category") or ""),
        meta={"category": row.get("category"), "l2_category": row.get("l2_category"),
              "origin": meta_info.get("source") if isinstance(meta_info, dict) else None},
    )


def _mmstar_official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    found = letters(pred, 0)
    return Score(found is not None and found == gold_letters(sample.answer, None), pred, "ok", "letter")


MMSTAR = Benchmark(
    name="mmstar",
    label="MMStar",
    group="general",
    convert=_mmstar_convert,
    hub_id="Lin-Chen/MMStar",
    splits=("val",),
    official=_mmstar_official,
    breakdowns=("category", "l2_category"),
    notes="val (1,500); letter accuracy by category and l2_category (exact matching, no GPT/random fallback)",
)
