"""The human-readable end of a run: summary.md and curves.png in the run directory."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from spark_vl.config import Config, Derived
from spark_vl.trainer.metrics import plot_curves

KEY_METRICS = ["reward/mean", "reward/accuracy", "reward/format", "response/length_mean", "actor/entropy",
               "actor/kl", "actor/clipfrac", "actor/grad_norm", "actor/lr", "loss/policy", "loss/sft", "time/step"]


JUDGE_COLUMNS = ["eval/judge_accuracy", "eval/judge_auc", "eval/judge_pairwise_accuracy"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_report(cfg: Config, run_dir: Path, history: list[dict], plan: Derived, seconds: float,
                 skipped: Counter, state, spark_summary: str | None = None,
                 skipped_examples: list[tuple[str, str]] | None = None) -> Path:
    run_dir = Path(run_dir)
    plot = plot_curves(history, run_dir / "curves.png")
    evals = [h for h in history if "eval/accuracy" in h]
    last = history[-1] if history else {}
    lines = [
        f"# spark-vl run: {run_dir.name}",
        "",
        f"- model: `{cfg.model.path}`; data: {', '.join(f'`{d}`' for d in cfg.data.train)}",
        f"- algorithm: advantage `{cfg.algorithm.advantage}`, loss `{cfg.algorithm.policy_loss}` "
        f"({cfg.algorithm.loss_agg}), kl_coef {cfg.algorithm.kl_coef}, sft_coef {cfg.algorithm.sft_coef}, "
        f"SPARK {'on (' + cfg.spark.schedule + ')' if cfg.spark.enabled else 'off'}",
        f"- steps: {state.step} rollout steps x {cfg.trainer.prompts_per_step} prompts x "
        f"{cfg.rollout.samples_per_prompt} samples; {state.optimizer_steps} optimizer steps "
        f"(planned {plan.total_optimizer_steps}); skipped updates (non-finite loss): {state.skipped_updates}",
        f"- world size {plan.world_size}, gradient accumulation {plan.grad_accum_steps}, ZeRO stage "
        f"{cfg.deepspeed.zero_stage}",
        f"- wall time: {seconds / 60:.1f} min",
        f"- skipped rows: {sum(skipped.values())}" + (f" ({dict(skipped)})" if skipped else ""),
        "",
    ]
    if evals:
        lines += _eval_section(cfg, evals)
    lines += ["## Final step metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(last[k])} |" for k in KEY_METRICS if k in last]
    if skipped_examples:
        lines += ["", "## Skipped rows (first 20)", "", "| row | reason |", "|---|---|"]
        lines += [f"| {row} | {reason} |" for row, reason in skipped_examples[:20]]
    if spark_summary:
        lines += ["", "## SPARK", "", spark_summary]
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    lines += [
        "",
        "## Files",
        "",
        f"- checkpoint: `{ckpts[-1]}`" if ckpts else "- checkpoint: none",
        "- metrics: `metrics.jsonl`, TensorBoard events in `tensorboard/`",
        f"- curves: `{plot.name}`" if plot else "- curves: none",
        "- resolved config: `config.yaml`",
        "",
    ]
    out = run_dir / "summary.md"
    out.write_text("\n".join(lines))
    return out


def _eval_section(cfg: Config, evals: list[dict]) -> list[str]:
    """The held-out table (with the judge's columns when the run measured its own judge) and before/after lines."""
    judge = any("eval/judge_auc" in h for h in evals)
    nan = float("nan")
    head = "| step | accuracy | format | mean length |"
    if judge:
        head += " judge accuracy | judge AUC | pairwise judge accuracy |"
    rows = []
    for h in evals:
        row = f"| {h['step']} | {_fmt(h['eval/accuracy'])} | {_fmt(h.get('eval/format', nan))} | " \
              f"{_fmt(h.get('eval/length', nan))} |"
        if judge:
            row += "".join(f" {_fmt(h.get(k, nan))} |" for k in JUDGE_COLUMNS)
        rows.append(row)
    first, final = evals[0], evals[-1]
    lines = ["## Held-out accuracy", "", head, "|---" * head.count(" |") + "|", *rows, "",
             f"Before training: **{first['eval/accuracy']:.3f}**, after: **{final['eval/accuracy']:.3f}** "
             f"({len_val(cfg)} held-out prompts, greedy).", ""]
    if judge:
        acc = [h.get("eval/judge_accuracy", nan) for h in (first, final)]
        auc = [h.get("eval/judge_auc", nan) for h in (first, final)]
        lines += [f"Own judge (P(Yes) on the gold vs another row's answer, chance 0.5): accuracy "
                  f"**{acc[0]:.3f}** -> **{acc[1]:.3f}**, AUC **{auc[0]:.3f}** -> **{auc[1]:.3f}**.", ""]
    return lines


def len_val(cfg: Config) -> int:
    return cfg.data.val_size
