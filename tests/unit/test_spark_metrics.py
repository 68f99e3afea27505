"""Judge metrics: accuracy split pointwise/pairwise, yes-rate and A-rate, fix rate, ECE against hand values."""

from __future__ import annotations

import math

import pytest

from spark_vl.spark.metrics import brier_score, expected_calibration_error, judge_metrics
from spark_vl.types import Prompt, RewardOutput, Rollout, RolloutGroup, Sample


def aux(kind: str, label: str, **meta) -> Prompt:
    sample = Sample(uid="x", problem="q", answer=label)
    return Prompt(uid=f"{kind}-{label}-{len(meta)}", messages=[], images=[], sample=sample, kind=kind, meta=meta)


def grp(prompt: Prompt, texts_correct: list[tuple[str, bool]]) -> RolloutGroup:
    rollouts = [
        Rollout(prompt=prompt, token_ids=[], text=t, reward=RewardOutput(float(c), {"accuracy": float(c)}))
        for t, c in texts_correct
    ]
    return RolloutGroup(prompt=prompt, rollouts=rollouts)


def test_ece_hand_values():
    # bins of width 0.5: [0.1, 0.2] -> conf 0.15, acc 0.5 ; [0.8, 1.0] -> conf 0.9, acc 1.0
    probs, labels = [0.1, 0.2, 0.8, 1.0], [0, 1, 1, 1]
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.1)
    assert expected_calibration_error([1.0, 0.0], [1, 0], bins=10) == 0.0
    assert expected_calibration_error([0.5] * 4, [1, 1, 0, 0]) == 0.0
    assert math.isnan(expected_calibration_error([], []))
    assert brier_score([1.0, 0.5], [1, 0]) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [1, 0])
    with pytest.raises(ValueError):
        expected_calibration_error([1.5], [1])


def test_judge_metrics_split_and_rates():
    yes = aux("judge", "Yes", judge_form="pointwise", verdict_kind="yes_no", shown_correct=True)
    no = aux("judge", "No", judge_form="pointwise", verdict_kind="yes_no", shown_correct=False)
    ab = aux("judge", "B", judge_form="pointwise", verdict_kind="ab", shown_correct=False)
    pair = aux("judge", "B", judge_form="pairwise", verdict_kind="ab", correct_position="B")
    fix_cot = aux("reflect", "5", reflect_mode="cot", shown_correct=False)
    fix_ans = aux("reflect", "5", reflect_mode="answer", shown_correct=False)
    keep = aux("reflect", "5", reflect_mode="answer", shown_correct=True)
    policy = Prompt(uid="p", messages=[], images=[], sample=Sample(uid="p", problem="q", answer="5"))
    groups = [
        grp(yes, [("\\boxed{Yes}", True), ("\\boxed{Yes}", True), ("\\boxed{No}", False), ("hmm", False)]),
        grp(no, [("\\boxed{Yes}", False), ("\\box{no}", True)]),
        grp(ab, [("\\boxed{A}", False), ("\\boxed{(B)}", True)]),
        grp(pair, [("\\boxed{A}", False), ("\\boxed{A}", False), ("\\boxed{B}", True), ("??", False)]),
        grp(fix_cot, [("\\boxed{5}", True), ("\\boxed{4}", False)]),
        grp(fix_ans, [("\\boxed{5}", True), ("\\boxed{5}", True)]),
        grp(keep, [("\\boxed{5}", True), ("\\boxed{4}", False), ("\\boxed{4}", False), ("\\boxed{4}", False)]),
        grp(policy, [("\\boxed{5}", True)]),
    ]
    m = judge_metrics(groups)
    assert (m.pointwise_prompts, m.pointwise_rollouts, m.pairwise_prompts, m.reflect_prompts) == (3, 8, 1, 3)
    assert m.pointwise_accuracy == pytest.approx(4 / 8)
    assert m.pointwise_yes_no_accuracy == pytest.approx(3 / 6) and m.pointwise_ab_accuracy == pytest.approx(1 / 2)
    assert m.pointwise_parse_rate == pytest.approx(7 / 8)
    assert m.pointwise_yes_rate == pytest.approx(4 / 7)  # Yes, Yes, Yes (on `no`), A
    assert m.pointwise_label_yes_rate == pytest.approx(4 / 8)
    assert m.pointwise_tpr == pytest.approx(2 / 3) and m.pointwise_tnr == pytest.approx(2 / 4)
    # per-prompt P(Yes) from sampled verdicts: yes 2/3 (label 1), no 1/2 (label 0), ab 1/2 (label 0)
    assert m.pointwise_ece == pytest.approx(expected_calibration_error([2 / 3, 0.5, 0.5], [1, 0, 0]))
    assert m.pairwise_accuracy == pytest.approx(1 / 4) and m.pairwise_parse_rate == pytest.approx(3 / 4)
    assert m.pairwise_a_rate == pytest.approx(2 / 3) and m.pairwise_label_a_rate == 0.0
    assert m.reflect_fix_rate == pytest.approx(3 / 4)
    assert m.reflect_cot_fix_rate == pytest.approx(1 / 2) and m.reflect_answer_fix_rate == 1.0
    assert m.reflect_keep_rate == pytest.approx(1 / 4)
    d = m.as_dict()
    assert d["spark/judge/pairwise_a_rate"] == pytest.approx(2 / 3) and all(v is not None for v in d.values())
    supplied = judge_metrics(groups, p_yes={yes.uid: 0.9, no.uid: 0.2})
    assert supplied.pointwise_ece == pytest.approx(expected_calibration_error([0.9, 0.2], [1, 0]))


def test_empty_metrics_have_no_values():
    m = judge_metrics([])
    assert m.pointwise_accuracy is None and m.as_dict() == {
        "spark/judge/pointwise_prompts": 0, "spark/judge/pointwise_rollouts": 0, "spark/judge/pairwise_prompts": 0,
        "spark/judge/pairwise_rollouts": 0, "spark/judge/reflect_prompts": 0, "spark/judge/reflect_rollouts": 0,
    }


def test_verdict_separation_by_hand():
    from spark_vl.spark.metrics import verdict_separation

    # high: 0.9 right, 0.4 wrong side; low: 0.2 right, 0.4 right, 0.9 wrong side -> 3 of 5 on the right side.
    # pairs (high > low): 0.9 beats 0.2, 0.4; ties 0.9 = 0.9 (1/2); 0.4 beats 0.2, ties 0.4 (1/2) -> 4 of 6.
    assert verdict_separation([0.9, 0.4], [0.2, 0.4, 0.9]) == (3 / 5, 4 / 6)
    with pytest.raises(ValueError):
        verdict_separation([], [0.1])
