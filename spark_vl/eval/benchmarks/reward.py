"""Reward benchmarks: the model judges a pair of responses with a per-benchmark judge template.

VL-RewardBench (MMInstruction/VL-RewardBench, test, 1,250): `human_ranking` [0, 1] means the first response
is preferred. The pair is shown in swapped order when the two responses' lengths (characters) sum to an odd
number — the deterministic parity rule of the public harnesses. The verdict is read from "Overall Judgment:
Answer X is better". Reported: overall (micro) accuracy, macro accuracy over the general / hallucination /
reasoning domains, per-domain and per-source accuracy, and `math_accuracy` on the MathVerse-sourced items
(our reading of SPARK's "VL-RB-Math"; SPARK does not define it).

Multimodal RewardBench (ID, Text, Image, Output1, Output2, Better, Category): shown as A = Output1,
B = Output2; verdict "[[A]]"/"[[B]]" (the last one in the response). Reported: overall (micro) accuracy and
per category, safety split into bias/toxicity and reasoning into math/coding by ID prefix.

A response without a readable verdict is scored wrong (no random guess in the headline); the count and
`random_fallback_accuracy` (as if such items were guessed) are reported. With `reward_both_orders` every
item is also judged in the flipped order: `accuracy_flipped` and `position_consistency` (same underlying
response chosen in both orders) are added; the headline stays the single-order number.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spark_vl.data.prompts import load_template
from spark_vl.data.rows import RowContext, SkipRow, image_refs, require
from spark_vl.eval.benchmarks.base import Benchmark, breakdown, mean
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import Score, parse_bracket_verdict, parse_numbered_verdict
from spark_vl.types import Sample

FLIPPED_SUFFIX = "#flipped"


def render_judge(sample: Sample, protocol: EvalProtocol) -> str:
    """Fill the benchmark's judge template (slots replaced literally: responses may contain braces)."""
    template = load_template(sample.meta["template"], kind="eval")
    first, second = sample.meta["responses"]
    return (
        template.replace("{question}", sample.problem.strip())
        .replace("{answer_1}", first.strip())
        .replace("{answer_2}", second.strip())
    )


def flip(sample: Sample) -> Sample:
    """The same pair in the other order, with the gold position flipped."""
    meta = dict(sample.meta)
    meta["responses"] = list(reversed(meta["responses"]))
    meta["swapped"] = not meta["swapped"]
    meta["flipped"] = True
    labels = meta["labels"]
    answer = labels[1] if sample.answer == labels[0] else labels[0]
    return dataclasses.replace(sample, uid=sample.uid + FLIPPED_SUFFIX, answer=answer, meta=meta)


def _score(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    labels = sample.meta["labels"]
    if sample.meta["template"] == "vl_rewardbench":
        number = parse_numbered_verdict(response)
        verdict = labels[number - 1] if number in (1, 2) else None
    else:
        verdict = parse_bracket_verdict(response)
    if verdict is None:
        return Score(False, None, "no_answer", "verdict", {"random_guess_p": 0.5})
    position = labels.index(verdict)
    chosen_original = 1 - position if sample.meta["swapped"] else position
    extra = {"chosen_position": position, "chosen_original": chosen_original}
    return Score(verdict == sample.answer, verdict, "ok", "verdict", extra)


def _pair_metrics(records: list[ItemRecord], category_key: str) -> dict[str, Any]:
    main = [r for r in records if not r.uid.endswith(FLIPPED_SUFFIX)]
    flipped = {r.uid[: -len(FLIPPED_SUFFIX)]: r for r in records if r.uid.endswith(FLIPPED_SUFFIX)}
    n = len(main)
    correct = sum(r.correct for r in main)
    failures = [r for r in main if r.status == "no_answer"]
    by_category = breakdown(main, category_key)
    out: dict[str, Any] = {
        "accuracy": correct / n if n else None,
        "num_items": n,
        "num_correct": correct,
        "no_answer": len(failures),
        "parse_failure_rate": len(failures) / n if n else None,
        "random_fallback_accuracy": (correct + 0.5 * len(failures)) / n if n else None,
        "image_errors": sum(r.status == "image_error" for r in main),
        "generation_errors": sum(r.status == "generation_error" for r in main),
        f"by_{category_key}": by_category,
        "by_source": breakdown(main, "source_name"),
        "position_rate_first": mean(r.extra.get("chosen_position") == 0 for r in main if r.status == "ok"),
    }
    if flipped:
        pairs = [(r, flipped[r.uid]) for r in main if r.uid in flipped]
        both = [(a, b) for a, b in pairs if a.status == "ok" and b.status == "ok"]
        out["accuracy_flipped"] = mean(b.correct for _, b in pairs)
        out["position_consistency"] = mean(
            a.extra.get("chosen_original") == b.extra.get("chosen_original") for a, b in both
        )
    out["problems"] = [{"uid": r.uid, "status": r.status, "error": r.error} for r in records if r.status != "ok"]
    return out


# ---------------------------------------------------------------------------------------------------------------
# VL-RewardBench

_VLRB_DOMAINS = {
    "mathverse": "reasoning",
    "mmmu": "reasoning",
    "hallucination": "hallucination",
    "povid": "hallucination",
    "rlhf": "hallucination",
    "rlaif": "hallucination",
    "wildvision": "general",
    "vlfeedback": "general",
}


def vlrb_domain(item_id: str, query_source: str | None) -> tuple[str, str]:
    """(domain, source tag) from the id prefix ("mathverse_..." / "RLAIF-V-..."), else the query_source."""
    for text in (item_id, query_source or ""):
        tag = text.split("-")[0].split("_")[0].lower()
        if tag in _VLRB_DOMAINS:
            return _VLRB_DOMAINS[tag], tag
    return "general", (query_source or item_id.split("-")[0].split("_")[0]).lower()


def _vlrb_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    rid = str(require(row, "id"))
    responses = row.get("response")
    ranking = row.get("human_ranking")
    if not isinstance(responses, list | tuple) or len(responses) != 2:
        raise SkipRow(f"VL-RewardBench {rid}: `response` must hold 2 responses, got {str(responses)[:80]!r}")
    if not isinstance(ranking, list | tuple) or sorted(ranking) != [0, 1]:
        raise SkipRow(f"VL-RewardBench {rid}: `human_ranking` must be [0, 1] or [1, 0], got {ranking!r}")
    first, second = str(responses[0]), str(responses[1])
    preferred = list(ranking).index(0)
    swapped = (len(first) + len(second)) % 2 == 1
    shown = [second, first] if swapped else [first, second]
    gold_position = 1 - preferred if swapped else preferred
    domain, tag = vlrb_domain(rid, row.get("query_source"))
    labels = ["1", "2"]
    return Sample(
        uid=rid,
        problem=str(require(row, "query")),
        answer=labels[gold_position],
        images=image_refs(row, "image"),
        answer_type="ab",
        source="vl_rewardbench",
        category=domain,
        meta={"template": "vl_rewardbench", "responses": shown, "labels": labels, "swapped": swapped,
              "flipped": False, "domain": domain, "source_name": tag, "query_source": row.get("query_source")},
    )


def _vlrb_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = _pair_metrics(records, "domain")
    domains = out["by_domain"]
    out["macro_accuracy"] = mean(d["accuracy"] for d in domains.values())
    out["math_accuracy"] = out["by_source"].get("mathverse", {}).get("accuracy")
    return out


VL_REWARDBENCH = Benchmark(
    name="vl_rewardbench",
    label="VL-RB",
    group="reward",
    convert=_vlrb_convert,
    hub_id="MMInstruction/VL-RewardBench",
    splits=("test",),
    scorer=_score,
    flip=flip,
    aggregate=_vlrb_metrics,
    render=render_judge,
    columns=lambda p: [("VL-RB", "accuracy"), ("VL-RB-Math", "math_accuracy")],
    tts=False,
    notes="test (1,250); length-parity order swap; overall (micro, headline) + macro over 3 domains + "
    "MathVerse-sourced subset (VL-RB-Math, inferred definition); verdict 'Answer X is better', no random fallback",
)


# ---------------------------------------------------------------------------------------------------------------
# Multimodal RewardBench


def mmrb_category(category: str, item_id: str) -> str:
    low = item_id.lower()
    if category == "safety":
        return "safety/bias" if low.startswith("pairs") else "safety/toxicity"
    if category == "reasoning":
        return "reasoning/math" if low.startswith("math") else "reasoning/coding"
    return category


def _mmrb_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    rid = str(require(row, "ID"))
    better = str(require(row, "Better")).strip()
    if better not in ("Output1", "Output2"):
        raise SkipRow(f"Multimodal RewardBench {rid}: `Better` must be Output1 or Output2, got {better!r}")
    category = mmrb_category(str(row.get("Category") or ""), rid)
    labels = ["A", "B"]
    return Sample(
        uid=rid,
        problem=str(require(row, "Text")),
        answer="A" if better == "Output1" else "B",
        images=image_refs(row, "Image", "image"),
        answer_type="ab",
        source="mm_rewardbench",
        category=category,
        meta={"template": "mm_rewardbench", "labels": labels,
              "responses": [str(row.get("Output1") or ""), str(row.get("Output2") or "")],
              "swapped": False, "flipped": False, "category": category,
              "top_category": category.split("/")[0], "source_name": category.split("/")[0]},
    )


def _mmrb_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = _pair_metrics(records, "category")
    main = [r for r in records if not r.uid.endswith(FLIPPED_SUFFIX)]
    out["by_top_category"] = breakdown(main, "top_category")
    out["macro_accuracy"] = mean(d["accuracy"] for d in out["by_category"].values())
    del out["by_source"]
    return out


MM_REWARDBENCH = Benchmark(
    name="mm_rewardbench",
    label="MM-RB",
    group="reward",
    convert=_mmrb_convert,
    hub_id="syhuggingface/multimodal_rewardbench",
    splits=("test",),
    scorer=_score,
    flip=flip,
    aggregate=_mmrb_metrics,
    render=render_judge,
    tts=False,
    notes="5,211 pairs; A = Output1, B = Output2; verdict [[A]]/[[B]]; overall (micro, headline) + per category "
    "(safety/bias|toxicity, reasoning/math|coding by ID prefix); no random fallback in the headline",
)

