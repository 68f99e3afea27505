"""Rollout engines: `generate(prompts, n, sampling) -> list[RolloutGroup]`, one group per prompt, in order.

Backends are found by name in `ENGINES` (or as "package.module:Class"), and `make_engine(cfg.rollout, ...)`
builds one wherever generation happens (training, SPARK's frozen initial model, evaluation, difficulty
estimation). The HF backend (transformers.generate) is the reference and the CPU path. An engine that
holds its own copy of the weights (the colocated vLLM of `rollout/vllm.py`) receives new weights through
`sync_weights(model)` after each update and frees its memory with `sleep()` / `wake()` around it; for the HF
backend, which generates with the training module itself, those are no-ops. The vLLM backend is registered by
its import path, so importing this package never imports vLLM.

A backend is a class taking `(model, processor, cfg: RolloutConfig, synced_gpus: bool)`.
"""

from __future__ import annotations

import importlib.util
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


ENGINES: dict[str, type | str] = {"hf": HFEngine, "vllm": "spark_vl.rollout.vllm:VLLMEngine"}


def engine_class(backend: str) -> type:
    """The backend class named `backend`; raises PluginError (a ValueError) naming the problem. Called before
    any model is loaded, so a wrong name (or a missing vLLM) fails in a second."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise PluginError("rollout.backend=vllm needs vLLM: pip install -e '.[vllm]' on a GPU machine "
                          "(or bash scripts/setup_vllm_cpu.sh for a CPU virtualenv), or use rollout.backend=hf")
    target = ENGINES.get(backend, backend)
    if isinstance(target, type):
        return target
    return resolve(target, {}, "rollout backend", expect=lambda value: isinstance(value, type))


def make_engine(cfg: RolloutConfig, model, processor, synced_gpus: bool = False) -> RolloutEngine:
    """The rollout engine named by `cfg.backend`, around the (unwrapped) model. `synced_gpus`: ZeRO-3 with
    several ranks, where every forward pass is a collective."""
    return engine_class(cfg.backend)(model, processor, cfg, synced_gpus)
