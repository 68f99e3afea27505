"""Resumable checkpoints.

A checkpoint `<run>/checkpoints/step-000012/` holds the DeepSpeed engine state (model, optimizer,
scheduler) under `engine/`, `trainer_state.pt` (step, sampler position, RNG states, algorithm state such
as the SPARK auxiliary queue), the model config and processor, and the resolved config. It is written
into a temporary folder and renamed when complete, so a crash never leaves a half checkpoint that
`--resume latest` would pick; only the last `keep_last` are kept.

Export to a Hugging Face folder is `spark_vl.models.export.export_hf`, which also owns the layout readers
(`list_checkpoints`, `resolve_checkpoint`) so that evaluation never imports the trainer.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spark_vl.models.export import STEP_PREFIX, list_checkpoints
from spark_vl.models.export import resolve_checkpoint as resolve_checkpoint  # re-exported for the loop's --resume


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{STEP_PREFIX}{step:06d}"


def save_checkpoint(engine, processor, run_dir: Path, step: int, trainer_state: dict, config_yaml: str,
                    keep_last: int, is_main: bool) -> Path:
    """Write a complete checkpoint atomically (every rank calls this; rank 0 renames and prunes)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    engine.save_checkpoint(str(tmp / "engine"), tag="state")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save({**trainer_state, "rng": rng_state()}, tmp / f"trainer_state_rank{rank}.pt")
    if is_main:
        engine.module.config.save_pretrained(tmp / "model_config")
        processor.save_pretrained(tmp / "processor")
        (tmp / "config.yaml").write_text(config_yaml)
    _barrier()
    if is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(engine, path: Path) -> dict:
    """Restore engine (model, optimizer, scheduler) and return this rank's trainer state (RNG restored)."""
    load_path, _ = engine.load_checkpoint(str(path / "engine"), tag="state")
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed could not load the engine state in {path / 'engine'}")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    file = path / f"trainer_state_rank{rank}.pt"
    if not file.is_file():
        raise FileNotFoundError(f"{file} missing: was the checkpoint written with a different number of processes?")
    state = torch.load(file, weights_only=False)
    set_rng_state(state.pop("rng"))
    return state


def _barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()
