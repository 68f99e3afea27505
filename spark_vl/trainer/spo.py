"""SPO's bookkeeping around the tracker (the math is algorithms/spo.py): first-visit priors, the policy's drift on
each revisited prompt (the KL-adaptive forgetting factor), the last trained response per prompt, and the
sampling weights. The tracker state is `TrainState.algorithm["advantage/spo"]`, identical on every rank: what one
rank learns about its prompts is gathered and applied everywhere.

The loop calls these by name (trainer/loop.py): `first_visits` before the rollout, `drift_sequences` +
`set_forgetting` and `remember` around the log-prob pass, `refresh_weights` after the update.
"""

from __future__ import annotations

import array

from spark_vl.algorithms.spo import (
    DEFAULT_WEIGHT,
    OFFLINE_SAMPLES,
    forgetting_factor,
    sampling_weight,
    seed_prior,
    tracked_value,
)
from spark_vl.config import AlgorithmConfig
from spark_vl.data.prompts import prompt_key
from spark_vl.models.encode import PromptEncoder
from spark_vl.trainer.batch import Sequence
from spark_vl.trainer.distributed import gather_rows
from spark_vl.types import Prompt, RolloutGroup


def offline_pass_rate(prompt: Prompt, field: str) -> float | None:
    """The row's offline pass rate, when the data has one in [0, 1] (ViRL39K: `passrate_7b`, -1 = unknown)."""
    rate = (prompt.sample.difficulty or {}).get(field) if field else None
    return float(rate) if isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0 else None


def first_visits(prompts: list[Prompt], state: dict, cfg: AlgorithmConfig) -> list[Prompt]:
    """Seed the priors of untracked prompts that have an offline pass rate (on every rank); return the untracked
    prompts without one, whose prior comes from `cfg.spo_init_samples` samples (`seed_from_samples`)."""
    rows, unknown = [], []
    for p in prompts:
        key = prompt_key(p)
        if tracked_value(state, key) is not None:
            continue
        rate = offline_pass_rate(p, cfg.spo_pass_rate)
        if rate is not None:
            rows.append((key, rate * OFFLINE_SAMPLES, OFFLINE_SAMPLES))
        else:
            unknown.append(p)
    _seed(rows, state, cfg)
    return unknown if cfg.spo_init_samples > 0 else []


def seed_from_samples(groups: list[RolloutGroup], state: dict, cfg: AlgorithmConfig) -> None:
    """Priors from first-visit samples: successes among each group's verified rollouts (not trained on)."""
    _seed([(prompt_key(g.prompt), sum(bool(r.reward and r.reward.correct) for r in g.rollouts), len(g.rollouts))
           for g in groups], state, cfg)


def _seed(rows: list[tuple[str, float, int]], state: dict, cfg: AlgorithmConfig) -> None:
    for key, successes, samples in gather_rows(rows):
        seed_prior(state, key, successes, samples, cfg.spo_rho_min)


def drift_sequences(groups: list[RolloutGroup], state: dict, encode: PromptEncoder) -> list[tuple[str, Sequence]]:
    """For each revisited prompt of this rank, its last trained response (the tracker's copy), to re-score under
    the current policy; the stored log-probs ride along as `behaviour_logprobs`."""
    last = state.get("last", {})
    out = []
    for g in groups:
        key = prompt_key(g.prompt)
        if key in last:
            ids, logps = last[key]
            seq = Sequence(encode(g.prompt), list(array.array("i", ids)),
                           behaviour_logprobs=list(array.array("f", logps)))
            out.append((key, seq))
    return out


def set_forgetting(scored: list[tuple[str, Sequence]], state: dict, cfg: AlgorithmConfig) -> list[float]:
    """rho(x) for every revisited prompt of every rank, from D = mean |log p_then - log p_now| over its last
    response (`scored` sequences carry both); returns this rank's drifts (for the metrics)."""
    drifts = []
    for key, seq in scored:
        pairs = list(zip(seq.behaviour_logprobs, seq.old_logprobs))
        drifts.append((key, sum(abs(a - b) for a, b in pairs) / max(1, len(pairs))))
    everything = gather_rows(drifts)
    state["rho"] = {key: forgetting_factor(d, cfg.spo_rho_min) for key, d in everything}
    return [d for _, d in drifts]


def remember(seqs: list[tuple[str, Sequence]], state: dict) -> None:
    """Keep each prompt's trained response and its log-probs under the policy that sampled it (every rank keeps
    every prompt's copy: a prompt may be drawn on another rank next time), compactly as bytes."""
    rows = [(key, array.array("i", s.response_ids).tobytes(), array.array("f", s.old_logprobs).tobytes())
            for key, s in seqs if s.old_logprobs is not None]
    last = state.setdefault("last", {})
    for key, ids, logps in gather_rows(rows):
        last[key] = [ids, logps]


def weights_of(keys: list[str], state: dict) -> dict[str, float]:
    """Sampling weights sqrt(v (1 - v)) + 0.05 of these prompts (untracked: the Jeffreys prior's)."""
    out = {}
    for key in keys:
        v = tracked_value(state, key)
        out[key] = DEFAULT_WEIGHT if v is None else sampling_weight(v)
    return out


def tracker_metrics(state: dict, pool_size: int) -> dict[str, float]:
    alpha = state.get("alpha", {})
    values = [a / (a + state["beta"][k]) for k, a in alpha.items()]
    return {"spo/coverage": len(alpha) / max(1, pool_size),
            "spo/mean_value": sum(values) / len(values) if values else float("nan")}
