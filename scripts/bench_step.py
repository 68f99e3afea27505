"""Seconds per training step of spark-vl, and of TRL's GRPOTrainer on the same model, data and settings.

Workload (issue 17): 4 prompts x 4 samples x 32 new tokens on the builtin synthetic picture tasks, KL to a frozen
reference (beta 0.04, k3), lr 1e-5, clip 0.2 / 0.28, token-mean loss, one optimizer step per rollout step (one
epoch, one mini-batch), gradient checkpointing off, fp32 on CPU. Both frameworks load the same local checkpoint
folder (`--model`; a builtin tiny model is first written to a folder with `save_pretrained`).

With `--trl-python` (an interpreter that can import trl and spark_vl, e.g. a scratch virtualenv made with
`python -m venv --system-site-packages /tmp/trl && /tmp/trl/bin/pip install trl==1.16.0`), the two run
interleaved: `--rounds` rounds, each one spark-vl process and one TRL process of `--steps` steps, loaded side by
side and then taking turns one training step at a time (`Baton`: the waiting process is blocked on a pipe, so
the machine's drift hits both alike; every other round the other framework steps first). The first step of every
process is warm-up and not counted, and every step is timed end to end (from taking its turn to logging its row:
fetching data and logging included). Prints per-phase medians for
spark-vl, the step medians of both, completions per second and the ratio, overall and per round. `--before DIR`
adds an earlier spark-vl checkout (`git worktree add DIR <commit>`), run from this script with `PYTHONPATH=DIR`,
interleaved too: the before/after of a change.

    python scripts/bench_step.py --steps 12 --rounds 3 --trl-python /tmp/trl/bin/python
    python scripts/bench_step.py --workload demo --before /tmp/before        # configs/demo_cpu.yaml as shipped
    python scripts/bench_step.py --workload spark-demo --before /tmp/before  # the SPARK demo, auxiliary phases too
    python scripts/bench_step.py --variant trainer.share_prompts=true   # the same code with other settings, too
    python scripts/bench_step.py --draw 4    # one step's data: drawn together vs one row at a time, in one process
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
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


# -- workers: one process per framework and round, taking turns step by step -----------------------------------------
class Baton:
    """The processes of one round take turns, one training step each, while the others wait (blocked on a pipe,
    using no CPU): the machine's drift (here up to +-30 % from one minute to the next) then hits every framework
    alike. The token travels a ring of pipes; `spec` = "read,write,ready" file descriptors (None: a worker run on
    its own, which never waits). A step is timed from taking the token to the end of the step."""

    def __init__(self, spec: str | None):
        self.read, self.write, self.ready = (int(x) for x in spec.split(",")) if spec else (None, None, None)
        self.resumed = time.perf_counter()

    def first(self) -> None:
        """Loaded: say so, then wait for the first turn."""
        if self.ready is not None:
            os.write(self.ready, b"r")
        self.take()

    def take(self) -> None:
        if self.read is not None:
            os.read(self.read, 1)
        self.resumed = time.perf_counter()

    def give(self) -> None:
        if self.write is not None:
            os.write(self.write, b"t")

    def lap(self, last: bool) -> float:
        """The step that just ended, in seconds; then the others' turns (not after the last step: the process
        finishes first, `give` when done, so its checkpoint and report disturb no one's step)."""
        took = time.perf_counter() - self.resumed
        if not last:
            self.give()
            self.take()
        return took


def run_spark(model: str, steps: int, workload: str, out: Path, extra: list[str], baton: Baton) -> None:
    from spark_vl.config import load_config
    from spark_vl.trainer.loop import train
    from spark_vl.trainer.metrics import MetricsLogger

    laps: list[float] = []  # each training step's whole cycle: drawing its prompts to logging its row
    log = MetricsLogger.log

    def timed_log(self, step, metrics):
        log(self, step, metrics)
        if step == 0:  # the evaluation row, logged before the first step
            baton.first()
        else:
            laps.append(baton.lap(last=step == steps))

    MetricsLogger.log = timed_log
    config, overrides = WORKLOADS[workload]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / config, [
            f"model.path={model}", f"trainer.output_dir={tmp}/run", f"trainer.rollout_steps={steps}",
            "trainer.eval_every=0", "data.val_size=0", "trainer.save_every=0", "logging.progress=false",
            "logging.tensorboard=false", *overrides, *extra,
        ])
        rows = [json.loads(line) for line in (train(cfg) / "metrics.jsonl").read_text().splitlines()]
    baton.give()
    rows = [r for r in rows if r["step"] > 1]  # step 0 is the evaluation row, step 1 the warm-up
    out.write_text(json.dumps({
        "step": laps[1:],  # end to end: sampling prompts to logging, all included
        "inside": [r["time/step"] for r in rows],
        "phases": {p: [r[f"time/{p}"] for r in rows if f"time/{p}" in r]
                   for p in ("rollout", "reward", "logprobs", "update", "aux/rollout", "aux/reward", "aux/logprobs",
                             "aux/update")},
        "length": [r["response/length_mean"] for r in rows],
        "sequences": [r["rollout/responses"] for r in rows],
    }))


def run_trl(model: str, steps: int, out: Path, baton: Baton) -> None:
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
            self.inside, self.laps, self.t0, self.logged = [], [], 0.0, 0

        def on_train_begin(self, args, state, control, **kw):
            baton.first()

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.inside.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, **kw):  # after on_step_end: a step's cycle ends with its log
            if state.global_step > self.logged:  # (the run's closing summary logs the last step again)
                self.logged = state.global_step
                self.laps.append(baton.lap(last=state.global_step == steps))

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
        baton.give()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    out.write_text(json.dumps({"step": clock.laps[1:],
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
def run_round(jobs: list[tuple[str, str, str | None, list[str]]], model: str, steps: int,
              workload: str) -> list[dict]:
    """One process per job (interpreter, worker, checkout or None, spark-vl overrides), all loaded at once, then
    taking turns step by step (`Baton`, the first job first); their results in job order."""
    ring = [os.pipe() for _ in jobs]  # job i takes the token from ring[i] and gives it to ring[i + 1]
    ready_r, ready_w = os.pipe()
    procs, outs, logs = [], [], []
    for i, (python, worker, source, extra) in enumerate(jobs):
        fds = (ring[i][0], ring[(i + 1) % len(jobs)][1], ready_w)
        outs.append(tempfile.NamedTemporaryFile(suffix=".json"))
        logs.append(tempfile.TemporaryFile(mode="w+"))
        cmd = [python, __file__, "--worker", worker, "--model", model, "--steps", str(steps), "--workload", workload,
               "--out", outs[-1].name, "--baton", ",".join(map(str, fds)), *(["--set", *extra] if extra else [])]
        env = {**os.environ, **({"PYTHONPATH": source} if source else {})}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logs[-1], env=env, pass_fds=fds))

    def stop_on_failure() -> None:
        failed = [i for i, p in enumerate(procs) if p.poll()]
        if failed:
            for p in procs:
                p.kill()
            logs[failed[0]].seek(0)
            sys.exit(f"{jobs[failed[0]][1]} worker failed:\n{logs[failed[0]].read()[-3000:]}")

    ready = 0
    while ready < len(jobs):  # every process loaded and waiting for its first turn
        stop_on_failure()
        if select.select([ready_r], [], [], 0.5)[0]:
            ready += len(os.read(ready_r, len(jobs)))
    os.write(ring[0][1], b"t")  # the first job's first turn
    while any(p.poll() is None for p in procs):
        stop_on_failure()
        time.sleep(0.5)
    stop_on_failure()
    for fd in [ready_r, ready_w, *(fd for pair in ring for fd in pair)]:
        os.close(fd)
    return [json.loads(Path(f.name).read_text()) for f in outs]


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
    parser.add_argument("--variant", nargs="+", default=None, metavar="KEY=VALUE",
                        help="also this checkout with these overrides (e.g. trainer.share_prompts=true), interleaved")
    parser.add_argument("--draw", type=int, default=0, metavar="K",
                        help="only time drawing one step's K prompts: together vs one row at a time")
    parser.add_argument("--worker", choices=["spark", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--baton", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.draw:
        return bench_draw(args.draw)
    if args.worker == "spark":
        return run_spark(args.model, args.steps, args.workload, Path(args.out), args.set, Baton(args.baton))
    if args.worker == "trl":
        return run_trl(args.model, args.steps, Path(args.out), Baton(args.baton))
    trl = args.trl_python if args.workload == "issue17" else None

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(args.model, Path(tmp) / "model")
        spark, other, before, variant = [], [], [], []
        jobs = [(spark, (sys.executable, "spark", None, args.set))]
        if trl:
            jobs.append((other, (trl, "trl", None, [])))
        if args.before:
            jobs.append((before, (sys.executable, "spark", args.before, args.set)))
        if args.variant:
            jobs.append((variant, (sys.executable, "spark", None, [*args.set, *args.variant])))
        for i in range(args.rounds):  # every other round in reverse order: no framework always steps first
            order = jobs if i % 2 == 0 else jobs[::-1]
            for (results, _), result in zip(order, run_round([job for _, job in order], model, args.steps,
                                                                  args.workload)):
                results.append(result)
    if trl:
        version = subprocess.run([trl, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
    flat = lambda runs, key: [x for r in runs for x in r[key]]  # noqa: E731
    per_step = PROMPTS * SAMPLES if args.workload == "issue17" else med(flat(spark, "sequences"))
    print(f"# training step, {args.model} ({args.workload}), CPU fp32, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, {date.today()}")
    print(f"{args.rounds} rounds x {args.steps - 1} measured steps per framework (after 1 warm-up step each)")
    runs = {"spark-vl": spark, **({f"before ({args.before})": before} if before else {}),
            **({"variant (" + " ".join(args.variant) + ")": variant} if variant else {})}
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
        rounds = [med(r["step"]) / med(b["step"]) for r, b in zip(spark, before)]
        print(f"spark-vl step time now / before: {med(rounds):.2f}, the median of the rounds' ratios (per round: "
              + ", ".join(f"{x:.2f}" for x in rounds) + f"; all steps pooled {s / med(flat(before, 'step')):.2f})")
    if variant:
        rounds = [med(v["step"]) / med(r["step"]) for r, v in zip(spark, variant)]
        print(f"variant step time / spark-vl: {med(rounds):.2f}, the median of the rounds' ratios (per round: "
              + ", ".join(f"{x:.2f}" for x in rounds) + f"; all steps pooled {med(flat(variant, 'step')) / s:.2f})")
    if trl:
        t = med(flat(other, "step"))
        print(f"TRL {version.stdout.strip()} GRPOTrainer: {t:.3f} s/step ({per_step / t:.0f} completions/s, "
              f"mean length {med(flat(other, 'length')):.1f})")
        print("TRL phases (median s/step): " + ", ".join(
            f"{k} {med([x for r in other for x in r['phases'][k]]):.3f}" for k in other[0]["phases"]) +
            f", rest (loss forward, backward, optimizer, bookkeeping) "
            f"{t - sum(med([x for r in other for x in r['phases'][k]]) for k in other[0]['phases']):.3f}")
        # Within a round the two took turns step by step: its ratio is the least disturbed by the machine's drift.
        rounds = [med(o["step"]) / med(r["step"]) for r, o in zip(spark, other)]
        print(f"spark-vl / TRL completions per second: {med(rounds):.2f}x, the median of the rounds' ratios (per "
              "round: " + ", ".join(f"{x:.2f}x" for x in rounds) + f"; all steps pooled {t / s:.2f}x; steps timed "
              f"end to end; inside the step alone, without fetching data and logging: spark-vl "
              f"{med(flat(spark, 'inside')):.3f}, TRL {med(flat(other, 'inside')):.3f} s)")
        if variant:
            rounds = [med(o["step"]) / med(v["step"]) for v, o in zip(variant, other)]
            pooled = t / med(flat(variant, "step"))
            print(f"variant / TRL completions per second: {med(rounds):.2f}x (per round: "
                  + ", ".join(f"{x:.2f}x" for x in rounds) + f"; all steps pooled {pooled:.2f}x)")


if __name__ == "__main__":
    main()
