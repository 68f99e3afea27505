"""Rollout engines: `generate(prompts, n, sampling) -> list[RolloutGroup]`, one group per prompt, in order.

Backends are found by name in `ENGINES` (or as "package.module:Class"), and `make_engine(cfg.rollout, ...)`
builds one wherever generation happens (training, SPARK's frozen initial model, evaluation, difficulty
estimation). The HF backend (transformers.generate) is the reference and the CPU path. An engine that
holds its own copy of the weights (a colocated vLLM) receives new weights through `sync_weights(model)`
after each update and frees its memory with `sleep()` / `wake()` around it; for the HF backend, which
generates with the training module itself, those are no-ops.

A backend is a class taking `(model, processor, cfg: RolloutConfig, synced_gpus: bool)`.
"""

from __future__ import annotations

from typing import Protocol

from spark_vl.config import RolloutConfig
from spark_vl.plugins import PluginError, resolve
from spark_vl.rollout.hf import HFEngine
from spark_vl.types import Prompt, RolloutGroup, SamplingParams


class RolloutEngine(Protocol):
    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]: ...

    def sync_weights(self, model) -> None: ...

    def sleep(self) -> None: ...

    def wake(self) -> None: ...


ENGINES = {"hf": HFEngine}


def engine_class(backend: str) -> type:
    """The backend class named `backend`; raises PluginError (a ValueError) naming the problem. Called before
    any model is loaded, so a wrong name fails in a second."""
    if backend == "vllm" and "vllm" not in ENGINES:
        raise PluginError("rollout.backend=vllm is not implemented yet; use rollout.backend=hf")
    return resolve(backend, ENGINES, "rollout backend", expect=lambda value: isinstance(value, type))


def make_engine(cfg: RolloutConfig, model, processor, synced_gpus: bool = False) -> RolloutEngine:
    """The rollout engine named by `cfg.backend`, around the (unwrapped) model. `synced_gpus`: ZeRO-3 with
    several ranks, where every forward pass is a collective."""
    return engine_class(cfg.backend)(model, processor, cfg, synced_gpus)
