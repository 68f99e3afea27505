"""Read the weights of a spark-vl training checkpoint and write a Hugging Face model folder.

    spark-vl export runs/demo/checkpoints/step-000020 exported/      (or a run dir: its latest checkpoint)

`export_hf(checkpoint, out)` writes safetensors weights + processor + chat template + generation config that
`AutoModelForImageTextToText` / `AutoProcessor` (and vLLM) load as is. It lives below the trainer so that
evaluation can export a checkpoint on the fly without importing the training stack; the checkpoint layout it
reads (`<run>/checkpoints/step-NNNNNN/{engine/state, model_config, processor}`) is written by
`spark_vl.trainer.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

STEP_PREFIX = "step-"


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX))


def resolve_checkpoint(spec: str, run_dir: Path) -> Path:
    """`latest` -> newest complete checkpoint of `run_dir`; a run dir -> its newest; else the path itself."""
    path = Path(run_dir) if spec == "latest" else Path(spec)
    if (path / "engine").is_dir():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"no checkpoint found at {path} (expected {path}/checkpoints/{STEP_PREFIX}NNNNNN)")
    return found[-1]


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
