"""SPO, single-stream policy optimisation (arXiv 2509.13232): one response per prompt, a persistent per-prompt
success-rate tracker as the baseline, advantages normalised over the whole batch, prompts drawn by the tracker's
uncertainty. Formulas and constants from the reference recipe (shared/reference/algorithms.md §7).

Tracker, per prompt key x (pseudo-counts of a Beta posterior over its success probability):

    v(x) = alpha / (alpha + beta)
    A(x, y) = r - v(x)                                        # the value BEFORE this step's update
    A~ = (A - mean_batch A) / (std_batch A + 1e-8)            # every prompt of the phase, all ranks
    alpha <- rho(x) * alpha + r,   beta <- rho(x) * beta + (1 - r)       r clipped to [0, 1]

Forgetting factor: rho(x) = clip(2^(-D(x) / 0.06), rho_min, 0.96), where D(x) is the mean |log p_then - log p_now|
over the tokens of the last response trained for x (measured by the trainer before the step; a first visit has
D = 0, so rho = 0.96), or a constant rho_min (`algorithm.spo_rho: constant`).

Prior at a first visit, from s successes in n0 samples (offline pass rates: s = p * n0 with n0 = 8):
    N = 1 / (1 - rho_min);  alpha0 = N (s + 0.5) / (n0 + 1);  beta0 = N (n0 - s + 0.5) / (n0 + 1)
and alpha0 = beta0 = 0.5 (Jeffreys) with no samples at all.

Prompt weight for prioritised sampling: sqrt(v (1 - v)) + 0.05.

The tracker state is a plain dict (checkpointed with the trainer state): {"alpha": {key: a}, "beta": {key: b},
"rho": {key: rho for this step}, "last": {key: [response ids, log-probs]}}.
"""

from __future__ import annotations

import math

import torch

from spark_vl.config import AlgorithmConfig

D_HALF = 0.06  # drift that halves the old statistics' weight (unclipped)
RHO_MAX = 0.96
EXPLORATION_EPS = 0.05
OFFLINE_SAMPLES = 8  # nominal n0 of an offline pass rate
JEFFREYS = (0.5, 0.5)


def forgetting_factor(drift: float, rho_min: float, d_half: float = D_HALF, rho_max: float = RHO_MAX) -> float:
    """rho = clip(2^(-drift / d_half), rho_min, rho_max)."""
    return min(rho_max, max(rho_min, 2.0 ** (-drift / d_half)))


def prior_counts(successes: float, samples: int, rho_min: float) -> tuple[float, float]:
    """(alpha0, beta0) from `successes` of `samples` first-visit (or offline) samples."""
    if samples <= 0:
        return JEFFREYS
    n = 1.0 / (1.0 - rho_min)
    return n * (successes + 0.5) / (samples + 1), n * (samples - successes + 0.5) / (samples + 1)


def value(alpha: float, beta: float) -> float:
    return alpha / (alpha + beta)


def sampling_weight(v: float) -> float:
    """Prioritised sampling weight of a prompt whose tracked success rate is v."""
    return math.sqrt(max(0.0, v * (1.0 - v))) + EXPLORATION_EPS


DEFAULT_WEIGHT = sampling_weight(value(*JEFFREYS))  # a prompt never seen


def tracked_value(state: dict, key: str) -> float | None:
    if key not in state.get("alpha", {}):
        return None
    return value(state["alpha"][key], state["beta"][key])


def seed_prior(state: dict, key: str, successes: float, samples: int, rho_min: float) -> None:
    """Set a first visit's prior (no-op for a key already tracked)."""
    if key in state.setdefault("alpha", {}):
        return
    state["alpha"][key], state.setdefault("beta", {})[key] = prior_counts(successes, samples, rho_min)


def spo(rewards_GN: torch.Tensor, cfg: AlgorithmConfig, keys: list[str], state: dict) -> torch.Tensor:
    """Advantages r - v(x) normalised over the batch, then the tracker update (see the module docstring).

    rewards_GN: one row per prompt; N > 1 rollouts of one prompt each use the same v(x) and update it in turn.
    """
    alpha, beta = state.setdefault("alpha", {}), state.setdefault("beta", {})
    rho = state.get("rho", {})
    for key in keys:
        if key not in alpha:
            alpha[key], beta[key] = JEFFREYS
    values = torch.tensor([[value(alpha[k], beta[k])] for k in keys], dtype=rewards_GN.dtype)
    adv = rewards_GN - values
    flat = adv.flatten()
    normalised = (adv - flat.mean()) / (flat.std() + 1e-8) if flat.numel() > 1 else adv * 0.0
    for key, row in zip(keys, rewards_GN.tolist()):
        factor = rho.get(key, cfg.spo_rho_min if cfg.spo_rho == "constant" else RHO_MAX)
        for r in row:
            r = min(1.0, max(0.0, r))
            alpha[key] = factor * alpha[key] + r
            beta[key] = factor * beta[key] + (1.0 - r)
    state["rho"] = {}
    return normalised
