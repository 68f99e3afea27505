"""Seconds per training step and peak memory on a builtin tiny model, with the phase breakdown.

Fixed workload: 4 prompts x 4 samples, 32 new tokens (the random model never stops early, so every
response is exactly 32 tokens), one optimizer step per rollout step, no supervised term, CPU, ZeRO-0.

    python scripts/bench_step.py --steps 10 [--model builtin:tiny-qwen3-vl]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="builtin:tiny-qwen2.5-vl")
    args = parser.parse_args()
    import torch

    from spark_vl.config import load_config
    from spark_vl.trainer.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs/demo_cpu.yaml", [
            f"model.path={args.model}", f"trainer.output_dir={tmp}/run", f"trainer.rollout_steps={args.steps}",
            "trainer.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=32",
            "trainer.sequences_per_optimizer_step=16", "trainer.micro_batch_size=8", "algorithm.sft_coef=0",
            "algorithm.sft_prompts_per_step=0", "trainer.eval_every=0", "data.val_size=0",
            "logging.progress=false", "logging.tensorboard=false",
        ])
        run = train(cfg)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] > 1]  # step 1 includes one-off warm-up (allocator, kernels)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    phases = ["rollout", "reward", "logprobs", "update"]
    print(f"# training step, {args.model}, 4 prompts x 4 samples x 32 new tokens, CPU ZeRO-0 fp32")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads; date {date.today()}; "
          f"steps measured: {len(steps)} (after 1 warm-up)")
    print("| phase | seconds per step (median) |")
    print("|---|---|")
    for p in phases:
        print(f"| {p} | {statistics.median(r[f'time/{p}'] for r in steps):.3f} |")
    print(f"| **total step** | **{statistics.median(r['time/step'] for r in steps):.3f}** |")
    print(f"peak resident memory of the process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
