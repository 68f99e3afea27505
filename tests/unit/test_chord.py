"""CHORD: the mu schedule, phi weights, the expert count and the combined loss, against hand-computed values."""

import math
from types import SimpleNamespace

import pytest
import torch

from spark_vl.algorithms.chord import chord_mu, chord_phi, sft_token_loss
from spark_vl.algorithms.losses import AggregationDenominators
from spark_vl.config import ConfigError, derived, load_config
from spark_vl.trainer.batch import TrainBatch
from spark_vl.trainer.distributed import DistInfo
from spark_vl.trainer.loop import Trainer, TrainState
from spark_vl.trainer.metrics import Means


def test_mu_chord_mu_variant_no_warmup_cosine_to_valley():
    # CHORD-mu (algorithms.md 8.2): W = 0, Dd = 200, peak 0.9, valley 0.05
    mu = [chord_mu(s, 0, 200, 0.9, 0.05) for s in (0, 50, 100, 200, 500)]
    # step 50: 0.05 + 0.85 * 0.5 * (1 + cos(pi / 4)) = 0.05 + 0.425 * 1.70710678
    assert mu == pytest.approx([0.9, 0.7755203820, 0.475, 0.05, 0.05])


def test_mu_chord_phi_variant_is_constant_with_zero_decay():
    # W = 0 and Dd = 0: the valley from the first step on, never a division by zero
    assert [chord_mu(s, 0, 0, 0.1, 0.1) for s in (0, 1, 1000)] == [0.1, 0.1, 0.1]
    assert chord_mu(0, 0, 0, 0.9, 0.3) == 0.3


def test_mu_warmup_then_decay_example_yaml():
    # the shipped example: W = 200, Dd = 400, peak 0.5, valley 0.02
    mu = [chord_mu(s, 200, 400, 0.5, 0.02) for s in (0, 100, 200, 400, 600, 1000)]
    assert mu == pytest.approx([0.0, 0.25, 0.5, 0.26, 0.02, 0.02])


def test_phi_is_p_one_minus_p_and_detached():
    logp = torch.log(torch.tensor([[0.5, 1.0, 0.2]])).requires_grad_(True)
    assert chord_phi(logp).tolist()[0] == pytest.approx([0.25, 0.0, 0.16])
    sft_token_loss(logp, phi=True).sum().backward()
    # d/dlogp of -sg[phi] * logp is -phi; with phi differentiated it would be -phi - logp * (p - 2 p^2)
    assert logp.grad.tolist()[0] == pytest.approx([-0.25, 0.0, -0.16])
    assert torch.equal(sft_token_loss(logp, phi=False), -logp)


def test_expert_ratio_gives_chords_expert_count():
    # 32 prompts x 8 = 256 rollout sequences at ratio 0.2: 64 experts (the example's mini-batch of 320)
    cfg = load_config(None, ["trainer.prompts_per_step=32", "rollout.samples_per_prompt=8",
                             "trainer.sequences_per_optimizer_step=256", "algorithm.expert_ratio=0.2"])
    assert derived(cfg).expert_sequences_per_step == 64
    cfg = load_config(None, ["algorithm.expert_ratio=0.3"])  # 8 x 4 = 32: ceil(0.3 x 32 / 0.7) = ceil(13.71)
    assert derived(cfg).expert_sequences_per_step == 14
    assert derived(load_config(None, ["algorithm.sft_prompts_per_step=3"])).expert_sequences_per_step == 3


@pytest.mark.parametrize("overrides, needle", [
    (["algorithm.sft_schedule=chord"], "mixes expert rows"),
    (["algorithm.expert_ratio=0.2", "algorithm.sft_prompts_per_step=2"], "set one of them"),
    (["algorithm.expert_ratio=1.0"], "expert_ratio=1.0"),
    (["algorithm.chord_mu_peak=1.5"], "chord_mu_peak=1.5"),
    (["algorithm.chord_mu_decay=-1"], "chord_mu_decay=-1"),
])
def test_chord_config_errors_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def _trainer(overrides, optimizer_steps=0):
    cfg = load_config(None, overrides)
    engine = SimpleNamespace(module=None, gradient_accumulation_steps=lambda: 1)
    state = TrainState(optimizer_steps=optimizer_steps)
    return Trainer(cfg, derived(cfg), DistInfo(0, 1, 0, torch.device("cpu")), engine, None, None, None, state)


def _batch_and_logp():
    """Row 0: a rollout (advantage 1, ratio 1) on 2 tokens; row 1: an expert solution with p = 0.5, 0.25."""
    logp = torch.log(torch.tensor([[0.5, 0.5, 1.0], [1.0, 0.5, 0.25]])).requires_grad_(True)
    batch = TrainBatch(
        input_ids=torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long),
        mm_token_type_ids=torch.zeros(2, 4, dtype=torch.long), pixel_values=None, image_grid_thw=None,
        response_mask=torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]),
        advantages=torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        old_logprobs=logp.detach().clone(), loss_weights=torch.ones(2), is_expert=torch.tensor([False, True]))
    return batch, logp


def _loss(trainer, metrics):
    batch, logp = _batch_and_logp()
    trainer.logprobs = lambda model, b, entropy_grad=False: (logp, torch.zeros_like(logp))
    from spark_vl.algorithms import get_policy_loss_fn

    loss, _ = trainer.micro_loss(batch, AggregationDenominators(2, 1), AggregationDenominators(2, 1.0),
                                 get_policy_loss_fn("ppo_clip"), metrics)
    return loss, metrics.reduce(torch.device("cpu"))


RL = -1.0  # ppo_clip at ratio 1: -A per token, token-mean over 2 tokens
SFT = (math.log(2) + math.log(4)) / 2  # token-mean NLL of p = 0.5, 0.25
SFT_PHI = (0.25 * math.log(2) + 0.1875 * math.log(4)) / 2  # phi = 0.25, 0.1875


def test_constant_schedule_is_rl_plus_sft_coef_times_sft():
    loss, m = _loss(_trainer(["algorithm.sft_coef=0.5", "algorithm.sft_prompts_per_step=1"]), Means())
    assert loss.item() == pytest.approx(RL + 0.5 * SFT)
    assert not any(k.startswith("chord/") for k in m)


@pytest.mark.parametrize("step, mu", [(0, 0.8), (2, 0.5), (4, 0.2)])
def test_chord_loss_is_one_minus_mu_rl_plus_mu_sft(step, mu):
    # W = 0, Dd = 4, peak 0.8, valley 0.2: step 2 -> 0.2 + 0.6 * 0.5 * (1 + cos(pi / 2)) = 0.5
    chord = ["algorithm.sft_schedule=chord", "algorithm.sft_prompts_per_step=1", "algorithm.chord_mu_decay=4",
             "algorithm.chord_mu_peak=0.8", "algorithm.chord_mu_valley=0.2", "algorithm.sft_coef=7.0"]
    loss, m = _loss(_trainer(chord, step), Means())
    assert loss.item() == pytest.approx((1 - mu) * RL + mu * SFT)
    assert m["chord/rl_term"] == pytest.approx((1 - mu) * RL) and m["chord/sft_term"] == pytest.approx(mu * SFT)
    # |dL/dlogp|: (1 - mu) / 2 on each of 2 rollout tokens, mu / 2 on each of 2 expert tokens -> share = mu
    assert m["chord/sft_grad_share"] == pytest.approx(mu)
    loss, m = _loss(_trainer([*chord, "algorithm.chord_phi=true"], step), Means())
    assert loss.item() == pytest.approx((1 - mu) * RL + mu * SFT_PHI)
    # expert tokens now carry mu * phi / 2: mu * (0.25 + 0.1875) / 2 against (1 - mu)
    sft_mass = mu * 0.4375 / 2
    assert m["chord/sft_grad_share"] == pytest.approx(sft_mass / (sft_mass + (1 - mu)))
