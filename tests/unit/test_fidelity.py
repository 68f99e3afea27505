"""Method-audit regressions (shared/reviews/method_audit.md): each test failed on the code the audit read."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from spark_vl.algorithms.advantages import grpo, reinforce_pp_baseline
from spark_vl.algorithms.logprobs import chunked_logprobs
from spark_vl.config import AlgorithmConfig, Config, ConfigError, SparkConfig, derived, load_config, validate
from spark_vl.data.prompts import build_prompt, prompt_key
from spark_vl.spark.recycle import recycle
from spark_vl.trainer.distributed import lr_lambda
from spark_vl.trainer.loop import Trainer, TrainState
from spark_vl.trainer.metrics import Means
from spark_vl.types import RewardOutput, Rollout, RolloutGroup, Sample

IMG = Image.new("RGB", (28, 28))


def group(uid: str, rewards: list[float], answer: str = "3") -> RolloutGroup:
    p = build_prompt(Sample(uid=uid, problem=f"How many ({uid})?", answer=answer, images=[IMG]), template="spark",
                     images=[IMG])
    return RolloutGroup(p, [Rollout(prompt=p, token_ids=[1], text=f"\\boxed{{{r}}}",
                                    reward=RewardOutput(r, {"accuracy": r})) for r in rewards])


def trainer_for(advantage: str) -> Trainer:
    cfg = Config()
    cfg.algorithm.advantage = advantage
    return Trainer(cfg, derived(cfg), SimpleNamespace(rank=0, world_size=1, device="cpu"), None, None, None, None,
                   TrainState())


def test_b3_reinforce_pp_baseline_whitens_the_phase_through_the_trainer():
    """The trainer calls the estimator once on every group of the phase: REINFORCE++-baseline's batch whitening
    sees the batch, so it is not GRPO (the old per-group call made it exactly GRPO)."""
    rewards = [[1.0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 1]]
    groups = [group(f"g{i}", r) for i, r in enumerate(rewards)]
    via_trainer = torch.tensor(trainer_for("reinforce_pp_baseline").advantages(groups, Means(), ""))
    R = torch.tensor(rewards)
    assert torch.allclose(via_trainer, reinforce_pp_baseline(R, AlgorithmConfig()), atol=1e-6)
    assert not torch.allclose(via_trainer, grpo(R, AlgorithmConfig()), atol=1e-3)
    # by hand: centred rows, then (x - mean) / std over all 12 values (mean 0)
    centred = R - R.mean(dim=1, keepdim=True)
    assert torch.allclose(via_trainer, centred / (centred.std() + 1e-6), atol=1e-6)
    plain = torch.tensor(trainer_for("grpo").advantages(groups, Means(), ""))
    assert torch.allclose(plain, grpo(R, AlgorithmConfig()))


def test_stateful_estimator_gets_keys_and_persistent_state():
    """A plug-in advantage receives the prompts' keys and a dict that persists in TrainState (checkpointed)."""
    seen = []

    def counting(rewards_GN, cfg, keys, state):
        state["calls"] = state.get("calls", 0) + 1
        seen.append(list(keys))
        return rewards_GN - rewards_GN.mean(dim=1, keepdim=True)

    import spark_vl.algorithms.advantages as adv

    adv.ADVANTAGES["_counting"] = counting
    try:
        t = trainer_for("_counting")
        first = [group("a", [1.0, 0]), group("b", [0.0, 0])]
        t.advantages(first, Means(), "")
        t.advantages([group("c", [1.0, 1])], Means(), "")
    finally:
        del adv.ADVANTAGES["_counting"]
    assert seen[0] == [prompt_key(g.prompt) for g in first] and len(seen[1]) == 1
    assert t.state.algorithm["advantage/_counting"] == {"calls": 2}


def test_b4_entropy_bonus_has_a_gradient():
    h = torch.randn(2, 5, 8, requires_grad=True)
    head = torch.nn.Linear(8, 50, bias=False)
    y = torch.randint(0, 50, (2, 5))
    _, metric = chunked_logprobs(h, head, y, chunk_size=2)
    assert not metric.requires_grad
    _, ent = chunked_logprobs(h, head, y, chunk_size=2, entropy_grad=True)
    ent.sum().backward()
    got = h.grad.clone()
    h.grad = None
    logp = torch.log_softmax(head(h).float(), dim=-1)
    (-(logp.exp() * logp).sum(-1)).sum().backward()
    assert torch.allclose(got, h.grad, atol=1e-5) and got.abs().sum() > 0


def test_b7_reward_only_ablation_plans_only_the_steps_it_takes():
    cfg = load_config("configs/qwen2_5_vl/7b_grpo_reward_only.yaml")
    plan = derived(cfg, 8)
    assert plan.optimizer_steps_per_rollout_step == 0
    assert plan.total_optimizer_steps == plan.aux_optimizer_steps_per_phase * cfg.trainer.rollout_steps == 4752
    last = lr_lambda(plan.total_optimizer_steps - 1, plan.total_optimizer_steps, plan.warmup_steps,
                     cfg.trainer.min_lr_ratio)
    assert last == pytest.approx(cfg.trainer.min_lr_ratio, abs=1e-4)  # was 0.57 of the peak
    full = derived(load_config("configs/qwen2_5_vl/7b_spark.yaml"), 8)
    assert full.total_optimizer_steps == 594 * (8 + 8)


def test_b2_groups_without_a_gold_are_never_recycled():
    rollouts = [Rollout(prompt=None, token_ids=[1], text="It is \\boxed{red}",
                        reward=RewardOutput(0.97, {"judge": 0.97}, "red"))] * 4
    g = group("nogold", [0.0], answer="")
    g.rollouts = [Rollout(**{**r.__dict__, "prompt": g.prompt}) for r in rollouts]
    result = recycle([g, group("gold", [1.0, 0.0, 0.0, 1.0])], SparkConfig(enabled=True), random.Random(0), 1)
    assert result.stats.skipped_no_gold == 1
    assert {p.meta["origin_uid"] for p in result.prompts} == {"gold"}
    assert all(p.label for p in result.prompts)


def test_gspo_refuses_token_level_settings():
    cfg = Config()
    cfg.algorithm.policy_loss = "gspo"
    with pytest.raises(ConfigError, match="algorithm.clip_low=3e-4"):
        validate(cfg)
    cfg.algorithm.clip_low, cfg.algorithm.clip_high, cfg.algorithm.loss_agg = 3e-4, 4e-4, "seq-mean-token-mean"
    validate(cfg)


def test_auxiliary_phase_arithmetic_is_validated_and_derived():
    cfg = Config()
    cfg.spark.enabled, cfg.spark.samples_per_prompt = True, 3  # 8 prompts x 3 = 24, not a multiple of 32
    with pytest.raises(ConfigError, match="SPARK auxiliary phase"):
        validate(cfg)
    cfg.spark.samples_per_prompt, cfg.spark.schedule = 8, "mixed"
    with pytest.raises(ConfigError, match="share the policy batch"):
        validate(cfg)
    cfg.spark.samples_per_prompt = None
    plan = derived(cfg)  # mixed, share 0.5 of 8 prompts: caps 32 + 32 scaled to 4 in their 1:1 proportion
    assert (plan.aux_prompts_per_phase, plan.judgment_cap, plan.reflection_cap) == (4, 2, 2)
    assert plan.aux_optimizer_steps_per_phase == 0
    cfg.spark.schedule = "alternate"
    plan = derived(cfg, 2)  # 8 prompts x 4 samples = 32 per phase, 32 per optimizer step: 1 + 1 per step
    assert (plan.optimizer_steps_per_rollout_step, plan.aux_optimizer_steps_per_phase) == (1, 1)
    assert plan.total_optimizer_steps == 2 * cfg.trainer.rollout_steps and plan.grad_accum_steps == 4
