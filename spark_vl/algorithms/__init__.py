"""Pure RL math: advantage estimators (found by name in ADVANTAGES), policy losses, KL, aggregation.

Both plug-in points take their settings the same way, as the `algorithm` config section:
    advantage(rewards_GN, cfg, keys, state) -> advantages_GN          (algorithms/advantages.py)
    policy_loss(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg) -> PolicyLossOutput   (algorithms/losses.py)
`get_advantage_fn(name)` / `get_policy_loss_fn(name)` resolve a built-in name or "package.module:function".
"""

from __future__ import annotations

from collections.abc import Callable

from spark_vl.algorithms.advantages import ADVANTAGES
from spark_vl.algorithms.losses import POLICY_LOSSES
from spark_vl.plugins import resolve


def get_advantage_fn(name: str) -> Callable:
    return resolve(name, ADVANTAGES, "advantage estimator")


def get_policy_loss_fn(name: str) -> Callable:
    return resolve(name, POLICY_LOSSES, "policy loss")
