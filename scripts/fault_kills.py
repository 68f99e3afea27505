"""Kill a training run at random moments, resume it each time, and compare with a run never killed
(docs/RELIABILITY.md, item 2).

    python scripts/fault_kills.py --kills 4 --seed 0

The run (the CPU demo, shortened: 6 steps, a checkpoint every step) is started as `spark-vl train`, sent SIGKILL
after a random delay, then restarted with `--resume latest` (or, killed before its first checkpoint, with
`trainer.overwrite=true`, as the refusal message says), until it finishes. Prints each kill and, at the end, the
metrics that differ from the uninterrupted run (none expected; `time/*` ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

FAST = ["data.synthetic_size=64", "data.val_size=8", "data.max_prompt_length=256", "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=8", "trainer.prompts_per_step=4", "trainer.sequences_per_optimizer_step=4",
        "trainer.micro_batch_size=2", "algorithm.sft_prompts_per_step=2", "algorithm.sft_coef=1.0",
        "trainer.eval_every=0", "trainer.eval_max_new_tokens=8", "logging.progress=false",
        "trainer.rollout_steps=6", "trainer.save_every=1", "trainer.keep_last=2"]


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu.yaml", *FAST,
            f"trainer.output_dir={out}", *extra]


def metrics(run: Path) -> dict[int, dict]:
    return {m["step"]: m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def same(x, y) -> bool:
    """Equal up to float summation order (rel 1e-6, as the resume test); NaN equals NaN."""
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7)
    return x == y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=40.0, help="seconds after a (re)start")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        full, killed = Path(tmp) / "full", Path(tmp) / "killed"
        subprocess.run(command(full), check=True, capture_output=True)
        kills, extra = 0, []
        while True:
            proc = subprocess.Popen(command(killed, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            delay = rng.uniform(5.0, args.max_delay) if kills < args.kills else None
            try:
                _, err = proc.communicate(timeout=delay)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.communicate()
                kills += 1
                done = sorted(p.name for p in (killed / "checkpoints").glob("step-*")) if killed.exists() else []
                print(f"kill {kills} after {delay:.1f} s; checkpoints on disk: {done}")
                has_checkpoint = any((killed / "checkpoints").glob("step-*/COMPLETE"))
                extra = ["--resume", "latest"] if has_checkpoint else ["trainer.overwrite=true"]
                continue
            if proc.returncode != 0:
                raise SystemExit(f"restart failed:\n{err[-2000:]}")
            break
        a, b = metrics(full), metrics(killed)
        differ = [(s, k) for s in a for k in a[s]
                  if not k.startswith("time/") and not same(a[s][k], b.get(s, {}).get(k))]
        print(f"{kills} kills survived; steps {sorted(b)}; {len(differ)} metric values differ from the uninterrupted "
              f"run ({sum(len(m) for m in a.values())} compared){': ' + str(differ[:10]) if differ else ''}")


if __name__ == "__main__":
    main()
