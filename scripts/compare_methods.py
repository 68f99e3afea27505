"""GRPO, SPO, CHORD and DAPO on the builtin synthetic task: the same model, data, sample budget and seeds.

    python scripts/compare_methods.py --steps 150 --seeds 0 1 --out runs/compare

Each method is its CPU demo preset (configs/demo_cpu*.yaml: 32 sampled responses per rollout step for every
method) run for `--steps` rollout steps per seed, one after another (never in parallel: timings would be
meaningless). From each run's metrics.jsonl: held-out accuracy (64 unseen prompts, greedy) at every evaluation,
against the responses sampled so far (policy rollouts, SPO's first-visit samples and DAPO's refills all count)
and against wall time. Writes `compare.png` (accuracy vs samples and vs seconds, mean over seeds with each seed
faint) and `compare.md` (final accuracy per seed, mean and spread, samples and minutes), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {
    "GRPO": "configs/demo_cpu.yaml",
    "SPO": "configs/demo_cpu_spo.yaml",
    "CHORD": "configs/demo_cpu_chord.yaml",
    "DAPO": "configs/demo_cpu_dapo.yaml",
}


def run(config: str, out: Path, steps: int, seed: int) -> tuple[list[dict], float]:
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "spark_vl.cli", "train", "--config", config, f"trainer.output_dir={out}",
            f"trainer.rollout_steps={steps}", f"trainer.seed={seed}", f"data.seed={seed}",
            f"trainer.eval_every={max(1, steps // 6)}", "trainer.save_every=0", "logging.progress=false",
            "logging.tensorboard=false"]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{config} (seed {seed}) failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], seconds


def curve(history: list[dict]) -> list[tuple[float, float, float]]:
    """(samples drawn so far, seconds so far, held-out accuracy) at each evaluation."""
    samples = seconds = 0.0
    points = []
    for m in history:
        samples += sum(v for k, v in m.items() if k.endswith("rollout/responses") and not k.startswith("eval/"))
        seconds += m.get("time/step", 0.0)
        if "eval/accuracy" in m:
            points.append((samples, seconds, m["eval/accuracy"]))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args()
    results: dict[str, list[tuple[list, float]]] = {}
    for name in args.methods:
        for seed in args.seeds:
            history, seconds = run(METHODS[name], args.out / f"{name.lower()}-seed{seed}", args.steps, seed)
            results.setdefault(name, []).append((curve(history), seconds))
            final = curve(history)[-1][2]
            print(f"{name} seed {seed}: final accuracy {final:.3f}, {seconds / 60:.1f} min", flush=True)
    rows = ["| method | final held-out accuracy per seed | mean | spread (max - min) | responses sampled | "
            "wall minutes (mean) |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        finals = [points[-1][2] for points, _ in runs]
        rows.append(f"| {name} | {', '.join(f'{a:.3f}' for a in finals)} | {statistics.mean(finals):.3f} | "
                    f"{max(finals) - min(finals):.3f} | {int(runs[0][0][-1][0])} | "
                    f"{statistics.mean(s for _, s in runs) / 60:.1f} |")
    table = "\n".join(rows)
    print(table)
    (args.out / "compare.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in results.items():
        for axis, col, label in ((axes[0], 0, "responses sampled"), (axes[1], 1, "seconds")):
            for points, _ in runs:
                axis.plot([p[col] for p in points], [p[2] for p in points], alpha=0.25)
            mean = [statistics.mean(points[i][2] for points, _ in runs) for i in range(len(runs[0][0]))]
            axis.plot([p[col] for p in runs[0][0]], mean, marker="o", ms=3, label=name)
            axis.set_xlabel(label)
            axis.set_ylabel("held-out accuracy")
            axis.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out / "compare.png", dpi=100)
    print(f"wrote {args.out / 'compare.png'} and {args.out / 'compare.md'}")


if __name__ == "__main__":
    main()
