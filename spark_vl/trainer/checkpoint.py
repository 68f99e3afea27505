"""Resumable checkpoints and Hugging Face export.

A checkpoint `<run>/checkpoints/step-000012/` holds the DeepSpeed engine state (model, optimizer,
scheduler) under `engine/`, `trainer_state.pt` (step, sampler position, RNG states, algorithm state such
as the SPARK auxiliary queue), the model config and processor, and the resolved config. It is written
into a temporary folder and renamed when complete, so a crash never leaves a half checkpoint that
`--resume latest` would pick; only the last `keep_last` are kept.

`export_hf(checkpoint, out)` writes safetensors weights + processor + chat template + generation
config that `AutoModelForImageTextToText` / `AutoProcessor` (and vLLM) load as is.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEP_PREFIX = "step-"


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


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX))


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


def resolve_checkpoint(spec: str, run_dir: Path) -> Path:
    """`latest` -> newest complete checkpoint of `run_dir`; a run dir -> its newest; else the path itself."""
    path = Path(run_dir) if spec == "latest" else Path(spec)
    if (path / "engine").is_dir():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"no checkpoint found at {path} (expected {path}/checkpoints/{STEP_PREFIX}NNNNNN)")
    return found[-1]


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


def consolidated_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Full fp32 weights from a checkpoint of any ZeRO stage."""
    engine_dir = Path(path) / "engine" / "state"
    if any(engine_dir.glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(Path(path) / "engine"), tag="state")
    states = sorted(engine_dir.glob("mp_rank_*_model_states.pt"))
    if not states:
        raise FileNotFoundError(f"no model states in {engine_dir}")
    return {k: v.float() for k, v in torch.load(states[0], map_location="cpu", weights_only=False)["module"].items()}


def export_hf(checkpoint: str | Path, out: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write a Hugging Face folder (safetensors, processor, chat template, generation config)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    ckpt = resolve_checkpoint(str(checkpoint), Path(checkpoint))
    out = Path(out)
    config = AutoConfig.from_pretrained(ckpt / "model_config")
    state = consolidated_state_dict(ckpt)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k, v in model.state_dict().items() if v.device.type == "meta"]
    if missing:
        raise ValueError(f"checkpoint {ckpt} lacks weights for {missing[:5]} ...")
    model.tie_weights()
    if dtype is not None:
        model = model.to(dtype)
    processor = AutoProcessor.from_pretrained(ckpt / "processor")
    out.mkdir(parents=True, exist_ok=True)
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
