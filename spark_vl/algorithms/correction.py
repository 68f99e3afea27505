"""Importance-sampling correction for the gap between the rollout sampler and the trainer.

The sampler (vLLM: other kernels, batching, precision) and the trainer disagree slightly even with equal
weights, so the PPO/GRPO update is off-policy (Yao et al., "Your efficient RL framework secretly brings you
off-policy RL training"). With, per response token t and detached,

    rho_t = exp(clamp(logp_old(y_t) - logp_sampler(y_t), -20, 20))      (old = the trainer before the update)

the per-token policy-gradient loss is multiplied by a weight w_t:

    token          w_t = min(rho_t, C)                                    truncated IS (TIS; verl, C = 2)
    mask           w_t = 1[1/C <= rho_t <= C]                             token rejection (MIS / IcePop-style)
    sequence       w_t = min(prod_t rho_t, C)                             sequence-level TIS
    sequence_mask  w_t = 1[1/C <= exp(mean_t log rho_t) <= C]             sequence rejection, geometric mean (TRL)
    none           w_t = 1

Shapes: B sequences, T positions; `mask_BT` is 1 on the response tokens that take part (0 on padding, prompts and
expert tokens); weights are 0 outside it. Only the policy-gradient term is weighted (not KL, entropy or SFT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IS_MODES = ("none", "token", "mask", "sequence", "sequence_mask")
LOG_RATIO_CLAMP = 20.0


def log_ratio(old_logp_BT: torch.Tensor, behaviour_logp_BT: torch.Tensor) -> torch.Tensor:
    """log rho = old - behaviour, clamped to [-20, 20] so exp never overflows."""
    return torch.clamp(old_logp_BT - behaviour_logp_BT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def is_weights(old_logp_BT: torch.Tensor, behaviour_logp_BT: torch.Tensor | None, mask_BT: torch.Tensor, mode: str,
               cap: float = 2.0) -> torch.Tensor:
    """The detached weights w_t [B, T] of the module docstring (ones on the mask when mode is none or no
    sampler log-probs exist)."""
    if mode not in IS_MODES:
        raise ValueError(f"unknown importance-sampling correction {mode!r}; choose one of {', '.join(IS_MODES)}")
    mask_BT = mask_BT.float()
    if mode == "none" or behaviour_logp_BT is None:
        return mask_BT.clone()
    lr_BT = log_ratio(old_logp_BT.detach().float(), behaviour_logp_BT.detach().float()) * mask_BT
    if mode == "token":
        w_BT = torch.clamp(torch.exp(lr_BT), max=cap)
    elif mode == "mask":
        w_BT = (lr_BT.abs() <= math.log(cap)).float()
    elif mode == "sequence":
        seq_B = torch.exp(torch.clamp(lr_BT.sum(dim=1), max=LOG_RATIO_CLAMP))
        w_BT = torch.clamp(seq_B, max=cap).unsqueeze(1).expand_as(lr_BT)
    else:  # sequence_mask
        mean_B = lr_BT.sum(dim=1) / mask_BT.sum(dim=1).clamp(min=1.0)
        inside_B = (mean_B.abs() <= math.log(cap)).float()
        w_BT = inside_B.unsqueeze(1).expand_as(lr_BT)
    return w_BT * mask_BT


@dataclass
class SamplerGap:
    """Sums over the response tokens of one or more sequences (divide by `tokens` for means)."""

    tokens: int
    abs_diff: float  # sum |old - behaviour|
    k3: float  # sum exp(d) - 1 - d with d = old - behaviour: k3 estimate of KL(sampler || trainer)
    ratio: float  # sum rho
    ratio_max: float
    outside: int  # tokens with rho outside [1/cap, cap]


def sampler_gap(old_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float = 2.0) -> SamplerGap:
    """The per-step gap metrics of a sequence's response tokens (1-D tensors of equal length)."""
    return sampler_gaps([old_logp], [behaviour_logp], cap)[0]


def _joined(rows: list) -> torch.Tensor:
    """The rows (lists of floats, read as float32 like `torch.tensor` reads each, or 1-D tensors) end to end, in
    float64."""
    if all(isinstance(r, list) for r in rows):
        return torch.tensor([x for r in rows for x in r]).double()
    return torch.cat([torch.as_tensor(r).double().reshape(-1) for r in rows])


def sampler_gaps(old: list, behaviour: list, cap: float = 2.0) -> list[SamplerGap]:
    """`sampler_gap` of each sequence (its old and behaviour log-probs: lists or 1-D tensors of equal lengths): the
    elementwise part on all tokens at once, the sums over each sequence's own tokens (contiguous slices: the same
    reduction, the same bits as on the sequence alone)."""
    lengths = [len(o) for o in old]
    d = log_ratio(_joined(old), _joined(behaviour))
    rho = torch.exp(d)
    parts = torch.stack([d.abs(), torch.expm1(d) - d, rho, ((rho > cap) | (rho < 1.0 / cap)).double()])  # [4, N]
    sums, maxima, start = [], [], 0
    for n in lengths:
        if n:  # (a row of the [4, n] slice sums as the contiguous 1-D slice does: a test compares the bits)
            sums.append(parts[:, start : start + n].sum(dim=1))
            maxima.append(rho[start : start + n].max())
        start += n
    values = iter(torch.cat([torch.stack(sums), torch.stack(maxima)[:, None]], dim=1).tolist() if sums else [])
    gaps = []
    for n in lengths:
        if not n:
            gaps.append(SamplerGap(0, 0.0, 0.0, 0.0, float("-inf"), 0))
            continue
        abs_diff, k3, ratio, outside, ratio_max = next(values)
        gaps.append(SamplerGap(n, abs_diff, k3, ratio, ratio_max, int(outside)))
    return gaps
