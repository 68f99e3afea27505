"""The training loop: sample -> rollout -> reward -> (recycle) -> logprobs -> update -> log -> checkpoint.

One loop for every method: GRPO and its variants (advantage and loss found by name), the supervised
term on expert solutions, and SPARK's auxiliary phases (recycled judge / reflection prompts trained with
the same `run_phase`). It runs as one plain process or as one process per device under torchrun / the
deepspeed launcher; each rank rolls out its share of the step's prompts, and losses are normalised by
global token / sequence counts so the split does not change the result.

Simplifications: the HF rollout backend generates with the training module itself (no weight sync);
old log-probs are recomputed by the trainer before the update (as the SPARK reference does), the
sampler's own log-probs are only compared as a metric.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from spark_vl.algorithms import get_advantage_fn, get_policy_loss_fn
from spark_vl.algorithms.logprobs import sequence_logprobs
from spark_vl.algorithms.losses import AggregationDenominators, aggregate, kl_penalty
from spark_vl.config import Config, derived, dump_yaml, validate
from spark_vl.rewards import has_gold, score_groups
from spark_vl.rollout import make_engine
from spark_vl.spark import judge_score
from spark_vl.trainer.batch import PromptEncoder, Sequence, collate, response_values
from spark_vl.trainer.data import PromptSource, held_out_prompts, load_eval_benchmarks
from spark_vl.trainer.engine import all_reduce_sum, build_engine, build_reference, init_distributed, zero3_loading
from spark_vl.trainer.spark_phase import SparkPhase
from spark_vl.types import Prompt, RolloutGroup, SamplingParams

log = logging.getLogger("spark_vl.train")


class TrainingAborted(RuntimeError):
    """The run cannot continue (e.g. repeated non-finite losses); the message says why."""


@dataclass
class TrainState:
    step: int = 0  # completed policy rollout steps
    optimizer_steps: int = 0
    bad_steps_in_a_row: int = 0
    skipped_updates: int = 0
    algorithm: dict = field(default_factory=dict)  # e.g. {"aux_queue": ...} for SPARK


class Means:
    """Sums and counts of named metrics, reduced across ranks in one call."""

    def __init__(self):
        self.sums: Counter = Counter()
        self.counts: Counter = Counter()

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        self.sums[name] += float(total)
        self.counts[name] += float(count)

    def reduce(self, device) -> dict[str, float]:
        names = sorted(self.sums)
        flat = all_reduce_sum([self.sums[n] for n in names] + [self.counts[n] for n in names], device)
        k = len(names)
        return {n: flat[i] / flat[k + i] if flat[k + i] else float("nan") for i, n in enumerate(names)}


@dataclass
class Trainer:
    """What every phase needs; built once by `train`."""

    cfg: Config
    dist: object
    engine: object  # DeepSpeed engine
    reference: object | None
    processor: object
    rollout: object
    state: TrainState
    dtype: torch.dtype

    @property
    def model(self):
        return self.engine.module

    # -- rollout + reward ------------------------------------------------------------------------------------
    def sampling(self, greedy: bool = False, max_new_tokens: int | None = None) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            temperature=0.0 if greedy else r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=max_new_tokens or r.max_new_tokens,
            stop=list(r.stop),
            repetition_penalty=r.repetition_penalty,
        )

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]:
        self.rollout.wake()
        groups = self.rollout.generate(prompts, n, sampling)
        self.rollout.sleep()
        return groups

    def reward(self, groups: list[RolloutGroup]) -> None:
        judge_everywhere = self.cfg.deepspeed.zero_stage == 3 and self.dist.world_size > 1
        if self.cfg.reward.judge_weight > 0 and judge_everywhere:
            # ZeRO-3: every rank must join the judge forward pass if any rank has something to judge.
            local = sum(1 for g in groups for r in g.rollouts if not has_gold(r))
            judge_everywhere = all_reduce_sum([local], self.dist.device)[0] > 0
        judge = partial(judge_score, self.model, self.processor) if self.cfg.reward.judge_weight > 0 else None
        score_groups(groups, self.cfg.reward, judge, judge_all=judge_everywhere)

    # -- sequences, log-probs and the update -------------------------------------------------------------------
    def sequences(self, groups: list[RolloutGroup], experts: list[Prompt]) -> list[Sequence]:
        encode = PromptEncoder(self.processor)
        adv_fn = get_advantage_fn(self.cfg.algorithm.advantage)
        seqs = []
        for g in groups:
            if not g.rollouts:
                continue
            adv = adv_fn(torch.tensor([g.rewards], dtype=torch.float32), self.cfg.algorithm)[0].tolist()
            enc = encode(g.prompt)
            for r, a in zip(g.rollouts, adv):
                if r.token_ids:
                    seqs.append(Sequence(enc, list(r.token_ids), advantage=a))
        tok = self.processor.tokenizer
        for p in experts:
            ids = tok(p.sample.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(Sequence(encode(p), ids, is_expert=True))
        return seqs

    def micro_batches(self, seqs: list[Sequence]) -> list[list[Sequence]]:
        size = self.cfg.trainer.micro_batch_size
        return [seqs[i : i + size] for i in range(0, len(seqs), size)]

    @torch.no_grad()
    def fill_logprobs(self, seqs: list[Sequence]) -> None:
        """Old (pre-update) and reference log-probs of every response token."""
        pad = self.processor.tokenizer.pad_token_id
        self.model.eval()
        for mb in self.micro_batches(seqs):
            batch = collate(mb, pad).to(self.dist.device)
            old, _ = sequence_logprobs(self.model, batch)
            for s, values in zip(mb, response_values(old.float().cpu(), mb)):
                s.old_logprobs = values
            if self.reference is not None:
                ref, _ = sequence_logprobs(self.reference, batch)
                for s, values in zip(mb, response_values(ref.float().cpu(), mb)):
                    s.ref_logprobs = values
        self.model.train()

    def update(self, seqs: list[Sequence], num_minis: int, m: Means) -> None:
        """ppo_epochs passes; each pass deals the rank's sequences into `num_minis` optimizer steps (the same
        number on every rank, whatever each rank holds)."""
        cfg, a = self.cfg, self.cfg.algorithm
        world = self.dist.world_size
        pad = self.processor.tokenizer.pad_token_id
        policy_loss_fn = get_policy_loss_fn(a.policy_loss)
        norm_const = float(a.loss_agg_norm or cfg.rollout.max_new_tokens)
        accum = self.engine.gradient_accumulation_steps()
        for _ in range(a.ppo_epochs):
            for mini in mini_batches(seqs, num_minis):
                # Global denominators: every micro-batch of every rank in this optimizer step.
                pg_tokens = sum(len(s.response_ids) for s in mini if not s.is_expert)
                pg_seqs = sum(1 for s in mini if not s.is_expert and s.response_ids)
                sft_tokens = sum(len(s.response_ids) for s in mini if s.is_expert)
                pg_tokens, pg_seqs, sft_tokens = all_reduce_sum([pg_tokens, pg_seqs, sft_tokens], self.dist.device)
                pg_denom = AggregationDenominators(pg_tokens, pg_seqs, norm_const)
                sft_denom = AggregationDenominators(sft_tokens, 1.0)
                bad = False
                # DeepSpeed counts exactly grad_accum micro-steps per optimizer step.
                for mb in split_even(mini, accum):
                    loss = self.micro_loss(collate(mb, pad).to(self.dist.device), pg_denom, sft_denom,
                                           policy_loss_fn, m) if mb else None
                    finite = loss is None or bool(torch.isfinite(loss).item())
                    bad = bad or all_reduce_sum([float(finite)], self.dist.device)[0] < world
                    if bad or loss is None:
                        # Keep DeepSpeed's accumulation bookkeeping (and ZeRO's reduction hooks) in step on every
                        # rank with an exact zero; the optimizer step below is then taken with lr 0.
                        loss = zero_loss(self.model)
                    # DeepSpeed averages over ranks and (by default) over accumulation steps; our loss is already
                    # a share of the global mean, so undo both.
                    self.engine.backward(loss * world, scale_wrt_gas=False)
                    if self.engine.is_gradient_accumulation_boundary():
                        if bad:
                            for group in self.engine.optimizer.param_groups:
                                group["lr"] = 0.0  # skip this update; the scheduler restores the lr below
                        lr = self.engine.get_lr()[0]
                        # ZeRO-0 in fp32 does not record the norm; its grads are already all-reduced here.
                        own_norm = None if self.cfg.deepspeed.zero_stage else grad_norm(self.model)
                        self.engine.step()
                        self.state.optimizer_steps += 1
                        if bad:
                            self.state.skipped_updates += 1
                            m.add("actor/skipped_updates", 1.0)
                        else:
                            norm = self.engine.get_global_grad_norm()
                            norm = own_norm if norm is None else norm
                            if norm is not None:
                                m.add("actor/grad_norm", float(norm))
                            m.add("actor/lr", lr)
                    else:
                        self.engine.step()

    def micro_loss(self, batch, pg_denom, sft_denom, policy_loss_fn, m: Means) -> torch.Tensor:
        a = self.cfg.algorithm
        logp, entropy = sequence_logprobs(self.model, batch)
        mask = batch.response_mask
        expert = batch.is_expert.float().unsqueeze(1)
        weights = batch.loss_weights.unsqueeze(1)
        pg_mask, sft_mask = mask * (1.0 - expert), mask * expert
        out = policy_loss_fn(logp, batch.old_logprobs, batch.advantages, pg_mask, a)
        loss = aggregate(out.loss_BT * weights, pg_mask, a.loss_agg, pg_denom)
        n_pg = pg_mask.sum().item()
        # Each micro-batch holds a share of its optimizer step's loss: weight the shares so the logged value is
        # the mean over optimizer steps of the full step loss.
        share = 1.0 / (self.engine.gradient_accumulation_steps() * self.dist.world_size)
        m.add("loss/policy", loss.item(), share)
        if n_pg:
            m.add("actor/clipfrac", (out.clipped_BT * pg_mask).sum().item(), n_pg)
            m.add("actor/entropy", (entropy * pg_mask).sum().item(), n_pg)
            m.add("actor/ratio_mean", (out.ratio_BT.detach() * pg_mask).sum().item(), n_pg)
        if self.reference is not None and batch.ref_logprobs is not None:
            kl = kl_penalty(logp, batch.ref_logprobs, a.kl_estimator)
            kl_loss = aggregate(kl, pg_mask, a.loss_agg, pg_denom)
            loss = loss + a.kl_coef * kl_loss
            if n_pg:
                m.add("actor/kl", (kl.detach() * pg_mask).sum().item(), n_pg)
        if a.entropy_coef:
            loss = loss - a.entropy_coef * aggregate(entropy, pg_mask, a.loss_agg, pg_denom)
        if sft_mask.sum() > 0:
            sft = aggregate(-logp, sft_mask, "token-mean", sft_denom)
            loss = loss + a.sft_coef * sft
            m.add("loss/sft", (-logp.detach() * sft_mask).sum().item(), sft_mask.sum().item())
        return loss

    # -- one phase: the same code for policy prompts and SPARK's auxiliary prompts ------------------------------
    def run_phase(self, prompts: list[Prompt], experts: list[Prompt], n: int, prefix: str, m: Means,
                  train: bool = True) -> list:
        t0 = time.perf_counter()
        groups = self.generate(prompts, n, self.sampling())
        t1 = time.perf_counter()
        self.reward(groups)
        t2 = time.perf_counter()
        record_group_metrics(groups, prefix, m)
        if not train:
            return groups
        seqs = self.sequences(groups, experts)
        self.fill_logprobs(seqs)
        t3 = time.perf_counter()
        global_sequences = self.cfg.trainer.prompts_per_step * n
        self.update(seqs, max(1, global_sequences // self.cfg.trainer.sequences_per_optimizer_step), m)
        t4 = time.perf_counter()
        for name, seconds in (("rollout", t1 - t0), ("reward", t2 - t1), ("logprobs", t3 - t2), ("update", t4 - t3)):
            m.add(f"time/{prefix}{name}", seconds)
        return groups

    # -- held-out evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, prompts: list[Prompt], benchmarks: dict | None = None) -> dict[str, float]:
        metrics = self.evaluate_benchmarks(benchmarks) if benchmarks else {}
        if not prompts:
            return metrics
        t = self.cfg.trainer
        groups = self.generate(prompts, 1, self.sampling(greedy=True, max_new_tokens=t.eval_max_new_tokens))
        self.reward(groups)
        m = Means()
        for g in groups:
            r = g.rollouts[0]
            m.add("eval/accuracy", float(r.reward.correct))
            if g.prompt.sample.category:
                m.add(f"eval/accuracy/{g.prompt.sample.category}", float(r.reward.correct))
            m.add("eval/reward", r.reward.overall)
            m.add("eval/format", r.reward.parts.get("format", float("nan")))
            m.add("eval/length", len(r.token_ids))
        return {**metrics, **m.reduce(self.dist.device)}

    def evaluate_benchmarks(self, benchmarks: dict) -> dict[str, float]:
        """Benchmark metrics (spark_vl.eval) over each rank's shard, averaged weighted by shard size."""
        from spark_vl.eval import evaluate

        e = self.cfg.eval
        result = evaluate(self.rollout, benchmarks, e.protocol, batch_size=e.batch_size,
                          max_new_tokens=self.cfg.trainer.eval_max_new_tokens or e.max_new_tokens)
        m = Means()
        flat = result.flat_metrics("bench")
        for name, loaded in benchmarks.items():
            weight = float(len(loaded.samples))
            prefix = f"bench/{loaded.benchmark.name}/"  # results are keyed by the adapter's own name
            for key, value in flat.items():
                if key.startswith(prefix):
                    m.add(f"bench/{name}/{key[len(prefix):]}", value * weight, weight)
        return m.reduce(self.dist.device)


def zero_loss(model) -> torch.Tensor:
    return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)


def grad_norm(model) -> float:
    grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def mini_batches(seqs: list[Sequence], num_minis: int) -> list[list[Sequence]]:
    """Shuffle policy sequences into `num_minis` optimizer-step mini-batches; expert sequences are dealt
    round-robin over them, so the supervised term is spread over every update."""
    policy = [s for s in seqs if not s.is_expert]
    experts = [s for s in seqs if s.is_expert]
    order = torch.randperm(len(policy)).tolist()
    minis = split_even([policy[i] for i in order], num_minis)
    for i, s in enumerate(experts):
        minis[i % num_minis].append(s)
    return minis


def split_even(items: list, parts: int) -> list[list]:
    """`parts` consecutive chunks whose sizes differ by at most one (some empty if items are few)."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


def record_group_metrics(groups: list[RolloutGroup], prefix: str, m: Means) -> None:
    for g in groups:
        rewards = g.rewards
        if len(set(rewards)) <= 1:
            m.add(f"{prefix}groups/zero_variance", 1.0)
        else:
            m.add(f"{prefix}groups/zero_variance", 0.0)
        for r in g.rollouts:
            out = r.reward
            m.add(f"{prefix}reward/mean", out.overall if out else 0.0)
            m.add(f"{prefix}reward/accuracy", float(out.correct) if out else 0.0)
            if out and "format" in out.parts:
                m.add(f"{prefix}reward/format", out.parts["format"])
            if out and "judge" in out.parts:
                m.add(f"{prefix}reward/judge", out.parts["judge"])
            m.add(f"{prefix}response/length_mean", len(r.token_ids))
            m.add(f"{prefix}response/truncated", float(r.finish_reason == "length"))


def write_samples(path: Path, step: int, groups: list[RolloutGroup], k: int = 4) -> None:
    """Append the first rollout of up to k groups: what the model saw, wrote and was rewarded."""
    import json

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_output_dir(path: Path) -> None:
    """Fail at start, not after an hour, if the run directory cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainingAborted(f"trainer.output_dir={path} is not writable: {err}") from None


def train(cfg: Config, resume: str | None = None) -> Path:
    """Run training as configured; returns the run directory."""
    from spark_vl.models import load_model, resolve_dtype
    from spark_vl.trainer import checkpoint as ckpt
    from spark_vl.trainer.metrics import MetricsLogger
    from spark_vl.trainer.report import write_report

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_dir = Path(cfg.trainer.output_dir)
    check_output_dir(run_dir)
    dist = init_distributed(cfg.trainer.device)
    validate(cfg, dist.world_size)
    plan = derived(cfg, dist.world_size, aux_optimizer_steps=planned_aux_optimizer_steps(cfg, dist.world_size))
    if dist.is_main:
        resolved = dump_yaml(cfg)
        (run_dir / "config.yaml").write_text(resolved)
        print(f"# resolved config\n{resolved}# derived\n" + "\n".join(f"{k}: {v}" for k, v in vars(plan).items()))
    seed_everything(cfg.trainer.seed)
    dtype = resolve_dtype(cfg.model.dtype, dist.device)
    zero3 = zero3_loading(cfg, plan, dtype)  # noqa: F841 (must stay alive while models load)
    model, processor = load_model(cfg.model, dist.device)
    source = PromptSource(cfg, processor)
    val_prompts = held_out_prompts(cfg, processor)[dist.rank :: dist.world_size]
    benchmarks = load_eval_benchmarks(cfg, dist.rank, dist.world_size)
    engine, _, _ = build_engine(model, cfg, plan, dist, dtype)
    reference = build_reference(cfg.model, cfg, plan, dist, dtype) if cfg.algorithm.kl_coef > 0 else None
    synced = cfg.deepspeed.zero_stage == 3 and dist.world_size > 1
    rollout = make_engine(cfg.rollout.backend, engine.module, processor, cfg.rollout.generation_batch_size, synced)
    state = TrainState()
    spark = SparkPhase(cfg, dist.rank, dist.world_size, dist.device) if cfg.spark.enabled else None
    if resume:
        path = ckpt.resolve_checkpoint(resume, run_dir)
        saved = ckpt.load_checkpoint(engine, path)
        state = saved["state"]
        source.load_state_dict(saved["data"])
        if spark is not None:
            spark.load_state_dict(state.algorithm.get("spark", {}))
        print(f"resumed from {path} at step {state.step}")
    logger = MetricsLogger(run_dir, dist.is_main, cfg.logging.tensorboard,
                           cfg.logging.wandb_project if cfg.logging.wandb else None, resume_step=state.step)
    trainer = Trainer(cfg, dist, engine, reference, processor, rollout, state, dtype)
    start_time = time.perf_counter()

    def run_eval() -> dict[str, float]:
        metrics = trainer.evaluate(val_prompts, benchmarks)
        return {**metrics, **(spark.evaluate_judge(trainer, val_prompts) if spark is not None else {})}

    if state.step == 0:
        logger.log(0, run_eval())
    progress = _progress(cfg, dist, state.step)
    n = cfg.rollout.samples_per_prompt
    for step in range(state.step + 1, cfg.trainer.rollout_steps + 1):
        m = Means()
        skipped_before = state.skipped_updates
        t0 = time.perf_counter()
        aux: list[Prompt] = spark.take_mixed(step) if spark is not None else []
        n_aux = int(all_reduce_sum([len(aux)], dist.device)[0])
        policy = source.next_prompts(cfg.trainer.prompts_per_step - n_aux)
        experts = source.next_experts(cfg.algorithm.sft_prompts_per_step)
        mine = policy[dist.rank :: dist.world_size] + aux
        train_policy = spark is None or cfg.spark.train_on_policy
        groups = trainer.run_phase(mine, experts[dist.rank :: dist.world_size], n, "", m, train=train_policy)
        every = cfg.logging.log_samples_every
        if dist.is_main and every and (step == 1 or step % every == 0):
            write_samples(run_dir / "samples.jsonl", step, groups)
        if spark is not None:
            spark.after_policy_step(trainer, groups, step, m)
        bad_step = state.skipped_updates > skipped_before  # a phase of this step skipped an update
        state.bad_steps_in_a_row = state.bad_steps_in_a_row + 1 if bad_step else 0
        if state.bad_steps_in_a_row >= cfg.trainer.max_bad_steps:
            raise TrainingAborted(
                f"non-finite loss in {state.bad_steps_in_a_row} consecutive steps (last: step {step}); "
                "lower trainer.lr, check the data, or use algorithm.kl_coef / grad clipping"
            )
        metrics = m.reduce(dist.device)
        metrics["time/step"] = time.perf_counter() - t0
        metrics["data/skipped_rows"] = float(sum(source.skipped.values()))
        metrics["data/epoch"] = float(source.epoch())
        state.step = step
        last = step == cfg.trainer.rollout_steps
        if last or (cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0):
            metrics.update(run_eval())
        logger.log(step, metrics)
        progress.update(1)
        progress.set_postfix({k.split("/")[-1]: f"{metrics[k]:.3g}" for k in
                              ("reward/mean", "reward/accuracy", "response/length_mean", "eval/accuracy")
                              if k in metrics and math.isfinite(metrics[k])})
        if last or (cfg.trainer.save_every and step % cfg.trainer.save_every == 0):
            state.algorithm["spark"] = spark.state_dict() if spark is not None else {}
            ckpt.save_checkpoint(engine, processor, run_dir, step, {"state": state, "data": source.state_dict()},
                                 dump_yaml(cfg), cfg.trainer.keep_last, dist.is_main)
    progress.close()
    if dist.is_main:
        write_report(cfg, run_dir, logger.history(), plan, time.perf_counter() - start_time, source.skipped,
                     state, spark.summary() if spark is not None else None, source.build.examples)
    logger.close()
    return run_dir


def planned_aux_optimizer_steps(cfg: Config, world_size: int) -> int:
    """Optimizer steps of SPARK's auxiliary phases, so the LR schedule spans every step actually taken."""
    if not cfg.spark.enabled or cfg.spark.schedule != "alternate":
        return 0
    n_aux = cfg.spark.samples_per_prompt or cfg.rollout.samples_per_prompt
    sequences = cfg.trainer.prompts_per_step * n_aux
    per_phase = cfg.algorithm.ppo_epochs * sequences // cfg.trainer.sequences_per_optimizer_step
    return per_phase * cfg.trainer.rollout_steps


def _progress(cfg: Config, dist, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.trainer.rollout_steps, initial=initial, desc="train", dynamic_ncols=True,
                disable=not (dist.is_main and cfg.logging.progress))
