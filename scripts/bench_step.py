"""Seconds per training step of spark-vl, and of TRL's GRPOTrainer on the same model, data and settings.

Workload (issue 17): 4 prompts x 4 samples x 32 new tokens on the builtin synthetic picture tasks, KL to a frozen
reference (beta 0.04, k3), lr 1e-5, clip 0.2 / 0.28, token-mean loss, one optimizer step per rollout step (one
epoch, one mini-batch), gradient checkpointing off, fp32 on CPU. Both frameworks load the same local checkpoint
folder (`--model`; a builtin tiny model is first written to a folder with `save_pretrained`).

With `--trl-python` (an interpreter that can import trl and spark_vl, e.g. a scratch virtualenv made with
`python -m venv --system-site-packages /tmp/trl && /tmp/trl/bin/pip install trl==1.16.0`), the two run
interleaved: `--rounds` rounds, each one spark-vl process and one TRL process of `--steps` steps (every other
round in reverse order); the first step of every process is warm-up and not counted, and every step is timed end
to end (from one logged step to the next: fetching data and logging included). Prints per-phase medians for
spark-vl, the step medians of both, completions per second and the ratio, overall and per round. `--before DIR`
adds an earlier spark-vl checkout (`git worktree add DIR <commit>`), run from this script with `PYTHONPATH=DIR`,
interleaved too: the before/after of a change.

    python scripts/bench_step.py --steps 12 --rounds 3 --trl-python /tmp/trl/bin/python
    python scripts/bench_step.py --workload demo --before /tmp/before        # configs/demo_cpu.yaml as shipped
    python scripts/bench_step.py --workload spark-demo --before /tmp/before  # the SPARK demo, auxiliary phases too
    python scripts/bench_step.py --draw 4    # one step's data: drawn together vs one row at a time, in one process
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, SAMPLES, NEW_TOKENS, BETA, LR = 4, 4, 32, 0.04, 1e-5

WORKLOADS = {  # name -> (config file, overrides); TRL runs issue17 only
    "issue17": ("configs/demo_cpu.yaml", [
        f"trainer.prompts_per_step={PROMPTS}", f"rollout.samples_per_prompt={SAMPLES}",
        f"rollout.max_new_tokens={NEW_TOKENS}", f"trainer.sequences_per_optimizer_step={PROMPTS * SAMPLES}",
        f"trainer.micro_batch_size={PROMPTS * SAMPLES}", "algorithm.sft_coef=0", "algorithm.sft_prompts_per_step=0",
        f"algorithm.kl_coef={BETA}", "algorithm.kl_estimator=k3", f"trainer.lr={LR}", "trainer.warmup_ratio=0",
        "trainer.min_lr_ratio=1.0",
    ]),
    "demo": ("configs/demo_cpu.yaml", []),  # as shipped: 8 prompts x 4 samples x 24 tokens, supervised term on
    "spark-demo": ("configs/demo_cpu_spark.yaml", []),  # SPARK alternate: policy step + auxiliary phase
}


def save_model(model: str, folder: Path) -> str:
    """A local checkpoint folder for `model` (a builtin tiny model is written with save_pretrained)."""
    if not model.startswith("builtin:"):
        return model
    from spark_vl.models.tiny import build_tiny

    net, processor = build_tiny(model.removeprefix("builtin:"))
    net.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


# -- workers: one process per measurement ------------------------------------------------------------------------
def run_spark(model: str, steps: int, workload: str, out: Path, extra: list[str]) -> None:
    from spark_vl.config import load_config
    from spark_vl.trainer.loop import train
    from spark_vl.trainer.metrics import MetricsLogger

    ends: list[float] = []  # when each training step's row was logged: the end of its whole cycle
    log = MetricsLogger.log

    def timed_log(self, step, metrics):
        log(self, step, metrics)
        if step >= 1:
            ends.append(time.perf_counter())

    MetricsLogger.log = timed_log
    config, overrides = WORKLOADS[workload]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / config, [
            f"model.path={model}", f"trainer.output_dir={tmp}/run", f"trainer.rollout_steps={steps}",
            "trainer.eval_every=0", "data.val_size=0", "trainer.save_every=0", "logging.progress=false",
            "logging.tensorboard=false", *overrides, *extra,
        ])
        rows = [json.loads(line) for line in (train(cfg) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > 1]  # step 0 is the evaluation row, step 1 the warm-up
    out.write_text(json.dumps({
        "step": [b - a for a, b in zip(ends, ends[1:])],  # end to end: sampling prompts to logging, all included
        "inside": [r["time/step"] for r in rows],
        "phases": {p: [r[f"time/{p}"] for r in rows if f"time/{p}" in r]
                   for p in ("rollout", "reward", "logprobs", "update", "aux/rollout", "aux/reward", "aux/logprobs",
                             "aux/update")},
        "length": [r["response/length_mean"] for r in rows],
        "sequences": [r["rollout/responses"] for r in rows],
    }))


def run_trl(model: str, steps: int, out: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from spark_vl.config import RewardConfig
    from spark_vl.data.prompts import build_prompt
    from spark_vl.data.synthetic import synthetic_samples
    from spark_vl.rewards.score import score

    torch.manual_seed(0)
    samples = {s.uid: s for s in synthetic_samples(PROMPTS * (steps + 1))}
    prompts = [build_prompt(s) for s in samples.values()]  # the same rendered question text as spark-vl's
    data = Dataset.from_list([{"prompt": p.messages, "image": p.images[0], "uid": p.uid} for p in prompts])
    reward_cfg = RewardConfig(format="boxed", format_weight=0.1)

    def reward(completions, uid, **_):
        return [score(c[0]["content"] if isinstance(c, list) else c, samples[u], reward_cfg).overall
                for c, u in zip(completions, uid)]

    class Clock(TrainerCallback):  # both clocks: inside the step (begin to end) and end to end (whole cycle)
        def __init__(self):
            self.inside, self.ends, self.t0 = [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())
            self.inside.append(self.ends[-1] - self.t0)

    # TRL's own phases, timed around its methods: generation, rewards, the no-grad reference pass (the old-log-prob
    # pass is skipped on-policy, as in spark-vl), and the update (loss forward + backward + optimizer step).
    phases: dict[str, list[float]] = {"generate": [], "reward": [], "reference": []}

    def timed(name, fn, when=lambda: True):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if when():
                    phases[name].append(time.perf_counter() - t0)
        return wrapper

    GRPOTrainer._generate = timed("generate", GRPOTrainer._generate)
    GRPOTrainer._calculate_rewards = timed("reward", GRPOTrainer._calculate_rewards)
    GRPOTrainer._get_per_token_logps_and_entropies = timed(
        "reference", GRPOTrainer._get_per_token_logps_and_entropies, when=lambda: not torch.is_grad_enabled())
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=PROMPTS * SAMPLES,
            num_generations=SAMPLES, max_completion_length=NEW_TOKENS, beta=BETA, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo",
            temperature=1.0, gradient_checkpointing=False, use_cpu=True, bf16=False, fp16=False,
            logging_steps=1, report_to="none", save_strategy="no", seed=0, dataloader_num_workers=0,
            shuffle_dataset=False, max_grad_norm=1.0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, callbacks=[clock])
        trainer.train()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    out.write_text(json.dumps({"step": [b - a for a, b in zip(clock.ends, clock.ends[1:])],
                               "inside": clock.inside[1:], "length": lengths[1:],
                               "phases": {k: v[1:] for k, v in phases.items()}}))


def bench_draw(k: int, repeats: int = 150) -> None:
    """Seconds to draw and encode one step's `k` prompts of the demo data (`PromptSource.next_prompts`: encoded
    together) against drawing, building and encoding one row at a time (what it did before), alternating in one
    process; both draw the same rows (tested in tests/unit/test_prompts.py)."""
    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_processor
    from spark_vl.trainer.data import PromptSource

    cfg, processor = load_config(ROOT / "configs/demo_cpu.yaml", []), build_processor("tiny-qwen2.5-vl")
    together, alone = PromptSource(cfg, processor), PromptSource(cfg, processor)

    def one_by_one() -> None:
        kept = 0
        while kept < k:
            source, index = alone.sampler.next(None)
            rows, root = alone.sources[source]
            kept += alone.build(rows[index], root) is not None

    times: dict[str, list[float]] = {"together": [], "one by one": []}
    for _ in range(repeats):
        for name, fn in (("together", lambda: together.next_prompts(k)), ("one by one", one_by_one)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    a, b = med(times["together"]), med(times["one by one"])
    print(f"# {k} prompts of configs/demo_cpu.yaml drawn and encoded, median of {repeats}, {platform.machine()}, "
          f"{date.today()}: together {a * 1e3:.2f} ms, one by one {b * 1e3:.2f} ms ({a / b:.2f})")


# -- the driver ------------------------------------------------------------------------------------------------
def spawn(python: str, worker: str, model: str, steps: int, workload: str, extra: list[str],
          source: str | None = None) -> dict:
    """One measuring process; `source`: a checkout whose spark_vl is imported instead of this one's."""
    env = {**os.environ, **({"PYTHONPATH": source} if source else {})}
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [python, __file__, "--worker", worker, "--model", model, "--steps", str(steps), "--workload", workload,
               "--out", f.name, *(["--set", *extra] if extra else [])]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        if done.returncode:
            sys.exit(f"{worker} worker failed:\n{done.stderr[-3000:]}")
        return json.loads(Path(f.name).read_text())


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="steps per process (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (spark-vl, then TRL)")
    parser.add_argument("--model", default="builtin:tiny-qwen2.5-vl", help="a local folder or builtin:<name>")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="issue17")
    parser.add_argument("--trl-python", default=None, help="an interpreter with trl (TRL is skipped without one)")
    parser.add_argument("--set", nargs="*", default=[], help="extra spark-vl overrides, e.g. rollout.top_k=20")
    parser.add_argument("--before", default=None,
                        help="an earlier spark-vl checkout (git worktree add /tmp/before <commit>), measured "
                             "interleaved with this one")
    parser.add_argument("--draw", type=int, default=0, metavar="K",
                        help="only time drawing one step's K prompts: together vs one row at a time")
    parser.add_argument("--worker", choices=["spark", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.draw:
        return bench_draw(args.draw)
    if args.worker == "spark":
        return run_spark(args.model, args.steps, args.workload, Path(args.out), args.set)
    if args.worker == "trl":
        return run_trl(args.model, args.steps, Path(args.out))
    trl = args.trl_python if args.workload == "issue17" else None

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(args.model, Path(tmp) / "model")
        spark, other, before = [], [], []
        jobs = [(spark, lambda: spawn(sys.executable, "spark", model, args.steps, args.workload, args.set))]
        if trl:
            jobs.append((other, lambda: spawn(trl, "trl", model, args.steps, args.workload, [])))
        if args.before:
            jobs.append((before, lambda: spawn(sys.executable, "spark", model, args.steps, args.workload, args.set,
                                               args.before)))
        for i in range(args.rounds):  # every other round in reverse order: no framework always runs first
            for results, job in jobs if i % 2 == 0 else jobs[::-1]:
                results.append(job())
    if trl:
        version = subprocess.run([trl, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
    flat = lambda runs, key: [x for r in runs for x in r[key]]  # noqa: E731
    per_step = PROMPTS * SAMPLES if args.workload == "issue17" else med(flat(spark, "sequences"))
    print(f"# training step, {args.model} ({args.workload}), CPU fp32, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, {date.today()}")
    print(f"{args.rounds} rounds x {args.steps - 1} measured steps per framework (after 1 warm-up step each)")
    runs = {"spark-vl": spark, **({f"before ({args.before})": before} if before else {})}
    print("| phase, seconds per step (median) | " + " | ".join(runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for phase in [p for p in spark[0]["phases"] if spark[0]["phases"][p]]:
        cells = [f"{med([x for r in rs for x in r['phases'].get(phase, [])]):.3f}" for rs in runs.values()]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    steps = {name: med(flat(rs, "step")) for name, rs in runs.items()}
    print("| **step** | " + " | ".join(f"**{v:.3f}**" for v in steps.values()) + " |")
    print("| policy completions/s | " + " | ".join(f"{per_step / v:.0f}" for v in steps.values()) + " |")
    print("| mean response length | " + " | ".join(f"{med(flat(rs, 'length')):.1f}" for rs in runs.values()) + " |")
    s = steps["spark-vl"]
    if before:
        print(f"spark-vl step time now / before: {s / list(steps.values())[1]:.2f} (per round: " + ", ".join(
            f"{med(r['step']) / med(b['step']):.2f}" for r, b in zip(spark, before)) + ")")
    if trl:
        t = med(flat(other, "step"))
        print(f"TRL {version.stdout.strip()} GRPOTrainer: {t:.3f} s/step ({per_step / t:.0f} completions/s, "
              f"mean length {med(flat(other, 'length')):.1f})")
        print("TRL phases (median s/step): " + ", ".join(
            f"{k} {med([x for r in other for x in r['phases'][k]]):.3f}" for k in other[0]["phases"]) +
            f", rest (loss forward, backward, optimizer, bookkeeping) "
            f"{t - sum(med([x for r in other for x in r['phases'][k]]) for k in other[0]['phases']):.3f}")
        print(f"spark-vl / TRL completions per second: {t / s:.2f}x (steps timed end to end; inside the step alone, "
              f"without fetching data and logging: spark-vl {med(flat(spark, 'inside')):.3f}, "
              f"TRL {med(flat(other, 'inside')):.3f} s)")
        # Each round's pair ran back to back: its ratio is the least disturbed by the machine's drift.
        rounds = [med(o["step"]) / med(r["step"]) for r, o in zip(spark, other)]
        print("per round: " + ", ".join(f"{x:.2f}x" for x in rounds))


if __name__ == "__main__":
    main()
