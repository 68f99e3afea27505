"""Resumable checkpoints.

A checkpoint `<run>/checkpoints/step-000012/` holds the DeepSpeed engine state (model, optimizer,
scheduler) under `engine/`, `trainer_state_rank<k>.pt` (step, sampler position, RNG states, algorithm state such
as the SPARK auxiliary queue, all as plain values), the model config and processor, the resolved config, and
last a `COMPLETE` marker. It is written into a temporary folder and renamed when complete; a checkpoint of the
same step is replaced by renaming the old one aside, the new one in, then deleting the old one, so a crash at
any point leaves a complete checkpoint under the step's name or aside, never a half one that `--resume latest`
or `export` would pick (they only take folders with the marker). Only the last `keep_last` are kept, by step.

Loading runs no code: every file is read with `torch.load(weights_only=True)` (DeepSpeed's own loads included,
see `spark_vl.models.export.weights_only_loads`), after checking that its pickle names no global outside the
allow-list. docs/RELIABILITY.md says exactly what is trusted.

Export to a Hugging Face folder is `spark_vl.models.export.export_hf`, which also owns the layout readers
(`list_checkpoints`, `resolve_checkpoint`) so that evaluation never imports the trainer.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spark_vl.models.export import (
    COMPLETE,
    STEP_PREFIX,
    check_no_code,
    list_checkpoints,
    load_plain,
    weights_only_loads,
)
from spark_vl.models.export import resolve_checkpoint as resolve_checkpoint  # re-exported for the loop's --resume


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)  # a dict; its key array as a list: plain values only
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{STEP_PREFIX}{step:06d}"


def save_checkpoint(engine, processor, run_dir: Path, step: int, trainer_state: dict, config_yaml: str,
                    keep_last: int, is_main: bool) -> Path:
    """Write a complete checkpoint atomically (every rank calls this; rank 0 renames and prunes). Dataclass
    values of `trainer_state` are stored as dicts (`load_checkpoint` returns them as dicts)."""
    trainer_state = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in trainer_state.items()}
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
        (tmp / COMPLETE).write_text(f"step {step}\n")
        replace_dir(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def replace_dir(new: Path, final: Path) -> None:
    """Move `new` to `final`; an existing `final` is renamed aside first and deleted only after, so a crash in
    between leaves it aside (`.old-step-...`, still complete) rather than no checkpoint at all."""
    aside = final.with_name(f".old-{final.name}")
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        final.rename(aside)
    new.rename(final)
    if aside.exists():
        shutil.rmtree(aside)


def load_checkpoint(engine, path: Path) -> dict:
    """Restore engine (model, optimizer, scheduler) and return this rank's trainer state (RNG restored); nothing in
    the checkpoint can run code (CheckpointError names the file that tries)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    file = path / f"trainer_state_rank{rank}.pt"
    if not file.is_file():
        raise FileNotFoundError(f"{file} missing: was the checkpoint written with a different number of processes?")
    check_no_code([file, *sorted((path / "engine" / "state").glob("*.pt"))])
    with weights_only_loads():
        load_path, _ = engine.load_checkpoint(str(path / "engine"), tag="state")
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed could not load the engine state in {path / 'engine'}")
    state = load_plain(file)
    set_rng_state(state.pop("rng"))
    return state


def _barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()
