"""rewards.score_groups: one reward path for a training step (custom rewards through score_batch, injected judge)."""

from __future__ import annotations

import pytest

from spark_vl.config import RewardConfig
from spark_vl.rewards import score_groups
from spark_vl.types import Prompt, RewardOutput, Rollout, RolloutGroup, Sample

CALLS: list[str] = []


def tagged_reward(response, sample, cfg):
    CALLS.append(response)
    return RewardOutput(0.25, {"custom": 1.0}, response) if response == "out" else 0.75


def group(answer: str, texts: list[str]) -> RolloutGroup:
    sample = Sample(uid=f"s{answer}", problem="q", answer=answer)
    prompt = Prompt(uid=f"p{answer}", messages=[], images=[], sample=sample)
    return RolloutGroup(prompt, [Rollout(prompt, [1], t) for t in texts])


def test_math_reward_and_goldless_rows_without_judge_weight():
    groups = [group("3", ["\\boxed{3}", "\\boxed{4}"]), group("", ["\\boxed{red}"])]
    score_groups(groups, RewardConfig())
    assert [r.reward.parts["accuracy"] for r in groups[0].rollouts] == [1.0, 0.0]
    assert groups[1].rollouts[0].reward == RewardOutput(0.0, {"accuracy": 0.0}, None)


def test_custom_reward_goes_through_score_batch():
    CALLS.clear()
    groups = [group("3", ["out", "other"])]
    score_groups(groups, RewardConfig(name=f"{__name__}:tagged_reward"))
    assert CALLS == ["out", "other"]
    assert groups[0].rollouts[0].reward == RewardOutput(0.25, {"custom": 1.0}, "out")
    assert groups[0].rollouts[1].reward == RewardOutput(0.75, {"accuracy": 0.75}, None)


def test_bad_reward_name_fails_with_the_plugin_error():
    with pytest.raises(ValueError, match="reward 'nope'"):
        score_groups([group("3", ["x"])], RewardConfig(name="nope"))


def test_injected_judge_scores_goldless_final_answers():
    seen = []

    def judge(prompts, answers):
        seen.append(list(answers))
        return [0.8] * len(answers)

    groups = [group("3", ["\\boxed{3}"]), group("", ["it is \\boxed{red}", "no final answer"])]
    score_groups(groups, RewardConfig(judge_weight=0.5), judge)
    assert seen == [["red"]]  # only a real final answer is judged; gold rows never are
    judged, unanswered = groups[1].rollouts
    assert judged.reward == RewardOutput(pytest.approx(0.4), {"judge": 0.8}, "red")
    assert unanswered.reward == RewardOutput(0.0, {"judge": 0.0}, None)


def test_judge_all_runs_a_discarded_forward_when_nothing_needs_judging():
    seen = []

    def judge(prompts, answers):
        seen.append(len(prompts))
        return [0.9] * len(prompts)

    groups = [group("3", ["\\boxed{3}"])]
    score_groups(groups, RewardConfig(judge_weight=0.5), judge)
    assert seen == []  # nothing to judge, and not asked to join
    score_groups(groups, RewardConfig(judge_weight=0.5), judge, judge_all=True)
    assert seen == [0]  # ZeRO-3: called with nothing to judge, so that it joins the other ranks' passes
    assert groups[0].rollouts[0].reward.parts == {"accuracy": 1.0, "format": 1.0}


def test_judge_weight_without_a_judge_is_a_clear_error():
    with pytest.raises(ValueError, match="no judge callable"):
        score_groups([group("", ["\\boxed{red}"])], RewardConfig(judge_weight=0.5))
