"""Rewards for a step's rollouts: the verifier for every prompt with a gold answer, and optionally the
model's own generative score for prompts without one.

`reward.judge_weight > 0` turns on the RewardDance-style term: a rollout of a prompt whose sample has no
gold answer gets reward `judge_weight x P(Yes)`, the probability the model itself gives to "this answer is
correct" (`spark_vl.spark.judge_score`, one forward pass, on the final answer in a box or <answer> tag,
first or last per `reward.extract`); a rollout with no final answer gets 0. With `judge_weight: 0` such rows
are skipped when prompts are built.
"""

from __future__ import annotations

import torch

from spark_vl.config import RewardConfig
from spark_vl.types import RewardOutput, Rollout, RolloutGroup


def has_gold(rollout: Rollout) -> bool:
    answer = rollout.prompt.sample.answer
    return isinstance(answer, str) and bool(answer.strip())


def score_groups(groups: list[RolloutGroup], cfg: RewardConfig, model=None, processor=None,
                 judge_everywhere: bool = False) -> None:
    """Set `rollout.reward` on every rollout of `groups`.

    `judge_everywhere`: run the judge forward pass even with nothing to judge (ZeRO-3 needs every rank in
    every forward); the dummy result is discarded.
    """
    from spark_vl.rewards import extract_answer, get_reward_fn, score_batch

    rollouts = [r for g in groups for r in g.rollouts]
    verified = [r for r in rollouts if has_gold(r)]
    if cfg.name == "math":
        outputs = score_batch([r.text for r in verified], [r.prompt.sample for r in verified], cfg)
    else:
        fn = get_reward_fn(cfg.name)
        outputs = [_as_output(fn(r.text, r.prompt.sample, cfg)) for r in verified]
    for r, out in zip(verified, outputs):
        r.reward = out
    judged = [r for r in rollouts if not has_gold(r)]
    if cfg.judge_weight <= 0:
        for r in judged:
            r.reward = RewardOutput(0.0, {"accuracy": 0.0}, None)
        return
    # Only a real final answer (box or <answer> tag) is judged, as in SPARK's recycling: never a last line.
    answers = [extract_answer(r.text, cfg.extract, fallback=False) for r in judged]
    shown = [(r, a) for r, a in zip(judged, answers) if a]
    if shown or (judge_everywhere and rollouts):
        from spark_vl.spark import judge_score

        pairs = shown or [(rollouts[0], rollouts[0].text or "?")]
        with torch.no_grad():
            probs = judge_score(model, processor, [r.prompt for r, _ in pairs], [a for _, a in pairs])
        if not shown:
            probs = []
        for (r, a), p in zip(shown, probs):
            r.reward = RewardOutput(cfg.judge_weight * p, {"judge": p}, a)
    for r, a in zip(judged, answers):
        if not a:
            r.reward = RewardOutput(0.0, {"judge": 0.0}, None)


def _as_output(value) -> RewardOutput:
    if isinstance(value, RewardOutput):
        return value
    return RewardOutput(float(value), {"accuracy": float(value)}, None)
