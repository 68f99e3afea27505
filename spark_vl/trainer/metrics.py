"""Step metrics and run outputs: `Means` (reduced across ranks), per-group rollout metrics, example rollouts,
metrics.jsonl, TensorBoard events, optional wandb and PNG plots.

Only the main process writes. Each `log(step, metrics)` appends one JSON line {"step": k, ...}.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from spark_vl.trainer.distributed import all_gather_objects, all_reduce_sum
from spark_vl.types import RolloutGroup

MAIN_CURVES = [
    ("reward/mean", "reward"),
    ("reward/accuracy", "accuracy"),
    ("eval/accuracy", "held-out accuracy"),
    ("response/length_mean", "response length"),
    ("loss/policy", "policy loss"),
    ("loss/sft", "supervised loss"),
    ("actor/entropy", "entropy"),
    ("actor/kl", "KL to reference"),
    ("actor/grad_norm", "grad norm"),
    ("actor/lr", "learning rate"),
]


class Means:
    """Named metrics of one step, reduced across ranks in one call: `add` gives a mean (sum / count over every
    rank), `total` a global sum (e.g. items trained this step, all ranks), `maximum` the largest value."""

    def __init__(self):
        self.sums: Counter = Counter()
        self.counts: Counter = Counter()
        self.totals: Counter = Counter()
        self.maxima: dict[str, float] = {}

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        self.sums[name] += float(total)
        self.counts[name] += float(count)

    def total(self, name: str, value: float) -> None:
        self.totals[name] += float(value)

    def maximum(self, name: str, value: float) -> None:
        self.maxima[name] = max(self.maxima.get(name, float("-inf")), float(value))

    def reduce(self, device) -> dict[str, float]:
        # Ranks may hold different names (a rank without auxiliary items, a category only one rank saw): reduce
        # over the union, so every rank joins the same all-reduce. Maxima travel with the names.
        gathered = all_gather_objects((list(self.sums), list(self.totals), self.maxima))
        names, summed = (sorted(set().union(*parts)) for parts in zip(*[g[:2] for g in gathered]))
        maxima: dict[str, float] = {}
        for part in (g[2] for g in gathered):
            for n, v in part.items():
                maxima[n] = max(maxima.get(n, float("-inf")), v)
        flat = all_reduce_sum([self.sums[n] for n in names] + [self.counts[n] for n in names]
                              + [self.totals[n] for n in summed], device)
        k = len(names)
        out = {n: flat[i] / flat[k + i] if flat[k + i] else float("nan") for i, n in enumerate(names)}
        out.update({n: flat[2 * k + i] for i, n in enumerate(summed)})
        out.update(maxima)
        return out


def record_group_metrics(groups: list[RolloutGroup], prefix: str, metrics: Means) -> None:
    for g in groups:
        metrics.add(f"{prefix}groups/zero_variance", float(len(set(g.rewards)) <= 1))
        for r in g.rollouts:
            out = r.reward
            metrics.add(f"{prefix}reward/mean", out.overall if out else 0.0)
            metrics.add(f"{prefix}reward/accuracy", float(out.correct) if out else 0.0)
            if out and "format" in out.parts:
                metrics.add(f"{prefix}reward/format", out.parts["format"])
            if out and "judge" in out.parts:
                metrics.add(f"{prefix}reward/judge", out.parts["judge"])
            metrics.total(f"{prefix}reward/verifier_timeouts", out.verifier_timeouts if out else 0)
            metrics.total(f"{prefix}reward/symbolic_checks", float(out.verifier_symbolic) if out else 0.0)
            metrics.add(f"{prefix}response/length_mean", len(r.token_ids))
            metrics.add(f"{prefix}response/truncated", float(r.finish_reason == "length"))


def _step_of(line: str) -> int | None:
    """The step of a metrics/samples line, None for a line that is not a whole record (torn by a kill)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def write_samples(path: Path, step: int, groups: list[RolloutGroup], k: int = 4) -> None:
    """Append the first rollout of up to k groups: what the model saw, wrote and was rewarded."""
    with path.open("a") as f:
        for g in groups[:k]:
            r = g.rollouts[0] if g.rollouts else None
            if r is None:
                continue
            text = [c.get("text", "<image>") for msg in g.prompt.messages
                    for c in (msg["content"] if isinstance(msg["content"], list) else [{"text": msg["content"]}])]
            f.write(json.dumps({
                "step": step, "uid": g.prompt.uid, "kind": g.prompt.kind, "prompt": " ".join(text),
                "label": g.prompt.label, "response": r.text, "extracted": r.reward.extracted if r.reward else None,
                "reward": r.reward.parts if r.reward else None, "finish_reason": r.finish_reason,
            }) + "\n")


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True, wandb_project: str | None = None,
                 config: dict | None = None, resume_step: int = 0):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        for path in (self.path, self.run_dir / "samples.jsonl"):
            if resume_step and path.exists():
                # A resumed run rewrites history after the checkpoint step, so the files never have duplicates;
                # a line torn by a kill mid-write is dropped.
                steps = [(line, _step_of(line)) for line in path.read_text(errors="replace").splitlines()]
                kept = [line for line, step in steps if step is not None and step <= resume_step]
                path.write_text("".join(line + "\n" for line in kept))
            elif path.exists():
                path.unlink()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step else None  # drop events logged after the checkpoint
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge)
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(self.run_dir), resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in sorted(metrics.items())}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}, allow_nan=True) + "\n")
        if self.tb is not None:
            for k, v in clean.items():
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(clean, step=step)

    def history(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if _step_of(line) is not None]

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def plot_curves(history: list[dict], out: Path) -> Path | None:
    """One PNG with a panel per main curve present in the history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in MAIN_CURVES if any(key in h for h in history)]
    if not panels:
        return None
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        pts = [(h["step"], h[key]) for h in history if key in h and isinstance(h[key], (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
