"""Policy losses, KL estimators, loss aggregation and the supervised term. Shapes: B sequences, T positions.

Token losses are per predicted position; `mask_BT` is 1 on response tokens. Aggregation divides by a
*global* count (tokens or sequences of the whole optimizer step across micro-batches and ranks), passed
in by the trainer, so a micro-batch's weight does not depend on how the step was split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PolicyLossOutput:
    loss_BT: torch.Tensor  # per-token loss to minimise
    clipped_BT: torch.Tensor  # 1.0 where the clipped branch was active
    ratio_BT: torch.Tensor  # importance ratio used


def ppo_clip(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate with decoupled clip range and optional dual clip.

    l1 = -A * r,  l2 = -A * clip(r, 1 - clip_low, 1 + clip_high),  l = max(l1, l2);
    with dual clip c (A < 0 only): l = min(l, -A * c).  r = exp(logp - old_logp), log-ratio clamped to [-20, 20].
    """
    ratio = torch.exp(torch.clamp(logp_BT - old_logp_BT, -20.0, 20.0))
    l1 = -adv_BT * ratio
    l2 = -adv_BT * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(l1, l2)
    clipped = (l2 > l1).float()
    if dual_clip is not None:
        dual = torch.minimum(loss, -adv_BT * dual_clip)
        loss = torch.where(adv_BT < 0, dual, loss)
    return PolicyLossOutput(loss, clipped, ratio)


def gspo(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> PolicyLossOutput:
    """GSPO-token: s_i = exp(mean_t(logp - old_logp)) per sequence, token ratio sg[s_i] * exp(logp - sg[logp]).

    Equal in value to the sequence ratio, with each token's own gradient; pair with seq-mean-token-mean.
    """
    lengths = mask_BT.sum(dim=1).clamp(min=1.0)
    log_s = ((logp_BT - old_logp_BT) * mask_BT).sum(dim=1) / lengths  # [B]
    log_s_BT = log_s.detach().unsqueeze(1) + logp_BT - logp_BT.detach()
    ratio = torch.exp(torch.clamp(log_s_BT, max=10.0))
    l1 = -adv_BT * ratio
    l2 = -adv_BT * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return PolicyLossOutput(torch.maximum(l1, l2), (l2 > l1).float(), ratio)


def _ppo_clip_from_cfg(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg) -> PolicyLossOutput:
    return ppo_clip(logp_BT, old_logp_BT, adv_BT, cfg.clip_low, cfg.clip_high, cfg.dual_clip)


def _gspo_from_cfg(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg) -> PolicyLossOutput:
    return gspo(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg.clip_low, cfg.clip_high)


# name -> fn(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg: AlgorithmConfig) -> PolicyLossOutput
POLICY_LOSSES = {"ppo_clip": _ppo_clip_from_cfg, "gspo": _gspo_from_cfg}


def kl_penalty(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL estimate of pi_theta against pi_ref, d = logp - ref_logp.

    k1 = d;  k2 = 0.5 d^2;  k3 = exp(-d) + d - 1 (d clamped to [-20, 20], result clamped to [-10, 10]).
    """
    d = logp_BT - ref_logp_BT
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        d = torch.clamp(d, -20.0, 20.0)
        return torch.clamp(torch.exp(-d) + d - 1.0, -10.0, 10.0)
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")


@dataclass
class AggregationDenominators:
    """Global counts for one optimizer step (all micro-batches, all ranks)."""

    tokens: float  # response tokens
    sequences: float  # sequences with at least one response token
    norm_const: float = 1.0  # C of seq-mean-token-sum-norm


def aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mode: str, denom: AggregationDenominators) -> torch.Tensor:
    """Reduce token losses of one micro-batch to its share of the optimizer step's scalar loss.

    token-mean               sum(m*l) / global_tokens
    seq-mean-token-sum       sum_i sum_t m*l / global_sequences
    seq-mean-token-mean      sum_i [sum_t m*l / T_i] / global_sequences
    seq-mean-token-sum-norm  sum_i sum_t m*l / (global_sequences * C)
    Summing the returned values over every micro-batch of the step gives the step's loss.
    """
    masked = loss_BT * mask_BT
    if mode == "token-mean":
        return masked.sum() / max(denom.tokens, 1.0)
    if mode == "seq-mean-token-sum":
        return masked.sum() / max(denom.sequences, 1.0)
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(dim=1) / mask_BT.sum(dim=1).clamp(min=1.0)
        return per_seq.sum() / max(denom.sequences, 1.0)
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (max(denom.sequences, 1.0) * denom.norm_const)
    raise ValueError(f"unknown loss aggregation {mode!r}")


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    return (x_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1.0)
