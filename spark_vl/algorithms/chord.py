"""CHORD (arXiv 2508.11408): on-policy RL and expert SFT in one objective, weighted by a schedule.

    L = (1 - mu) * L_RL(rollouts) + mu * L_SFT(expert tokens)

L_RL is the configured policy loss (+ KL, entropy) over the step's rollout tokens; L_SFT is the token-mean
negative log-likelihood over the step's expert tokens, each with its own global denominator
(`spark_vl.algorithms.losses.aggregate`). CHORD-phi weights each expert token's NLL by phi(p) = p (1 - p),
detached, so tokens the policy already predicts (p -> 1) or finds near impossible (p -> 0) barely move it.

Simplification: mu is indexed by the trainer's optimizer step counter (0 = the first update), which also counts
SPARK's auxiliary-phase updates.
"""

from __future__ import annotations

import math

import torch


def chord_mu(step: int, warmup: int, decay: int, peak: float, valley: float) -> float:
    """The weight of the SFT term at optimizer step `step`: linear warm-up, cosine decay, then a floor.

        step < W:          mu = step / W * peak
        step >= W + Dd:    mu = valley
        otherwise:         mu = valley + (peak - valley) * 0.5 * (1 + cos(pi * (step - W) / Dd))

    The branches are tested in this order, so W = 0 (no warm-up: the first branch is never taken) and Dd = 0
    (mu = valley from step W on: CHORD-phi's constant mu) never divide by zero.
    """
    if step < warmup:
        return step / warmup * peak
    if step >= warmup + decay:
        return valley
    return valley + (peak - valley) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / decay))


def chord_phi(logp_BT: torch.Tensor) -> torch.Tensor:
    """Per-token weights phi = p (1 - p) with p = exp(logp), detached (no gradient flows through the weight).

    [B, T] -> [B, T]; largest (0.25) at p = 0.5, zero at p = 0 and p = 1.
    """
    p = logp_BT.detach().exp()
    return p * (1.0 - p)


def sft_token_loss(logp_BT: torch.Tensor, phi: bool) -> torch.Tensor:
    """Per-token SFT loss [B, T]: -logp (CHORD-mu / plain SFT) or -phi(p) * logp (CHORD-phi)."""
    return -chord_phi(logp_BT) * logp_BT if phi else -logp_BT
