"""Pure RL math: advantage estimators (found by name in ADVANTAGES), policy losses, KL, aggregation.

`get_advantage_fn(name)` resolves a built-in name or a "package.module:function" path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from spark_vl.algorithms.advantages import ADVANTAGES
from spark_vl.algorithms.losses import POLICY_LOSSES


def resolve(name: str, table: dict[str, Callable], what: str) -> Callable:
    """Look `name` up in `table`, else import "package.module:function"."""
    if name in table:
        return table[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import {what} {name!r}: {err}") from None
    raise ValueError(f"unknown {what} {name!r}; built-in: {', '.join(sorted(table))}, or package.module:function")


def get_advantage_fn(name: str) -> Callable:
    return resolve(name, ADVANTAGES, "advantage estimator")


def get_policy_loss_fn(name: str) -> Callable:
    return resolve(name, POLICY_LOSSES, "policy loss")
