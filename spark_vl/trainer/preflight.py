"""Start-up checks: every mistake a user can make in the config or on the command line, found before a model loads.

`preflight(cfg, resume, is_main)` runs right after `config.validate` and raises `ConfigError` with one line that
names the key, the value and what to do; the CLI prints it and exits with code 2. A check belongs here when it
needs the file system, the installed packages or the hardware (`validate` is pure: it only reads the config).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from spark_vl.config import Config, ConfigError
from spark_vl.data.prompts import load_template
from spark_vl.data.sources import HUB_ID, split_spec
from spark_vl.models import BUILTIN_PREFIX
from spark_vl.models.export import list_checkpoints, resolve_checkpoint
from spark_vl.models.tiny import TINY_MODELS
from spark_vl.plugins import resolve
from spark_vl.rewards.score import REWARDS
from spark_vl.rollout import engine_class

# What a run writes into trainer.output_dir; `trainer.overwrite=true` deletes these before a fresh start.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "samples.jsonl", "tensorboard", "summary.md", "curves.png")
DATA_BUILTINS = ("builtin:synthetic",)
FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".arrow", ".csv", ".yaml", ".bin", ".safetensors")


def preflight(cfg: Config, resume: str | None, is_main: bool = True) -> None:
    """Raise ConfigError for the first problem found (see the module docstring)."""
    for key, specs in (("data.train", cfg.data.train), ("data.val", cfg.data.val)):
        for spec in specs:
            check_data_spec(key, spec)
    for entry in cfg.trainer.eval_benchmarks:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"trainer.eval_benchmarks entry {entry!r} must look like name=path")
        check_data_spec("trainer.eval_benchmarks", path)
    check_model_path(cfg.model.path)
    try:
        load_template(cfg.data.format_template)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.format_template={cfg.data.format_template!r}: {err}") from None
    try:
        resolve(cfg.reward.name, REWARDS, "reward")
        engine_class(cfg.rollout.backend)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_deepspeed_file(cfg.deepspeed.config_file)
    if cfg.trainer.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    check_output_dir(Path(cfg.trainer.output_dir), resume, cfg.trainer.overwrite, is_main)


def _local_typo(text: str) -> bool:
    """A path that cannot be a hub id `owner/name`: it starts like a path, has more parts, or its first part is a
    local folder (runs/exprt when runs/ exists)."""
    return (not HUB_ID.match(text) or text.startswith((".", "/", "~")) or text.endswith(FILE_SUFFIXES)
            or Path(text.split("/", 1)[0]).expanduser().exists())


def check_data_spec(key: str, spec: str) -> None:
    if spec in DATA_BUILTINS:
        return
    if spec.startswith("builtin:"):
        raise ConfigError(f"{key} entry {spec!r} is not a builtin dataset; known: {', '.join(DATA_BUILTINS)}")
    path, _ = split_spec(spec)
    if not Path(path).expanduser().exists() and _local_typo(path):
        raise ConfigError(f"{key} entry {spec!r} does not exist (expected a prepared folder, a parquet/json/jsonl "
                          "file, a datasets folder or a hub id owner/name)")


def check_model_path(path: str) -> None:
    if path.startswith(BUILTIN_PREFIX):
        if path[len(BUILTIN_PREFIX) :] not in TINY_MODELS:
            raise ConfigError(f"model.path={path!r} is not a builtin model; known: "
                              + ", ".join(BUILTIN_PREFIX + m for m in TINY_MODELS))
        return
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.path={path!r} is not a model folder (no config.json in it)")
        return
    if _local_typo(path):
        raise ConfigError(f"model.path={path!r} is neither a local folder nor a hub id owner/name")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise ConfigError(f"model.path={path!r} is not in the local hub cache and HF_HUB_OFFLINE is set")


def check_deepspeed_file(path: str | None) -> None:
    if path is None:
        return
    try:
        value = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"deepspeed.config_file={path!r} cannot be read: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"deepspeed.config_file={path!r} is not JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"deepspeed.config_file={path!r} must hold a JSON object")


def check_output_dir(run_dir: Path, resume: str | None, overwrite: bool, is_main: bool) -> None:
    """Writable; a fresh start never mixes with an earlier run's checkpoints and logs (refused unless
    trainer.overwrite, which deletes them first); `--resume` finds a complete checkpoint."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"trainer.output_dir={run_dir} is not writable: {err.strerror or err}") from None
    if resume is not None:
        try:
            resolve_checkpoint(resume, run_dir)
        except FileNotFoundError as err:
            hint = "; start without --resume" if resume == "latest" else ""
            raise ConfigError(f"--resume {resume}: {err}{hint}") from None
        return
    used = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if "checkpoints" in used and not any((run_dir / "checkpoints").iterdir()):
        used.remove("checkpoints")
    if not used:
        return
    if not overwrite:
        found = list_checkpoints(run_dir)
        what = f"checkpoints up to {found[-1].name}" if found else ", ".join(used)
        raise ConfigError(f"trainer.output_dir={run_dir} already holds a run ({what}); pass --resume latest to "
                          "continue it, or trainer.overwrite=true to delete it and start over")
    if is_main:
        for name in used:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()  # no rank starts writing before rank 0 has cleared the folder
