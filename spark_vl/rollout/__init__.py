"""Rollout engines: `generate(prompts, n, sampling) -> list[RolloutGroup]`, one group per prompt, in order.

Backends are found by name in `ENGINES`. The HF backend (transformers.generate) is the reference and the
CPU path; a vLLM backend colocated in the training processes plugs in with the same interface: it
receives new weights through `sync_weights(model)` after each update and frees its memory with
`sleep()` / `wake()` around the update. For the HF backend those are no-ops (it generates with the
training module itself).
"""

from __future__ import annotations

from typing import Protocol

from spark_vl.types import Prompt, RolloutGroup, SamplingParams


class RolloutEngine(Protocol):
    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]: ...

    def sync_weights(self, model) -> None: ...

    def sleep(self) -> None: ...

    def wake(self) -> None: ...


def make_engine(backend: str, model, processor, generation_batch_size: int = 64, synced_gpus: bool = False):
    """Build the rollout engine named `backend` around the (unwrapped) training model."""
    if backend == "hf":
        from spark_vl.rollout.hf import HFEngine

        return HFEngine(model, processor, generation_batch_size=generation_batch_size, synced_gpus=synced_gpus)
    if backend == "vllm":
        raise NotImplementedError(
            "rollout.backend=vllm is not implemented yet; use rollout.backend=hf"
        )
    raise ValueError(f"unknown rollout backend {backend!r}; known: hf, vllm")
