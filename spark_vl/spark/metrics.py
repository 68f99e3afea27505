"""Judge-quality metrics of one auxiliary step, computed from the rolled-out and rewarded auxiliary groups.

    metrics = judge_metrics(aux_groups)            # groups of judge/reflect prompts with rewards
    logger.log(metrics.as_dict(), step)            # only the metrics that had data

Pointwise and pairwise prompts are reported separately:
  accuracy       share of rollouts the verifier scored correct against the label
  parse_rate     share of rollouts with a readable verdict (shared `parse_verdict`)
  yes_rate       share of readable pointwise verdicts that are positive (Yes, or A on A/B wording), next to
                 label_yes_rate, the share of pointwise rollouts whose label is positive; tpr / tnr are the
                 positive rate on correct answers and the negative rate on wrong answers
  a_rate         share of readable pairwise verdicts that pick A (position bias), next to label_a_rate
  ece / brier    calibration of P(Yes) on pointwise prompts: per prompt, the share of its readable verdicts that
                 are positive (or a probability supplied per uid, e.g. from `judge_score`), against the label
Reflection: fix_rate = share of rollouts on prompts showing a wrong rollout that reach the gold answer (also per
CoT/answer mode); keep_rate = the same on prompts showing a correct rollout (reflection_from_correct > 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from spark_vl.rewards.verdict import parse_verdict
from spark_vl.spark.templates import POSITIVE_VERDICT
from spark_vl.types import RolloutGroup


def expected_calibration_error(probs: Sequence[float], labels: Sequence[float | int | bool], bins: int = 10) -> float:
    """ECE with equal-width bins: sum_b |B_b|/N * |mean(label in B_b) - mean(prob in B_b)|.

    Probabilities lie in [0, 1] (p = 1 falls in the last bin); labels are 0/1. Returns NaN for no data.
    """
    if len(probs) != len(labels):
        raise ValueError(f"probs has {len(probs)} entries but labels has {len(labels)}")
    if bins <= 0:
        raise ValueError(f"bins={bins} must be positive")
    if not probs:
        return math.nan
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum of probs, sum of labels
    for p, y in zip(probs, labels, strict=True):
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability {p} is outside [0, 1]")
        b = totals[min(int(p * bins), bins - 1)]
        b[0] += 1
        b[1] += p
        b[2] += float(y)
    n = len(probs)
    return sum(c / n * abs(s_y / c - s_p / c) for c, s_p, s_y in totals if c)


def verdict_separation(high: Sequence[float], low: Sequence[float]) -> tuple[float, float]:
    """(accuracy, AUC) of scores that should be above 0.5 on `high` and below it on `low`: accuracy is the share of
    all scores on the right side of 0.5, AUC the probability that a `high` score beats a `low` one (ties 1/2)."""
    if not high or not low:
        raise ValueError("verdict_separation needs scores on both sides")
    accuracy = (sum(h > 0.5 for h in high) + sum(x < 0.5 for x in low)) / (len(high) + len(low))
    auc = sum((h > x) + 0.5 * (h == x) for h in high for x in low) / (len(high) * len(low))
    return accuracy, auc


def brier_score(probs: Sequence[float], labels: Sequence[float | int | bool]) -> float:
    """Mean squared difference between probability and 0/1 label (NaN for no data)."""
    if len(probs) != len(labels):
        raise ValueError(f"probs has {len(probs)} entries but labels has {len(labels)}")
    if not probs:
        return math.nan
    return sum((float(p) - float(y)) ** 2 for p, y in zip(probs, labels, strict=True)) / len(probs)


@dataclass
class JudgeMetrics:
    """One step's judge and reflection metrics; None = no data this step."""

    pointwise_prompts: int = 0
    pointwise_rollouts: int = 0
    pointwise_accuracy: float | None = None
    pointwise_yes_no_accuracy: float | None = None
    pointwise_ab_accuracy: float | None = None
    pointwise_parse_rate: float | None = None
    pointwise_yes_rate: float | None = None
    pointwise_label_yes_rate: float | None = None
    pointwise_tpr: float | None = None
    pointwise_tnr: float | None = None
    pointwise_ece: float | None = None
    pointwise_brier: float | None = None
    pairwise_prompts: int = 0
    pairwise_rollouts: int = 0
    pairwise_accuracy: float | None = None
    pairwise_parse_rate: float | None = None
    pairwise_a_rate: float | None = None
    pairwise_label_a_rate: float | None = None
    reflect_prompts: int = 0
    reflect_rollouts: int = 0
    reflect_fix_rate: float | None = None
    reflect_cot_fix_rate: float | None = None
    reflect_answer_fix_rate: float | None = None
    reflect_keep_rate: float | None = None

    def as_dict(self, prefix: str = "spark/judge/") -> dict[str, float]:
        """Flat metric names, leaving out the metrics without data."""
        return {prefix + k: v for k, v in asdict(self).items() if v is not None}


def _mean(values: Sequence[float | bool]) -> float | None:
    return sum(float(v) for v in values) / len(values) if values else None


def judge_metrics(
    groups: list[RolloutGroup],
    *,
    p_yes: Mapping[str, float] | None = None,
    bins: int = 10,
    verdict_mode: Literal["first", "last"] = "last",
) -> JudgeMetrics:
    """Metrics of rewarded auxiliary rollout groups (policy groups are ignored).

    Args:
        groups: groups of judge/reflect prompts from `recycle`, each rollout with its `reward`.
        p_yes: optional probability of the positive verdict per pointwise prompt uid (e.g. `judge_score`); when
            given, ECE and Brier use it instead of the share of positive sampled verdicts.
        bins: ECE bins.
        verdict_mode: which verdict counts when a response states several (as in the reward).
    """
    m = JudgeMetrics()
    pw_correct: list[bool] = []
    pw_by_kind: dict[str, list[bool]] = {"yes_no": [], "ab": []}
    pw_parsed: list[bool] = []
    pw_positive: list[bool] = []  # over readable verdicts
    pw_label_positive: list[bool] = []
    pos_on_correct: list[bool] = []
    neg_on_wrong: list[bool] = []
    probs: list[float] = []
    prob_labels: list[bool] = []
    pair_correct: list[bool] = []
    pair_parsed: list[bool] = []
    pair_a: list[bool] = []
    pair_label_a: list[bool] = []
    fix: dict[str, list[bool]] = {"cot": [], "answer": []}
    keep: list[bool] = []

    for group in groups:
        prompt = group.prompt
        correct = [r.reward is not None and r.reward.correct for r in group.rollouts]
        if prompt.kind == "reflect":
            m.reflect_prompts += 1
            m.reflect_rollouts += len(correct)
            if prompt.meta.get("shown_correct"):
                keep += correct
            else:
                fix.setdefault(prompt.meta.get("reflect_mode", "answer"), []).extend(correct)
            continue
        if prompt.kind != "judge":
            continue
        kind = prompt.meta.get("verdict_kind", "yes_no")
        verdicts = [parse_verdict(r.text, kind, mode=verdict_mode) for r in group.rollouts]
        readable = [v for v in verdicts if v is not None]
        if prompt.meta.get("judge_form") == "pairwise":
            m.pairwise_prompts += 1
            m.pairwise_rollouts += len(verdicts)
            pair_correct += correct
            pair_parsed += [v is not None for v in verdicts]
            pair_a += [v == "A" for v in readable]
            pair_label_a += [prompt.label == "A"] * len(verdicts)
            continue
        m.pointwise_prompts += 1
        m.pointwise_rollouts += len(verdicts)
        positive = POSITIVE_VERDICT.get(kind, "Yes")
        shown_correct = prompt.label == positive
        pw_correct += correct
        pw_by_kind.setdefault(kind, []).extend(correct)
        pw_parsed += [v is not None for v in verdicts]
        says_yes = [v == positive for v in readable]
        pw_positive += says_yes
        pw_label_positive += [shown_correct] * len(verdicts)
        (pos_on_correct if shown_correct else neg_on_wrong).extend(
            (v == positive) == shown_correct for v in readable
        )
        if p_yes is not None and prompt.uid in p_yes:
            probs.append(float(p_yes[prompt.uid]))
            prob_labels.append(shown_correct)
        elif p_yes is None and readable:
            probs.append(sum(says_yes) / len(says_yes))
            prob_labels.append(shown_correct)

    m.pointwise_accuracy = _mean(pw_correct)
    m.pointwise_yes_no_accuracy = _mean(pw_by_kind["yes_no"])
    m.pointwise_ab_accuracy = _mean(pw_by_kind["ab"])
    m.pointwise_parse_rate = _mean(pw_parsed)
    m.pointwise_yes_rate = _mean(pw_positive)
    m.pointwise_label_yes_rate = _mean(pw_label_positive)
    m.pointwise_tpr = _mean(pos_on_correct)
    m.pointwise_tnr = _mean(neg_on_wrong)
    if probs:
        m.pointwise_ece = expected_calibration_error(probs, prob_labels, bins)
        m.pointwise_brier = brier_score(probs, prob_labels)
    m.pairwise_accuracy = _mean(pair_correct)
    m.pairwise_parse_rate = _mean(pair_parsed)
    m.pairwise_a_rate = _mean(pair_a)
    m.pairwise_label_a_rate = _mean(pair_label_a)
    m.reflect_fix_rate = _mean(fix["cot"] + fix["answer"])
    m.reflect_cot_fix_rate = _mean(fix["cot"])
    m.reflect_answer_fix_rate = _mean(fix["answer"])
    m.reflect_keep_rate = _mean(keep)
    return m
