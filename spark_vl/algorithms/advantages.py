"""Outcome-reward advantage estimators. Each maps rewards [G, N] (G groups of N rollouts) to advantages [G, N].

The contract, matching the trainer's single call per phase:

    fn(rewards_GN, cfg: AlgorithmConfig, keys: list[str], state: dict) -> advantages_GN

`rewards_GN` holds every group of the phase on every rank (the trainer gathers them, so batch statistics are
global and equal to a one-process run); `keys[g]` is group g's stable prompt key; `state` is a dict that
persists across steps and is saved in checkpoints (one per estimator name), for stateful estimators such as a
per-prompt value tracker. Stateless estimators ignore both.

    grpo                   A = (r - mean_g) / (std_g + eps)        std unbiased (n-1) or population
    dr_grpo                A = r - mean_g                           (Dr.GRPO: no std division)
    rloo                   A = N / (N - 1) * (r - mean_g)           (leave-one-out baseline)
    spo                    A = r - v(x), batch-normalised; v(x) a persistent per-prompt tracker (algorithms/spo.py)
    reinforce_pp_baseline  A = whiten_batch(r - mean_g)             (REINFORCE++-baseline; the batch is every
                                                                    group of the phase on every rank)

`norm_by_std=False` turns grpo into dr_grpo. A group of size 1 has no baseline: grpo/dr_grpo/rloo give
it advantage r (verl's convention for rloo) minus nothing, i.e. r - r = 0 for grpo, r for rloo.

A flat group (all rewards equal, up to FLAT_TOL relative) gets advantage exactly 0 from every estimator. Without
the guard, float32 rounding of the mean leaves ~1e-8 in r - mean, and dividing by (std≈0 + eps) turns it into
one same-sign advantage for the whole group: eight rewards of 0.9 gave -0.056 (eps 1e-6) or -0.92 (eps 1e-9).
"""

from __future__ import annotations

import torch

from spark_vl.algorithms.spo import spo
from spark_vl.config import AlgorithmConfig

FLAT_TOL = 1e-6  # a group whose max - min is at most FLAT_TOL * max(1, max |r|) counts as all-equal


def flat_groups(rewards_GN: torch.Tensor) -> torch.Tensor:
    """[G, 1] bool: True for groups whose rewards are all equal (within FLAT_TOL); empty groups are not flat."""
    if rewards_GN.shape[1] == 0:
        return torch.zeros(rewards_GN.shape[0], 1, dtype=torch.bool)
    spread = rewards_GN.amax(dim=1, keepdim=True) - rewards_GN.amin(dim=1, keepdim=True)
    return spread <= FLAT_TOL * rewards_GN.abs().amax(dim=1, keepdim=True).clamp(min=1.0)


def group_centred(rewards_GN: torch.Tensor) -> torch.Tensor:
    """r - mean_g [G, N], exactly 0 in flat groups (see the module docstring)."""
    centred = rewards_GN - rewards_GN.mean(dim=1, keepdim=True)
    return centred.masked_fill(flat_groups(rewards_GN), 0.0)


def group_std(rewards_GN: torch.Tensor, unbiased: bool) -> torch.Tensor:
    if rewards_GN.shape[1] < 2:
        return torch.ones(rewards_GN.shape[0], 1, dtype=rewards_GN.dtype)
    return rewards_GN.std(dim=1, keepdim=True, unbiased=unbiased)


def grpo(rewards_GN: torch.Tensor, cfg: AlgorithmConfig, keys=None, state=None) -> torch.Tensor:
    centred = group_centred(rewards_GN)
    if not cfg.norm_by_std:
        return centred
    return centred / (group_std(rewards_GN, cfg.std_unbiased) + cfg.adv_eps)


def dr_grpo(rewards_GN: torch.Tensor, cfg: AlgorithmConfig, keys=None, state=None) -> torch.Tensor:
    return group_centred(rewards_GN)


def rloo(rewards_GN: torch.Tensor, cfg: AlgorithmConfig, keys=None, state=None) -> torch.Tensor:
    n = rewards_GN.shape[1]
    if n < 2:
        return rewards_GN.clone()
    return n / (n - 1) * group_centred(rewards_GN)


def reinforce_pp_baseline(rewards_GN: torch.Tensor, cfg: AlgorithmConfig, keys=None, state=None) -> torch.Tensor:
    centred = group_centred(rewards_GN)
    if centred.numel() < 2:
        return centred
    whitened = (centred - centred.mean()) / (centred.std() + cfg.adv_eps)
    return whitened.masked_fill(flat_groups(rewards_GN), 0.0)  # exactly 0, as the exact batch mean of centred is 0


# name -> fn(rewards_GN, cfg, keys, state); `spo` lives in algorithms/spo.py (tracker state, single stream).
ADVANTAGES = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce_pp_baseline": reinforce_pp_baseline,
}
ADVANTAGES["spo"] = spo
