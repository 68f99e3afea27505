"""CHORD and the RewardDance-style judge reward on the tiny model, end to end.

CHORD: mu follows its schedule per optimizer step and the SFT share of the gradient shrinks. Judge: the rewards of
a run with a separate frozen judge carry its P(Yes), recomputed here from a fresh copy of that judge.
"""

import json
import math

import pytest

from spark_vl.algorithms.chord import chord_mu
from spark_vl.data.prompts import build_prompt
from spark_vl.models.tiny import build_tiny
from spark_vl.spark import judge_score, load_judge_template
from spark_vl.trainer.data import load_source
from spark_vl.trainer.loop import train

from ._train_utils import ScriptedEngine, fast_config, read_metrics


class HalfRightEngine(ScriptedEngine):
    """Scripted rollouts, half of each group right (ScriptedEngine's groups are all right or all wrong), so every
    group has a reward spread and the RL term a gradient."""

    def answer(self, prompt, k: int) -> str:
        gold = prompt.sample.answer
        return f"Let me look. \\boxed{{{gold if k % 2 == 0 else ('7' if gold != '7' else '8')}}}"


HALF_RIGHT = "rollout.backend=tests.integration.test_train_chord_judge:HalfRightEngine"


def test_chord_mu_follows_schedule_and_sft_share_shrinks(tmp_path):
    # 4 prompts x 4 rollouts / 8 per optimizer step = 2 optimizer steps per rollout step; expert_ratio 0.2 ->
    # ceil(0.2 x 16 / 0.8) = 4 expert solutions per step. mu: 0.9 at step 0, cosine to 0.05 at optimizer step 4.
    # Scripted rollouts, half right in every group: non-zero advantages, so the RL term has a gradient too.
    run = train(fast_config(tmp_path / "run", HALF_RIGHT, "trainer.rollout_steps=4", "rollout.samples_per_prompt=4",
                            "trainer.sequences_per_optimizer_step=8", "algorithm.sft_schedule=chord",
                            "algorithm.sft_prompts_per_step=0", "algorithm.expert_ratio=0.2",
                            "algorithm.chord_mu_warmup=0", "algorithm.chord_mu_decay=4",
                            "algorithm.chord_mu_peak=0.9", "algorithm.chord_mu_valley=0.05"))
    metrics = read_metrics(run)[1:]
    # logged per rollout step: the mean of its two optimizer steps' mu (0.9, 0.7755 | 0.475, 0.1745 | 0.05, ...)
    expected = [(chord_mu(2 * k, 0, 4, 0.9, 0.05) + chord_mu(2 * k + 1, 0, 4, 0.9, 0.05)) / 2 for k in range(4)]
    assert [m["chord/mu"] for m in metrics] == pytest.approx(expected, abs=1e-9)
    assert expected[0] == pytest.approx((0.9 + 0.05 + 0.425 * (1 + math.cos(math.pi / 4))) / 2)
    share = [m["chord/sft_grad_share"] for m in metrics]
    assert all(0.0 < s < 1.0 for s in share)
    assert share[0] > share[1] > share[2], share  # mu 0.84 -> 0.32 -> 0.05
    for m in metrics:
        assert math.isfinite(m["loss/sft"]) and m["chord/sft_term"] > 0  # NLL > 0, weighted by mu > 0
        assert math.isfinite(m["chord/rl_term"])
    # the weighted SFT term shrinks with mu although the NLL it weights does not vanish
    assert metrics[2]["chord/sft_term"] < metrics[0]["chord/sft_term"]


def test_separate_judge_model_rewards_are_its_p_yes(tmp_path):
    # judge_mix 0.5 on gold rows: overall = 0.5 x verifier + 0.5 x P(Yes) of builtin:tiny-qwen2.5-vl built with
    # seed model.seed + 1 = 1 (a different network from the seed-0 policy).
    cfg = fast_config(tmp_path / "run", HALF_RIGHT, "trainer.rollout_steps=2", "rollout.samples_per_prompt=4",
                      "trainer.sequences_per_optimizer_step=8", "reward.judge_model=builtin:tiny-qwen2.5-vl",
                      "reward.judge_mix=0.5", "reward.judge_batch_size=3")
    run = train(cfg)
    metrics = read_metrics(run)
    for m in metrics[1:]:
        assert 0.0 < m["reward/judge"] < 1.0
        # 4 groups x 4 rollouts, 2 distinct answers per group (gold / wrong): 8 forward rows, 8 answered by a twin
        assert m["judge/scored"] == 8 and m["judge/cached"] == 8
    rows = {s.uid: s for s in load_source("builtin:synthetic", cfg).samples}
    judge, processor = build_tiny("tiny-qwen2.5-vl", seed=1)
    policy, _ = build_tiny("tiny-qwen2.5-vl", seed=0)
    template = load_judge_template("", "pointwise")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    step1 = [s for s in samples if s["step"] == 1]
    assert step1
    for s in step1:
        prompt = build_prompt(rows[s["uid"]], cfg.data.format_template, cfg.data.system_prompt)
        expected = judge_score(judge, processor, [prompt], [s["extracted"]], template=template)[0]
        own = judge_score(policy, processor, [prompt], [s["extracted"]], template=template)[0]
        assert s["reward"]["judge"] == pytest.approx(expected, abs=1e-5)
        assert abs(expected - own) > 1e-4  # not the policy's own P(Yes)
