from functools import partial

import pytest

from spark_vl.config import RewardConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.rewards import score_groups
from spark_vl.spark import judge_score
from spark_vl.types import Rollout, RolloutGroup


def group(sample, texts):
    prompt = build_prompt(sample)
    return RolloutGroup(prompt, [Rollout(prompt, [1], t) for t in texts])


def test_judge_weight_rewards_goldless_rows_with_own_p_yes(tiny_qwen25):
    model, processor = tiny_qwen25
    gold, goldless = synthetic_samples(2, seed=11)
    goldless.answer = ""
    groups = [group(gold, [f"\\boxed{{{gold.answer}}}", "\\boxed{zzz}"]),
              group(goldless, ["it is \\boxed{red}", "no final answer here"])]
    score_groups(groups, RewardConfig(judge_weight=0.5), partial(judge_score, model, processor))
    assert [r.reward.parts["accuracy"] for r in groups[0].rollouts] == [1.0, 0.0]
    expected = judge_score(model, processor, [groups[1].prompt], ["red"])[0]
    judged, unanswered = groups[1].rollouts
    assert judged.reward.parts["judge"] == pytest.approx(expected, abs=1e-6)
    assert judged.reward.overall == pytest.approx(0.5 * expected, abs=1e-6)
    assert unanswered.reward.overall == 0.0


def test_without_judge_weight_goldless_rows_score_zero():
    sample = synthetic_samples(1, seed=12)[0]
    sample.answer = ""
    groups = [group(sample, ["\\boxed{red}"])]
    score_groups(groups, RewardConfig())
    assert groups[0].rollouts[0].reward.overall == 0.0
