"""Read the weights of a spark-vl training checkpoint and write a Hugging Face model folder.

    spark-vl export runs/demo/checkpoints/step-000020 exported/      (or a run dir: its latest checkpoint)

`export_hf(checkpoint, out)` writes safetensors weights + processor + chat template + generation config that
`AutoModelForImageTextToText` / `AutoProcessor` (and vLLM) load as is. It lives below the trainer so that
evaluation can export a checkpoint on the fly without importing the training stack; the checkpoint layout it
reads (`<run>/checkpoints/step-NNNNNN/{engine/state, model_config, processor}`) is written by
`spark_vl.trainer.checkpoint`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

STEP_PREFIX = "step-"
COMPLETE = "COMPLETE"  # written last into a checkpoint folder; a folder without it is never resumed or exported


class CheckpointError(RuntimeError):
    """A checkpoint file that must not be loaded (it holds objects a spark-vl checkpoint never contains)."""


def _step(path: Path) -> int | None:
    digits = path.name[len(STEP_PREFIX) :]
    return int(digits) if path.name.startswith(STEP_PREFIX) and digits.isdigit() else None


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (by step number, not by name)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step(p) is not None and is_complete(p)]
    return sorted(found, key=_step)


def resolve_checkpoint(spec: str, run_dir: Path) -> Path:
    """`latest` -> newest complete checkpoint of `run_dir`; a run dir -> its newest; else the path itself."""
    path = Path(run_dir) if spec == "latest" else Path(spec)
    if (path / "engine").is_dir():
        if not is_complete(path):
            raise FileNotFoundError(f"{path} is an incomplete checkpoint (no {COMPLETE} marker: the run was stopped "
                                    "while writing it); use an earlier one or the run folder")
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint found at {path} "
                                f"(expected {path}/checkpoints/{STEP_PREFIX}NNNNNN/{COMPLETE})")
    return found[-1]


# ---------------------------------------------------------------------------------------------------------------
# Loading without running code. torch.load(weights_only=True) rebuilds tensors, containers and plain values only;
# the few classes DeepSpeed pickles into its optimizer states are allowed by name. Our own trainer state is plain
# values (checkpoint.py), so it needs nothing beyond the defaults.


def _deepspeed_globals() -> list:
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def check_no_code(files: list[Path]) -> None:
    """Raise CheckpointError naming the first file whose pickle refers to anything outside the allowed globals
    (read from the pickle's opcodes, without unpickling it)."""
    allowed = {_qualname(g) for g in _deepspeed_globals()}
    for file in files:
        try:
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(file) if g not in allowed]
        except (RuntimeError, ValueError, OSError):
            continue  # not a zip checkpoint: the forced weights_only load below still refuses code
        if unsafe:
            raise CheckpointError(f"{file} refers to {', '.join(sorted(unsafe)[:5])}, which a spark-vl checkpoint "
                                  "never holds; refusing to load it (was it modified?)")


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every torch.load inside, including DeepSpeed's own (which pass weights_only=False), runs with
    weights_only=True and only DeepSpeed's optimizer-state classes allowed besides tensors and plain values."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            yield
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refusing to load a checkpoint file that is not plain tensors and values: "
                              f"{str(err).splitlines()[0]}") from None
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def load_plain(file: Path, map_location="cpu"):
    """torch.load of a file we wrote (tensors and plain values only); CheckpointError naming it otherwise."""
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{file} holds objects a spark-vl checkpoint never contains; refusing to load it "
                              f"(was it modified?): {str(err).splitlines()[0]}") from None


def consolidated_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Full fp32 weights from a checkpoint of any ZeRO stage."""
    engine_dir = Path(path) / "engine" / "state"
    check_no_code(sorted(engine_dir.glob("*.pt")))
    if any(engine_dir.glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with weights_only_loads():
            return get_fp32_state_dict_from_zero_checkpoint(str(Path(path) / "engine"), tag="state")
    states = sorted(engine_dir.glob("mp_rank_*_model_states.pt"))
    if not states:
        raise FileNotFoundError(f"no model states in {engine_dir}")
    return {k: v.float() for k, v in load_plain(states[0])["module"].items()}


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
