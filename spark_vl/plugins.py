"""One resolver for every plug-in point: a name in a plain dict, or a "package.module:attr" path to user code.

Used by advantages, policy losses, rewards, dataset recipes, benchmarks, the optional LLM judge and the rollout
backends. No registry framework and no entry points: to add a plug-in, add a dict entry or name your function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


class PluginError(ValueError):
    """A plug-in name that is neither known nor importable; the message names it and lists the known ones."""


def resolve(name: str, table: Mapping[str, Any], what: str, expect: type | Callable[[Any], bool] | None = None) -> Any:
    """`table[name]`, else the attribute named by "package.module:attr".

    `expect` (a type, or a predicate) checks what was imported; the default asks for a callable.
    Raises PluginError naming `what`, the name and the built-in choices.
    """
    if name in table:
        return table[name]
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        known = ", ".join(sorted(table)) or "none"
        raise PluginError(f"unknown {what} {name!r}; built-in: {known} (or package.module:attr)")
    try:
        value = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise PluginError(f"cannot import {what} {name!r}: {err}") from None
    if expect is None:
        ok, wanted = callable(value), "callable"
    elif isinstance(expect, type):
        ok, wanted = isinstance(value, expect), expect.__name__
    else:
        ok, wanted = expect(value), "valid " + what
    if not ok:
        raise PluginError(f"{what} {name!r} is a {type(value).__name__}, not a {wanted}")
    return value
