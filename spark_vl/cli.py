"""The `spark-vl` command: train | eval | data | export | plan.

    spark-vl train --config configs/demo_cpu.yaml trainer.rollout_steps=10
    spark-vl train --config configs/demo_cpu.yaml --resume latest
    spark-vl export runs/demo/checkpoints/step-000020 exported/
    spark-vl eval --model exported/ --benchmarks mathvista ...      (spark_vl.eval.cli)
    spark-vl data prepare geometry3k --source ... --out ...           (spark_vl.prep.cli)
    spark-vl plan --config configs/qwen2_5_vl/7b_grpo.yaml --gpus-per-node 8   (spark_vl.plan: memory plan)

A bad config exits with code 2 and one line naming the key; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from spark_vl.config import ConfigError


def _train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spark-vl train", description="Run RL training from a YAML config.")
    parser.add_argument("--config", help="YAML preset (configs/*.yaml)")
    parser.add_argument("--resume", help="checkpoint dir, or 'latest' to continue the run in trainer.output_dir")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    from spark_vl.config import load_config

    cfg = load_config(args.config, args.overrides)
    from spark_vl.trainer.loop import train

    train(cfg, resume=args.resume)
    return 0


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spark-vl export", description="Write a Hugging Face model folder.")
    parser.add_argument("checkpoint", help="a checkpoint dir written by spark-vl train (or a run dir: its latest)")
    parser.add_argument("out", help="output folder")
    args = parser.parse_args(argv)
    from spark_vl.models.export import CheckpointError, export_hf  # torch and transformers: only for this command

    try:
        path = export_hf(args.checkpoint, args.out)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"spark-vl export: {err}", file=sys.stderr)
        return 1
    print(f"exported {path}")
    return 0


def _delegate(module: str, argv: list[str]) -> int:
    import importlib

    return int(importlib.import_module(module).main(argv) or 0)


COMMANDS = {
    "train": _train,
    "export": _export,
    "eval": lambda argv: _delegate("spark_vl.eval.cli", argv),
    "data": lambda argv: _delegate("spark_vl.prep.cli", argv),
    "plan": lambda argv: _delegate("spark_vl.plan", argv),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and argv[0].startswith(("--local_rank=", "--local-rank=")):
        argv.pop(0)  # the deepspeed launcher puts it before the command; the rank is read from LOCAL_RANK
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = " | ".join(COMMANDS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"spark-vl: unknown command {argv[0]!r}; choose one of: {known}", file=sys.stderr)
            return 2
        print(f"usage: spark-vl {{{known}}} [...]\n\n{__doc__}")
        return 0
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ConfigError as err:
        print(f"spark-vl: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
