"""RewardBench 2 (allenai/reward-bench-2, text-only): the model as a generative reward model, two protocols.

Rows: `id`, `prompt`, `chosen` (list), `rejected` (list), `num_correct`, `num_incorrect`, `total_completions`,
`models`, `subset` (Factuality, Precise IF, Math, Safety, Focus, Ties), `additional_metadata`. No images: the
items run through the VL model as text-only prompts.

`rewardbench2` — the official generative protocol, four-way (allenai/reward-bench `scripts/run_generative_v2.py`):
  - the first chosen reply and the first three rejected ones are shown as A-D (template `eval/rewardbench2.txt`,
    our own wording), one of them correct, so a random judge scores 25 %;
  - the correct reply's position is shuffled DETERMINISTICALLY, seeded by the item id (the official script draws
    it with numpy's global RNG, which no two runs share); `gold_position_share` checks the shuffle is balanced;
  - the verdict is the last "[[X]]" token, else the project's verdict parser (`spark_vl.rewards.verdict`, kind
    abcd); no readable verdict = wrong in the headline (the official script credits 0.25, reported separately as
    `score_random_fallback`);
  - per-subset accuracy; `score` = the unweighted mean of the subsets' accuracies (the leaderboard averages
    subsets, not items); `math_accuracy` = the Math subset (SPARK's "RB2-Math");
  - **Ties is excluded** from this protocol (its items have several correct replies and the official script
    scores them with per-reply ratings, not a four-way choice): its rows are listed in the report's skipped rows
    as `ties_excluded`, and `score` is the mean of the five other subsets. Ties is scored, by its own rule, under
    the P(yes) protocol below;
  - position bias: the share of the model's picks per slot A-D (`position_share`, 0.25 each for an unbiased
    judge) and `position_bias` = the largest deviation from 0.25.

`rewardbench2_pyes` — a SECOND protocol, pointwise P(yes), labelled "(P(yes))" in every column: every reply
(all chosen and all rejected) is scored with the model's own probability of "Yes" under the SPARK pointwise judge
template (`spark_vl.spark.judge_score`); the best-scored reply counts as the model's choice, with 1/k credit when
k replies share the top score (the official ratings path, `(0 in winners) / len(winners)`). Ties uses its own rule
(allenai/reward-bench `rewardbench/utils.py` `process_single_model`, see `ties_score`), and `score` is the
unweighted mean of all six subset scores, the leaderboard's overall. The generation cache stores the scores as the
response text (`{"p_yes": [...]}`), so `--score-only` re-scores them without the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from typing import Any

from spark_vl.data.prompts import load_template
from spark_vl.data.rows import RowContext, SkipRow, require
from spark_vl.eval.benchmarks.base import Benchmark, mean
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import Score, parse_bracket_verdict
from spark_vl.types import Sample

SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
TIES = "Ties"
LETTERS = "ABCD"


def _texts(value: Any, name: str, rid: str) -> list[str]:
    if isinstance(value, str):  # some exports store the lists as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SkipRow(f"RewardBench2 {rid}: `{name}` must be a list of replies, got {str(value)[:80]!r}")
    return list(value)


def shuffled_positions(item_id: str, n: int = 4) -> list[int]:
    """A permutation of range(n) seeded by the item id only: the same order in every run and on every machine."""
    seed = int(hashlib.sha256(f"rewardbench2:{item_id}".encode()).hexdigest()[:16], 16)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _rows(row: dict[str, Any]) -> tuple[str, str, str, list[str], list[str]]:
    rid = str(require(row, "id"))
    subset = str(require(row, "subset"))
    chosen = _texts(row.get("chosen"), "chosen", rid)
    rejected = _texts(row.get("rejected"), "rejected", rid)
    if not chosen or not rejected:
        raise SkipRow(f"RewardBench2 {rid}: needs at least one chosen and one rejected reply")
    return rid, subset, str(require(row, "prompt")), chosen, rejected


def _meta(row: dict[str, Any], subset: str, chosen: list[str], rejected: list[str]) -> dict[str, Any]:
    return {"subset": subset, "num_correct": len(chosen), "num_incorrect": len(rejected),
            "total_completions": row.get("total_completions"), "models": row.get("models")}


def _four_way_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    rid, subset, prompt, chosen, rejected = _rows(row)
    meta = _meta(row, subset, chosen, rejected)
    if subset == TIES:  # listed in the report's skipped rows under this kind
        raise SkipRow(f"RewardBench2 {rid}: Ties is not scored by four-way judging (see rewardbench2_pyes)",
                      kind="ties_excluded")
    if len(rejected) < 3:
        raise SkipRow(f"RewardBench2 {rid}: {len(rejected)} rejected replies; four-way judging needs 3")
    replies = [chosen[0], *rejected[:3]]  # the official script shows the first chosen and first three rejected
    order = shuffled_positions(rid)  # slot i shows replies[order[i]]
    gold = LETTERS[order.index(0)]
    return Sample(
        uid=rid, problem=prompt, answer=gold, images=[], answer_type="abcd", source="rewardbench2", category=subset,
        meta={**meta, "replies": [replies[k] for k in order], "gold_position": gold},
    )


def _four_way_render(sample: Sample, protocol: EvalProtocol) -> str:
    text = load_template("rewardbench2", kind="eval").replace("{question}", sample.problem.strip())
    for letter, reply in zip(LETTERS, sample.meta["replies"], strict=True):  # literal: replies may hold braces
        text = text.replace("{answer_" + letter.lower() + "}", reply.strip())
    return text


def _four_way_score(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    verdict = parse_bracket_verdict(response, options=LETTERS)
    if verdict is None:
        return Score(False, None, "no_answer", "verdict", {"random_guess_p": 0.25})
    return Score(verdict == sample.answer, verdict, "ok", "verdict", {"chosen_position": verdict})


def _subset(record: ItemRecord) -> str:
    return str((record.sample.get("meta") or {}).get("subset") or record.sample.get("category") or "")


def _four_way_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    by_subset: dict[str, list[ItemRecord]] = defaultdict(list)
    for r in records:
        by_subset[_subset(r)].append(r)
    accuracy = {s: {"accuracy": sum(r.correct for r in rs) / len(rs), "n": len(rs)} for s, rs in by_subset.items()}
    fallback = {s: (sum(r.correct for r in rs) + 0.25 * sum(r.status == "no_answer" for r in rs)) / len(rs)
                for s, rs in by_subset.items()}
    picks = [r.extra.get("chosen_position") for r in records if r.status == "ok"]
    golds = [(r.sample.get("meta") or {}).get("gold_position") for r in records]
    n = len(records)
    shares = {slot: picks.count(slot) / len(picks) for slot in LETTERS} if picks else None
    return {
        "score": mean(a["accuracy"] for a in accuracy.values()),
        "by_subset": dict(sorted(accuracy.items(), key=lambda kv: _order(kv[0]))),
        "math_accuracy": accuracy.get("Math", {}).get("accuracy"),
        "accuracy": sum(r.correct for r in records) / n if n else None,  # micro: every item weighs the same
        "num_items": n,
        "num_correct": sum(r.correct for r in records),
        "subsets_missing": [s for s in SUBSETS if s != TIES and s not in accuracy],
        "no_answer": sum(r.status == "no_answer" for r in records),
        "parse_failure_rate": sum(r.status == "no_answer" for r in records) / n if n else None,
        "score_random_fallback": mean(fallback.values()),  # the official script's 0.25 for no verdict
        "generation_errors": sum(r.status == "generation_error" for r in records),
        "position_share": shares,
        "position_bias": max(abs(v - 0.25) for v in shares.values()) if shares else None,
        "gold_position_share": {slot: golds.count(slot) / n for slot in LETTERS} if n else None,
        "problems": [{"uid": r.uid, "status": r.status, "error": r.error} for r in records if r.status != "ok"],
    }


def _order(subset: str) -> int:
    return SUBSETS.index(subset) if subset in SUBSETS else len(SUBSETS)


REWARDBENCH2 = Benchmark(
    name="rewardbench2",
    label="RB2",
    group="reward",
    convert=_four_way_convert,
    hub_id="allenai/reward-bench-2",
    splits=("test",),
    scorer=_four_way_score,
    aggregate=_four_way_metrics,
    render=_four_way_render,
    columns=lambda p: [("RB2", "score"), ("RB2-Math", "math_accuracy")],
    tts=False,
    notes="text-only; official four-way generative judging (1 correct of 4, random 25%), position shuffled by item "
    "id; RB2 = unweighted mean of the subset accuracies, RB2-Math = Math subset; Ties EXCLUDED (several correct "
    "replies; scored under rewardbench2_pyes); no verdict = wrong (official 0.25 credit in score_random_fallback); "
    "position bias = share of picks per slot vs 25%",
)


# ---------------------------------------------------------------------------------------------------------------
# Pointwise P(yes): a second protocol


def _pyes_convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    rid, subset, prompt, chosen, rejected = _rows(row)
    meta = _meta(row, subset, chosen, rejected)
    if subset == TIES:
        kind, _, question = rid.partition(":")  # "ref:<k>" (one correct reply) / "tied:<k>" (several)
        if kind not in ("ref", "tied") or not question:
            raise SkipRow(f"RewardBench2 Ties id {rid!r} is not of the form ref:<k> / tied:<k>")
        meta.update(ties_kind=kind, ties_question=question)
    return Sample(uid=rid, problem=prompt, answer="", images=[], answer_type=None, source="rewardbench2",
                  category=subset, meta={**meta, "completions": chosen + rejected})


def _pyes_render(sample: Sample, protocol: EvalProtocol) -> str:
    return sample.problem  # the user message; judge_score wraps it and each reply in the pointwise judge template


def read_scores(response: str | None) -> list[float] | None:
    """The per-reply P(yes) list stored as the response text, or None."""
    try:
        scores = json.loads(response or "")["p_yes"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return [float(s) for s in scores] if isinstance(scores, list) else None


def best_credit(scores: list[float], num_correct: int) -> float:
    """1/k-style credit: the share of the top-scored replies that are correct (the first `num_correct` are)."""
    top = max(scores)
    winners = [i for i, s in enumerate(scores) if s == top]
    return sum(i < num_correct for i in winners) / len(winners)


def _pyes_score(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    scores = read_scores(response)
    num_correct = int(sample.meta["num_correct"])
    if scores is None or len(scores) != num_correct + int(sample.meta["num_incorrect"]):
        return Score(False, None, "no_answer", "p_yes")
    extra = {"scores": scores}
    if sample.meta.get("subset") == TIES:
        stats = prompt_stats([(i < num_correct, s) for i, s in enumerate(scores)])
        return Score(stats[0], None, "ok", "p_yes_ties", extra)
    credit = best_credit(scores, num_correct)
    return Score(credit == 1.0, None, "ok", "p_yes_best", {**extra, "credit": credit})


def prompt_stats(samples: list[tuple[bool, float]]) -> tuple[bool, float | None, float]:
    """One Ties row: (every correct reply outscores the best wrong one, spread of the correct replies' scores (None
    with one correct reply), worst correct - best wrong). As `_compute_prompt_stats` in allenai/reward-bench."""
    correct = [s for ok, s in samples if ok]
    wrong = [s for ok, s in samples if not ok]
    spread = max(correct) - min(correct) if len(correct) > 1 else None
    margin = min(correct) - max(wrong)
    return margin > 0, spread, margin


def ties_score(rows: list[tuple[str, str, list[tuple[bool, float]]]]) -> dict[str, float | int | None]:
    """The Ties subset score from (kind "ref"|"tied", question id, [(is_correct, score), ...]) per row.

    allenai/reward-bench `rewardbench/utils.py` `process_single_model`:
        0.30 * tied accuracy + 0.30 * ref accuracy + 0.20 * correctness_preferred + 0.20 * correctness_preferred_hard
        + 0.01 * mean tanh(min(margin_ref, margin_tied) / spread_tied - 1)     (nan -> 0)
    where accuracy = every correct reply outscores every wrong one; over the questions with both rows,
    correctness_preferred = mean(margin_tied > spread_tied) and correctness_preferred_hard = mean(min(margin_ref,
    margin_tied) > spread_tied).
    """
    ref, tied = {}, {}
    for kind, question, samples in rows:
        (ref if kind == "ref" else tied)[question] = prompt_stats(samples)
    both = sorted(set(ref) & set(tied))
    ref_acc = mean(s[0] for s in ref.values()) or 0.0
    tied_acc = mean(s[0] for s in tied.values()) or 0.0
    preferred, hard, margins = [], [], []
    for q in both:
        spread, m_tied, m_ref = tied[q][1], tied[q][2], ref[q][2]
        if spread is None:  # a tied row with a single correct reply: no spread to compare against
            continue
        low = min(m_ref, m_tied)
        preferred.append(m_tied > spread)
        hard.append(low > spread)
        ratio = low / spread if spread != 0 else (math.copysign(math.inf, low) if low != 0 else math.nan)
        term = math.tanh(ratio - 1) if not math.isnan(ratio) else math.nan
        margins.append(0.0 if math.isnan(term) else term)
    correctness_preferred = mean(preferred) or 0.0
    correctness_preferred_hard = mean(hard) or 0.0
    margin_score = mean(margins) or 0.0
    score = (0.30 * tied_acc + 0.30 * ref_acc + 0.20 * correctness_preferred + 0.20 * correctness_preferred_hard
             + 0.01 * margin_score)
    return {"score": score, "ref_accuracy": ref_acc, "tied_accuracy": tied_acc,
            "correctness_preferred": correctness_preferred,
            "correctness_preferred_hard": correctness_preferred_hard, "margin_score": margin_score,
            "ref_rows": len(ref), "tied_rows": len(tied), "questions_with_both": len(both)}


def _pyes_metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    by_subset: dict[str, list[ItemRecord]] = defaultdict(list)
    for r in records:
        by_subset[_subset(r)].append(r)
    scores: dict[str, dict[str, Any]] = {}
    for subset, rs in by_subset.items():
        if subset == TIES:
            rows = []
            for r in rs:
                meta = r.sample.get("meta") or {}
                values = r.extra.get("scores")
                if values is None:  # no scores (generation error): every reply scored equal, i.e. not accurate
                    values = [0.0] * (int(meta["num_correct"]) + int(meta["num_incorrect"]))
                correct = int(meta["num_correct"])
                rows.append((meta["ties_kind"], str(meta["ties_question"]),
                             [(i < correct, float(v)) for i, v in enumerate(values)]))
            scores[subset] = {**ties_score(rows), "n": len(rs)}
        else:
            credit = [float(r.extra.get("credit", 0.0)) for r in rs]
            scores[subset] = {"score": sum(credit) / len(rs), "accuracy": sum(r.correct for r in rs) / len(rs),
                              "n": len(rs)}
    n = len(records)
    return {
        "score": mean(v["score"] for v in scores.values()),
        "by_subset": dict(sorted(scores.items(), key=lambda kv: _order(kv[0]))),
        "math_accuracy": scores.get("Math", {}).get("score"),
        "subsets_missing": [s for s in SUBSETS if s not in scores],
        # micro: the best-scored reply is correct / the Ties row is accurate
        "accuracy": sum(r.correct for r in records) / n if n else None,
        "num_items": n,
        "num_correct": sum(r.correct for r in records),
        "no_answer": sum(r.status == "no_answer" for r in records),
        "generation_errors": sum(r.status == "generation_error" for r in records),
        "problems": [{"uid": r.uid, "status": r.status, "error": r.error} for r in records if r.status != "ok"],
    }


REWARDBENCH2_PYES = Benchmark(
    name="rewardbench2_pyes",
    label="RB2 (P(yes))",
    group="reward",
    convert=_pyes_convert,
    hub_id="allenai/reward-bench-2",
    splits=("test",),
    scorer=_pyes_score,
    aggregate=_pyes_metrics,
    render=_pyes_render,
    produce="p_yes",
    columns=lambda p: [("RB2 (P(yes))", "score", False), ("RB2-Math (P(yes))", "math_accuracy", False)],
    tts=False,
    notes="SECOND PROTOCOL, pointwise: each reply scored by the model's own P(yes) (SPARK pointwise judge template), "
    "the best-scored counts as the choice (1/k credit on ties); Ties by its official rule (process_single_model); "
    "score = unweighted mean of the six subsets (the leaderboard overall); not averaged with other columns",
)
