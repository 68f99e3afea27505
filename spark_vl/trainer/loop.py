"""The training loop: sample -> rollout -> reward -> recycle -> logprobs -> update -> aux phase -> log -> checkpoint.

One loop for every method: GRPO and its variants (advantage and loss found by name), the supervised term on
expert solutions, and SPARK (recycled judge / reflection prompts, rolled out and trained by the same calls as the
policy prompts). It runs as one plain process or as one process per device under torchrun / the deepspeed
launcher; each rank rolls out its share of the step's prompts, advantages are computed once over every rank's
groups, and losses are normalised by global token / sequence counts, so the split does not change the result.

Simplifications: the HF rollout backend generates with the training module itself (no weight sync); old
log-probs are recomputed by the trainer before the update at the sampling temperature (as the SPARK reference
does), and the sampler's own log-probs are compared with them every step as a metric (`rollout/logprob_*`).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import torch

from spark_vl.algorithms import get_advantage_fn, get_policy_loss_fn
from spark_vl.algorithms.advantages import flat_groups
from spark_vl.algorithms.chord import chord_mu, sft_token_loss
from spark_vl.algorithms.correction import is_weights, sampler_gaps
from spark_vl.algorithms.logprobs import sequence_logprobs
from spark_vl.algorithms.losses import AggregationDenominators, aggregate, kl_penalty
from spark_vl.algorithms.spo import DEFAULT_WEIGHT
from spark_vl.config import Config, ConfigError, Derived, derived, dump_yaml, validate
from spark_vl.data.prompts import prompt_key
from spark_vl.models import has_dropout, load_model, no_autograd, resolve_dtype
from spark_vl.models.encode import EncodedPrompt, PromptEncoder, attach_positions, vision_filler
from spark_vl.rewards import has_gold, score_groups
from spark_vl.rewards.score import shape_overlong
from spark_vl.rollout import RolloutEngine, make_engine
from spark_vl.rollout.hf import NOT_FINITE, max_over_ranks, vision_token_ids
from spark_vl.spark.reward_judge import RewardJudge, make_reward_judge
from spark_vl.trainer import checkpoint as ckpt
from spark_vl.trainer import spo as spo_glue
from spark_vl.trainer.batch import Sequence, TrainBatch, by_prompt, collate, mini_batches, response_values, split_even
from spark_vl.trainer.data import PromptSource, held_out_prompts, load_eval_benchmarks
from spark_vl.trainer.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    build_engine,
    build_frozen_copy,
    build_judge,
    clip_like_deepspeed,
    grad_norm,
    init_distributed,
    lockstep,
    share_of,
    spare_core,
    trainer_clip,
    zero3_loading,
    zero_loss,
)
from spark_vl.trainer.metrics import Means, MetricsLogger, record_group_metrics, write_samples
from spark_vl.trainer.preflight import preflight
from spark_vl.trainer.report import write_report
from spark_vl.trainer.spark_phase import SparkPhase, label_experts
from spark_vl.trainer.startup import (
    TrainingAborted,
    keep_freed_memory,
    print_memory_plan,
    progress_bar,
    seed_everything,
)
from spark_vl.types import Prompt, RolloutGroup, SamplingParams

log = logging.getLogger("spark_vl.train")


def train(cfg: Config, resume: str | None = None) -> Path:
    """Run training as configured; returns the run directory."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_dir = Path(cfg.trainer.output_dir)
    dist = init_distributed(cfg.trainer.device)
    validate(cfg, dist.world_size)
    preflight(cfg, resume, dist.is_main)  # paths, names, device, output folder, --resume: one line, before any load
    plan = derived(cfg, dist.world_size)
    if dist.is_main:
        resolved = dump_yaml(cfg)
        (run_dir / "config.yaml").write_text(resolved)
        print(f"# resolved config\n{resolved}# derived\n" + "\n".join(f"{k}: {v}" for k, v in vars(plan).items()))
        print_memory_plan(cfg, dist)
    seed_everything(cfg.trainer.seed)
    keep_freed_memory()

    # Setup: models, data, rollout engines, SPARK state, resume.
    dtype = resolve_dtype(cfg.model.dtype, dist.device)
    zero3 = zero3_loading(cfg, plan, dtype)  # noqa: F841 (must stay alive while models load)
    model, processor = load_model(cfg.model, dist.device)
    if cfg.trainer.share_prompts and not hasattr(model.model, "language_model"):
        raise ConfigError("trainer.share_prompts=true needs a Qwen-VL model whose text decoder is "
                          f"model.language_model; {type(model).__name__} has none: set trainer.share_prompts=false")
    source = PromptSource(cfg, processor, ranks=dist.world_size)
    held_out = held_out_prompts(cfg, processor)  # every rank evaluates its share; the judge eval deals pairs
    val_prompts = held_out[dist.rank :: dist.world_size]
    benchmarks = load_eval_benchmarks(cfg, dist.rank, dist.world_size)
    engine = build_engine(model, cfg, plan, dist, dtype)
    spark = SparkPhase(cfg, plan, dist) if cfg.spark.enabled else None
    from_initial = spark is not None and cfg.spark.recycle_from == "initial"
    # One frozen copy of the initial weights serves as the KL reference and as SPARK's `recycle_from: initial`.
    frozen = build_frozen_copy(cfg, plan, dist, dtype) if cfg.algorithm.kl_coef > 0 or from_initial else None
    synced = lockstep(cfg, dist)
    # RewardDance: P(Yes) rewards from a separate frozen judge checkpoint (reward.judge_model), else the policy's own.
    judge, judge_processor = build_judge(cfg, plan, dist, dtype) if cfg.reward.judge_model else (None, None)
    reward_judge = make_reward_judge(cfg.reward, judge or engine.module, judge_processor or processor,
                                     separate=judge is not None,
                                     sync=(lambda n: max_over_ranks(n, dist.device)) if synced else None)
    rollout = make_engine(cfg.rollout, engine.module, processor, synced)
    initial_rollout = make_engine(cfg.rollout, frozen, processor, synced) if from_initial else None
    state = TrainState()
    if resume:
        path = ckpt.resolve_checkpoint(resume, run_dir)
        saved = ckpt.load_checkpoint(engine, path)
        state = TrainState(**saved["state"])  # stored as plain values (a checkpoint is loaded weights_only)
        source.load_state_dict(saved["data"])
        if spark is not None:
            spark.load_state_dict(state.algorithm.get("spark", {}))
        print(f"resumed from {path} at step {state.step}")
    logger = MetricsLogger(run_dir, dist.is_main, cfg.logging.tensorboard,
                           cfg.logging.wandb_project if cfg.logging.wandb else None, resume_step=state.step)
    trainer = Trainer(cfg, plan, dist, engine, frozen if cfg.algorithm.kl_coef > 0 else None, processor, rollout,
                      state, reward_judge=reward_judge, grad_clip=trainer_clip(cfg, plan, dtype))
    spo = trainer.spo_state  # SPO's per-prompt tracker (None for the other estimators)
    if spo is not None and cfg.algorithm.spo_prioritize:
        source.prioritise(DEFAULT_WEIGHT)
        source.set_weights(spo_glue.weights_of(list(source.rows_of_key), spo))
    start_time = time.perf_counter()

    def run_eval() -> dict[str, float]:
        metrics = trainer.evaluate(val_prompts, benchmarks)
        judge = spark.evaluate_judge(trainer.model, processor, held_out) if spark is not None else {}
        return {**metrics, **judge}

    if state.step == 0:
        logger.log(0, run_eval())
    progress = progress_bar(cfg, dist, state.step)
    n = cfg.rollout.samples_per_prompt
    # The set-up's objects (modules, tokenizer, imported libraries: ~0.5 M) live for the whole run: kept out of the
    # cyclic collector's full passes, which otherwise walk them all (~0.2 s each, every ~50 steps on the CPU demo).
    gc.collect()
    gc.freeze()
    for step in range(state.step + 1, cfg.trainer.rollout_steps + 1):
        metrics = Means()
        skipped_before = state.skipped_updates
        t0 = time.perf_counter()

        # 1. sample: this rank's share of the step's prompts (under SPARK `mixed`, recycled prompts fill a share;
        #    under SPO they are drawn by the tracker's uncertainty, and first visits get a prior)
        aux = spark.take_mixed(step) if spark is not None else []
        n_aux = int(all_reduce_sum([len(aux)], dist.device)[0])
        drawn = source.next_prompts(cfg.trainer.prompts_per_step - n_aux)
        policy = drawn[dist.rank :: dist.world_size]
        experts = source.next_experts(plan.expert_sequences_per_step)[dist.rank :: dist.world_size]
        if spo is not None:
            unseen = spo_glue.first_visits(policy, spo, cfg.algorithm)
            if cfg.algorithm.spo_init_samples > 0:  # every rank joins (ZeRO-3), with or without unseen prompts
                probes = trainer.rollout(unseen, cfg.algorithm.spo_init_samples, metrics, "spo/init_")
                trainer.reward(probes)
                spo_glue.seed_from_samples(probes, spo, cfg.algorithm)
        # 2. rollout and 3. reward (meanwhile, where allowed, the old/reference log-probs of step 5: `score`)
        groups = trainer.rollout(policy + aux, n, metrics, "")
        learns = spark is None or cfg.spark.train_on_policy
        prepared = trainer.score(groups, experts if learns else None, plan.reuse_old_logprobs, metrics, "")
        trained = trainer.informative_groups(groups, source, n, metrics) if cfg.algorithm.dynamic_sampling else groups
        # 4. recycle (SPARK): judge and reflection prompts from this step's verified rollouts (or, without
        #    co-evolution, from the frozen initial model's rollouts of the same prompts)
        if spark is not None:
            if initial_rollout is not None:
                recycled_from = trainer.rollout(policy, n, metrics, "initial/", engine=initial_rollout)
                trainer.reward(recycled_from, metrics, "initial/")
            else:
                recycled_from = groups
            spark.recycle(recycled_from, step, metrics)
            spark.log_trained(aux, step, metrics)
        # 5. logprobs and 6. update (the reward-only ablation rolls out and recycles policy prompts, no update)
        if learns:
            trainer.learn(trained, experts, plan.optimizer_steps_per_rollout_step, plan.reuse_old_logprobs, metrics,
                          "", prepared)
        if spo is not None:
            source.set_weights(spo_glue.weights_of([prompt_key(p) for p in drawn], spo))
            for name, value in spo_glue.tracker_metrics(spo, source.pool_size).items():
                metrics.add(name, value)
        # 7. SPARK's auxiliary phase: the recycled prompts, rolled out, verified and trained the same way
        aux_groups = [g for g in groups if g.prompt.kind != "policy"]
        if spark is not None and (aux := spark.take_phase(step)) is not None:
            aux_groups = trainer.rollout(aux, plan.aux_samples_per_prompt, metrics, "aux/")
            aux_experts = label_experts(aux, cfg.spark.aux_sft_prompts)
            prepared = trainer.score(aux_groups, aux_experts, plan.aux_reuse_old_logprobs, metrics, "aux/")
            trainer.learn(aux_groups, aux_experts, plan.aux_optimizer_steps_per_phase, plan.aux_reuse_old_logprobs,
                          metrics, "aux/", prepared)
            spark.log_trained(aux, step, metrics)
        if spark is not None:
            spark.log_judge(aux_groups, step, metrics)
        check_divergence(state, skipped_before, step, cfg.trainer.max_bad_steps)

        # 8. log (and evaluate)
        every = cfg.logging.log_samples_every
        if dist.is_main and every and (step == 1 or step % every == 0):
            write_samples(run_dir / "samples.jsonl", step, groups)
        results = metrics.reduce(dist.device)
        results["time/step"] = time.perf_counter() - t0
        results["data/skipped_rows"] = float(sum(source.skipped.values()))
        results["data/epoch"] = float(source.epoch())
        state.step = step
        last = step == cfg.trainer.rollout_steps
        if last or (cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0):
            results.update(run_eval())
        logger.log(step, results)
        progress.update(1)
        progress.set_postfix({k.split("/")[-1]: f"{results[k]:.3g}" for k in
                              ("reward/mean", "reward/accuracy", "response/length_mean", "eval/accuracy")
                              if k in results and math.isfinite(results[k])})
        # 9. checkpoint
        if last or (cfg.trainer.save_every and step % cfg.trainer.save_every == 0):
            state.algorithm["spark"] = spark.state_dict() if spark is not None else {}
            ckpt.save_checkpoint(engine, processor, run_dir, step, {"state": state, "data": source.state_dict()},
                                 dump_yaml(cfg), cfg.trainer.keep_last, dist.is_main)
    progress.close()
    gc.unfreeze()
    if dist.is_main:
        write_report(cfg, run_dir, logger.history(), plan, time.perf_counter() - start_time, source.skipped,
                     state, spark.summary() if spark is not None else None, source.build.examples)
    logger.close()
    return run_dir


@dataclass
class TrainState:
    step: int = 0  # completed policy rollout steps
    optimizer_steps: int = 0
    bad_steps_in_a_row: int = 0
    skipped_updates: int = 0
    # Algorithm state saved in checkpoints: {"spark": SparkPhase state, "<advantage name>": estimator state}.
    algorithm: dict = field(default_factory=dict)


class Prepared(NamedTuple):
    """A phase's training sequences with their old/reference log-probs, made while its rewards were scored."""

    seqs: list[Sequence]
    seconds: float  # the log-prob passes' time


def set_advantages(seqs: list[Sequence], groups: list[RolloutGroup], advantages: list[list[float]]) -> None:
    """Each rollout's advantage onto its sequence (`Trainer.sequences` order: non-empty rollouts, then experts)."""
    policy = iter(seqs)
    for g, adv in zip(groups, advantages, strict=True):
        for r, a in zip(g.rollouts, adv, strict=True):
            if r.token_ids:
                next(policy).advantage = a


def informative(groups: list[RolloutGroup]) -> list[RolloutGroup]:
    """The groups whose rewards are not all equal (a flat group has zero advantage: no gradient)."""
    if not groups:
        return []
    flat = flat_groups(torch.tensor([g.rewards for g in groups])).squeeze(1).tolist()
    return [g for g, f in zip(groups, flat) if not f]


def check_divergence(state: TrainState, skipped_before: int, step: int, max_bad_steps: int) -> None:
    """Abort after `max_bad_steps` consecutive steps in which a phase skipped a non-finite update (loss or
    gradient norm)."""
    bad_step = state.skipped_updates > skipped_before
    state.bad_steps_in_a_row = state.bad_steps_in_a_row + 1 if bad_step else 0
    if state.bad_steps_in_a_row >= max_bad_steps:
        raise TrainingAborted(
            f"non-finite loss or gradient norm in {state.bad_steps_in_a_row} consecutive steps (last: step {step}); "
            "lower trainer.lr, check the data, or use algorithm.kl_coef / grad clipping"
        )


@dataclass
class Trainer:
    """What every phase needs; built once by `train`. Each method is one named phase of the loop."""

    cfg: Config
    plan: Derived
    dist: DistInfo
    engine: object  # the DeepSpeed engine around the policy
    reference: torch.nn.Module | None  # frozen initial weights for the KL term (None when kl_coef is 0)
    processor: object
    rollout_engine: RolloutEngine
    state: TrainState
    filler_prompt: EncodedPrompt | None = None  # a prompt of this run, for `filler` sequences
    reward_judge: RewardJudge | None = None  # P(Yes) rewards (reward.judge_weight / judge_mix), None = unused
    grad_clip: float = 0.0  # the norm bound the trainer applies itself (`trainer_clip`), 0 where DeepSpeed does

    @property
    def model(self):
        return self.engine.module

    @cached_property
    def suppressed_ids(self) -> torch.Tensor:
        with torch.inference_mode(False):  # first used inside a no-autograd pass, kept for the update's
            return torch.tensor(vision_token_ids(self.processor.tokenizer), dtype=torch.long)

    def logprobs(self, model, batch, entropy_grad: bool = False,
                 with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs [B, T-1] under the distribution the sampler drew from: the sampling temperature
        (greedy counts as 1) and the vision placeholders it never samples masked out; and the entropy, unless
        `with_entropy` is off."""
        temperature = self.cfg.rollout.temperature if self.cfg.rollout.temperature > 0 else 1.0
        # ZeRO-3 on several ranks: every rank calls the LM head as often as the rank with the most chunks.
        sync = (lambda n: max_over_ranks(n, self.dist.device)) if self.lockstep else None
        return sequence_logprobs(model, batch, temperature=temperature, entropy_grad=entropy_grad,
                                 suppress_ids=self.suppressed_ids, sync_chunks=sync, with_entropy=with_entropy)

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

    # -- rollout and reward --------------------------------------------------------------------------------------
    def rollout(self, prompts: list[Prompt], n: int, metrics: Means, prefix: str,
                engine: RolloutEngine | None = None, sampling: SamplingParams | None = None) -> list[RolloutGroup]:
        t0 = time.perf_counter()
        engine = engine or self.rollout_engine
        engine.wake()
        try:
            groups = engine.generate(prompts, n, sampling or self.sampling())
        except RuntimeError as err:  # sampling from NaN/inf probabilities: the weights have diverged
            if NOT_FINITE not in str(err):
                raise
            raise TrainingAborted(f"the policy's next-token probabilities are not finite at step {self.state.step + 1}"
                                  f" (its weights diverged): lower trainer.lr (now {self.cfg.trainer.lr:g}) or "
                                  "trainer.grad_clip") from None
        engine.sleep()
        metrics.add(f"time/{prefix}rollout", time.perf_counter() - t0)
        metrics.total(f"{prefix}rollout/responses", sum(len(g.rollouts) for g in groups))  # samples drawn, all ranks
        return groups

    def reward(self, groups: list[RolloutGroup], metrics: Means | None = None, prefix: str = "") -> None:
        t0 = time.perf_counter()
        judge, r = self.reward_judge, self.cfg.reward
        before = (judge.scored, judge.hits) if judge is not None else (0, 0)
        judge_all = False
        if judge is not None and self.lockstep:
            # ZeRO-3: every rank must join the judge's forward passes if any rank has something to judge.
            local = sum(1 for g in groups for x in g.rollouts
                        if (r.judge_weight > 0 and not has_gold(x)) or (r.judge_mix > 0 and g.prompt.kind == "policy"))
            judge_all = all_reduce_sum([local], self.dist.device)[0] > 0
        score_groups(groups, r, judge, judge_all=judge_all)
        if r.overlong_buffer:  # DAPO's soft length penalty
            shape_overlong(groups, self.cfg.rollout.max_new_tokens, r.overlong_buffer, r.overlong_penalty)
        if metrics is not None:
            record_group_metrics(groups, prefix, metrics)
            metrics.add(f"time/{prefix}reward", time.perf_counter() - t0)
            if judge is not None:  # (prompt, answer) pairs scored by a forward pass / answered without one
                metrics.total(f"{prefix}judge/scored", judge.scored - before[0])
                metrics.total(f"{prefix}judge/cached", judge.hits - before[1])

    def score(self, groups: list[RolloutGroup], experts: list[Prompt] | None, reuse_old: bool, metrics: Means,
              prefix: str) -> Prepared | None:
        """`reward(groups)`; and meanwhile, where `overlaps`, the sequences `learn(groups, experts)` will train and
        their old/reference log-prob passes, which read the rollouts and never the rewards (the same values as after
        scoring). The verifier's time (its worker process, its regular expressions) then hides behind the model's
        passes instead of adding to them. `experts` None: nothing will be learned from these groups."""
        if experts is None or not self.overlaps:
            self.reward(groups, metrics, prefix)
            return None
        # The passes add no metric while the scorer adds its own to `metrics`: the same sums in the same order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward") as scorer:
            scored = scorer.submit(self.reward, groups, metrics, prefix)
            t0 = time.perf_counter()
            seqs = self.prepare(groups, experts, reuse_old, PromptEncoder(self.processor))
            t1 = time.perf_counter()
            scored.result()  # the scorer's exception, if any, is raised here
        metrics.add(f"time/{prefix}reward_wait", time.perf_counter() - t1)  # scoring that outlasted the passes
        return Prepared(seqs, t1 - t0)

    @property
    def overlaps(self) -> bool:
        """Rewards may be scored beside the log-prob passes: asked for, the builtin verifier (a plug-in reward may
        use the model or the device itself), no judge model (its forward passes would share the device, and under
        ZeRO-3 its collectives the ranks), no dynamic sampling (it trains only the groups the rewards let
        through), and a core the passes leave free (`spare_core`)."""
        return (self.cfg.trainer.overlap_reward and self.cfg.reward.name == "math" and self.reward_judge is None
                and not self.cfg.algorithm.dynamic_sampling and spare_core(self.dist.device))

    # -- advantages, log-probs and the update ----------------------------------------------------------------------
    def advantages(self, groups: list[RolloutGroup], metrics: Means, prefix: str) -> list[list[float]]:
        """One call of the advantage estimator on every group of the phase, gathered from every rank (batch
        statistics and stateful estimators see what one process would); returns this rank's rows."""
        name = self.cfg.algorithm.advantage
        local = [(prompt_key(g.prompt), g.rewards) for g in groups]
        gathered = all_gather_objects(local)
        everything = [row for rows in gathered for row in rows]
        if not everything:
            return []
        sizes = {len(r) for _, r in everything}
        if len(sizes) != 1:
            raise ValueError(f"all groups of a phase must have the same number of rollouts, got {sorted(sizes)}")
        rewards_GN = torch.tensor([r for _, r in everything], dtype=torch.float32)
        state = self.state.algorithm.setdefault(f"advantage/{name}", {})
        adv_GN = get_advantage_fn(name)(rewards_GN, self.cfg.algorithm, keys=[k for k, _ in everything], state=state)
        offset = sum(len(rows) for rows in gathered[: self.dist.rank])
        mine = adv_GN[offset : offset + len(local)]
        # Samples that carry no gradient (GRPO: flat groups; SPO: reward equal to the tracked value).
        metrics.add(f"{prefix}advantage/zero_share", float((mine.abs() < 1e-8).sum()), float(mine.numel()))
        return mine.tolist()

    def prepare(self, groups: list[RolloutGroup], experts: list[Prompt], reuse_old: bool,
                encode: PromptEncoder) -> list[Sequence]:
        """The phase's sequences with their reference log-probs, and their old ones unless the update's own forward
        gives them (`reuse_old`, where no dropout is active)."""
        seqs = self.sequences(groups, experts, encode)
        self.fill_logprobs(seqs, old=not (reuse_old and self.dropout_free))
        return seqs

    def sequences(self, groups: list[RolloutGroup], experts: list[Prompt], encode: PromptEncoder) -> list[Sequence]:
        """The phase's training sequences: every non-empty rollout, then the expert solutions (advantages are set
        later, by `set_advantages`)."""
        seqs = []
        if groups and self.filler_prompt is None:
            self.filler_prompt = encode(groups[0].prompt)
        for g in groups:
            for r in g.rollouts:
                if r.token_ids:  # an empty response takes part in the group baseline, not in the loss
                    seqs.append(Sequence(encode(g.prompt), list(r.token_ids),
                                         behaviour_logprobs=r.logprobs or None, key=prompt_key(g.prompt)))
        tok = self.processor.tokenizer
        for p in experts:
            ids = tok(p.sample.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(Sequence(encode(p), ids, is_expert=True))
        return seqs

    @property
    def lockstep(self) -> bool:
        """See `distributed.lockstep`."""
        return lockstep(self.cfg, self.dist)

    def filler(self) -> Sequence:
        """A sequence that runs a forward pass and contributes nothing: a real prompt of this run (so the vision
        tower runs too) with no response tokens, hence no loss, gradient or metric."""
        return Sequence(self.filler_prompt, [], old_logprobs=[], ref_logprobs=[])

    def forward_chunks(self, seqs: list[Sequence]) -> list[list[Sequence]]:
        """`micro_batch_size` sequences per forward pass; under `lockstep` a rank with fewer chunks adds fillers
        until all ranks have the same number."""
        size = self.cfg.trainer.micro_batch_size
        chunks = [seqs[i : i + size] for i in range(0, len(seqs), size)]
        if self.lockstep:
            chunks += [[self.filler()]] * (max_over_ranks(len(chunks), self.dist.device) - len(chunks))
        return chunks

    def collate(self, seqs: list[Sequence]) -> TrainBatch:
        """One micro-batch on the device, with every prompt's M-RoPE positions (computed once per prompt). On several
        ranks a micro-batch without images gets a last row with one (`vision_filler`; no loss, no metric): ZeRO-3
        gathers parameters per module call, and ZeRO-1/2 reduce gradients in buckets filled in the backward's order,
        so every rank's forward and backward must run the vision tower when any rank's does."""
        if self.dist.world_size > 1 and all(s.prompt.pixel_values is None for s in seqs):
            seqs = [*seqs, Sequence(vision_filler(self.processor), [], old_logprobs=[], ref_logprobs=[])]
        for s in seqs:
            attach_positions(self.model, s.prompt)
        return collate(seqs, self.processor.tokenizer.pad_token_id, share_prompts=self.cfg.trainer.share_prompts,
                       uniform=self.dist.world_size > 1).to(self.dist.device)

    def fill_logprobs(self, seqs: list[Sequence], old: bool = True) -> None:
        """Old (pre-update; skipped with `old` false) and reference log-probs of every response token, under the
        sampler's distribution."""
        if not old and self.reference is None:
            return
        if old:  # (the frozen reference is always in eval mode; the policy only runs for the old log-probs)
            self.model.eval()
        for mb in self.forward_chunks(seqs):
            batch = self.collate(mb)
            with no_autograd(self.model):
                if old:
                    values, _ = self.logprobs(self.model, batch, with_entropy=False)
                    for s, row in zip(mb, response_values(values.float().cpu(), mb)):
                        s.old_logprobs = row
                if self.reference is not None:
                    values, _ = self.logprobs(self.reference, batch, with_entropy=False)
                    for s, row in zip(mb, response_values(values.float().cpu(), mb)):
                        s.ref_logprobs = row
        if old:
            self.model.train()

    def log_sampler_gap(self, seqs: list[Sequence], metrics: Means, prefix: str) -> None:
        """The gap between the sampler's log-probs and the trainer's old ones: mean |delta|, k3 KL(sampler ||
        trainer) and the importance ratio rho = trainer / sampler."""
        seqs = [s for s in seqs
                if s.behaviour_logprobs is not None and len(s.behaviour_logprobs) == len(s.old_logprobs) > 0]
        for gap in sampler_gaps([s.old_logprobs for s in seqs], [s.behaviour_logprobs for s in seqs],
                                self.cfg.algorithm.is_cap):
            metrics.add(f"{prefix}rollout/logprob_abs_diff", gap.abs_diff, gap.tokens)
            metrics.add(f"{prefix}rollout/sampler_kl_k3", gap.k3, gap.tokens)
            metrics.add(f"{prefix}rollout/is_ratio_mean", gap.ratio, gap.tokens)
            metrics.add(f"{prefix}rollout/is_outside_frac", gap.outside, gap.tokens)
            metrics.maximum(f"{prefix}rollout/is_ratio_max", gap.ratio_max)

    @cached_property
    def dropout_free(self) -> bool:
        """No active dropout: the update's forward (train mode) computes what an eval-mode pass would."""
        return not has_dropout(self.model)

    @property
    def spo_state(self) -> dict | None:
        """SPO's tracker (algorithms/spo.py), when the advantage is `spo`."""
        if self.cfg.algorithm.advantage != "spo":
            return None
        return self.state.algorithm.setdefault("advantage/spo", {})

    def learn(self, groups: list[RolloutGroup], experts: list[Prompt], optimizer_steps: int, reuse_old: bool,
              metrics: Means, prefix: str, prepared: Prepared | None = None) -> None:
        """Advantages -> sequences -> old/reference log-probs -> `optimizer_steps` updates. With `reuse_old` (one
        epoch, one optimizer step: `Derived.reuse_old_logprobs`) the old log-probs come from the update's own
        forward pass instead of a separate one. `prepared`: the sequences with their log-probs, made by `score`."""
        t0 = time.perf_counter()
        encode = PromptEncoder(self.processor)
        spo = self.spo_state
        if spo is not None and self.cfg.algorithm.spo_rho == "kl":
            # SPO's forgetting factor: how far the policy moved on each revisited prompt's last response.
            revisited = spo_glue.drift_sequences(groups, spo, encode)
            self.fill_logprobs([seq for _, seq in revisited])
            for drift in spo_glue.set_forgetting(revisited, spo, self.cfg.algorithm):
                metrics.add("spo/drift", drift)
        advantages = self.advantages(groups, metrics, prefix)
        seqs = prepared.seqs if prepared is not None else self.prepare(groups, experts, reuse_old, encode)
        reuse_old = reuse_old and self.dropout_free
        set_advantages(seqs, groups, advantages)
        t1 = time.perf_counter()
        self.update(seqs, max(1, optimizer_steps // self.cfg.algorithm.ppo_epochs), metrics, reuse_old)
        self.rollout_engine.sync_weights(self.model)  # an engine with its own weights (vLLM) takes the new ones
        metrics.add(f"time/{prefix}logprobs", t1 - t0 + (prepared.seconds if prepared is not None else 0.0))
        metrics.add(f"time/{prefix}update", time.perf_counter() - t1)
        self.log_sampler_gap(seqs, metrics, prefix)
        if spo is not None:
            spo_glue.remember([(s.key, s) for s in seqs if not s.is_expert], spo)

    def informative_groups(self, groups: list[RolloutGroup], source: PromptSource, n: int,
                           metrics: Means) -> list[RolloutGroup]:
        """DAPO's dynamic sampling: drop groups whose rewards are all equal (no gradient) and draw more prompts
        until the step holds `prompts_per_step` informative groups over all ranks, at most
        `dynamic_sampling_max_rounds` extra rounds; then exactly that many (a short step if the rounds ran out)."""
        a, want = self.cfg.algorithm, self.cfg.trainer.prompts_per_step
        keep = informative(groups)
        local_seen = len(groups)
        seen, kept = all_reduce_sum([local_seen, len(keep)], self.dist.device)
        metrics.total("dapo/filtered_groups", len(groups) - len(keep))
        for _ in range(a.dynamic_sampling_max_rounds):
            if kept >= want:
                break
            # Draw for the deficit at the informative rate seen so far (at least 10 %), at most a full step.
            draw = min(want, math.ceil((want - kept) / max(0.1, kept / max(1.0, seen))))
            extra = source.next_prompts(draw)[self.dist.rank :: self.dist.world_size]
            more = self.rollout(extra, n, metrics, "")
            self.reward(more, metrics, "")
            useful = informative(more)
            keep += useful
            metrics.total("dapo/extra_prompts", len(extra))
            metrics.total("dapo/filtered_groups", len(more) - len(useful))
            local_seen += len(more)
            seen, kept = all_reduce_sum([local_seen, len(keep)], self.dist.device)
        quota = share_of(len(keep), want, self.dist.rank)
        metrics.add("dapo/short_step", float(kept < want))
        metrics.total("dapo/groups_trained", quota)
        return keep[:quota]

    def update(self, seqs: list[Sequence], num_minis: int, metrics: Means, reuse_old: bool = False) -> None:
        """ppo_epochs passes; each pass deals the rank's sequences into `num_minis` optimizer steps (the same
        number on every rank, whatever each rank holds). With `reuse_old` every sequence's old log-probs are set
        from its micro-batch's forward pass, detached."""
        a = self.cfg.algorithm
        world = self.dist.world_size
        policy_loss_fn = get_policy_loss_fn(a.policy_loss)
        norm_const = float(a.loss_agg_norm or self.cfg.rollout.max_new_tokens)
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
                if a.sft_schedule == "chord":  # CHORD: mu of this optimizer step, once per step
                    metrics.add("chord/mu", self.sft_weights()[1])
                bad = False
                # DeepSpeed counts exactly grad_accum micro-steps per optimizer step. Sharing prompts, a prompt's
                # rows go to the same micro-batches (the same optimizer step: the same sum of gradients).
                for mb in split_even(by_prompt(mini) if self.cfg.trainer.share_prompts else mini, accum):
                    if not mb and self.lockstep:
                        mb = [self.filler()]  # the other ranks run a forward here: join it
                    loss = None
                    if mb:
                        loss, logp = self.micro_loss(self.collate(mb), pg_denom, sft_denom, policy_loss_fn,
                                                     metrics)
                        if reuse_old:
                            for s, row in zip(mb, response_values(logp.detach().float().cpu(), mb)):
                                s.old_logprobs = row
                    finite = loss is None or bool(torch.isfinite(loss).item())
                    bad = bad or all_reduce_sum([float(finite)], self.dist.device)[0] < world
                    if bad or loss is None:
                        # Keep DeepSpeed's accumulation bookkeeping (and ZeRO's reduction hooks) in step on every
                        # rank with an exact zero; the optimizer step is then taken with lr 0.
                        loss = zero_loss(self.model)
                    # DeepSpeed averages over ranks and (by default) over accumulation steps; our loss is already
                    # a share of the global mean, so undo both.
                    self.engine.backward(loss * world, scale_wrt_gas=False)
                    if self.engine.is_gradient_accumulation_boundary():
                        self._optimizer_step(bad, metrics)
                    else:
                        self.engine.step()

    def _optimizer_step(self, bad: bool, metrics: Means) -> None:
        """The step at an accumulation boundary; a bad step (non-finite loss or gradient on any rank) is taken with
        lr 0, and the optimizer's pre-step hook zeroes non-finite gradient entries (`build_engine`)."""
        # DeepSpeed reports the norm only after applying the update it belongs to, so a non-finite gradient (a huge
        # lr) is looked for before stepping, on every rank's gradients (ZeRO-1/2/3: each rank's partition).
        # ZeRO-0 in fp32 does not record the norm; its grads are already all-reduced here.
        if self.grad_clip:  # ZeRO-0 fp32: clipped here as DeepSpeed would, with the norm taken once
            own_norm = clip_like_deepspeed(self.model, self.grad_clip, self.dist.world_size)
        else:
            own_norm = None if self.cfg.deepspeed.zero_stage else grad_norm(self.model)
        if not bad and not self.grads_finite(own_norm):
            bad = True
            metrics.total("actor/nonfinite_grad_steps", float(self.dist.is_main))  # optimizer steps, counted once
        if bad:
            for group in self.engine.optimizer.param_groups:
                group["lr"] = 0.0  # skip this update; the scheduler restores the lr on its next step
        lr = self.engine.get_lr()[0]
        self.engine.step()
        self.state.optimizer_steps += 1
        norm = self.engine.get_global_grad_norm()
        norm = own_norm if norm is None else norm
        if bad or (norm is not None and not math.isfinite(norm)):  # the latter: DeepSpeed's bf16 optimizer skipped
            self.state.skipped_updates += 1
            metrics.add("actor/skipped_updates", 1.0)
            return
        if norm is not None:
            metrics.add("actor/grad_norm", float(norm))
        metrics.add("actor/lr", lr)

    def sft_weights(self) -> tuple[float, float]:
        """(weight of the RL terms, weight of the SFT term) at the current optimizer step: (1, sft_coef), or under
        CHORD (1 - mu, mu) with mu from `chord_mu` at `state.optimizer_steps` (0 = the first update)."""
        a = self.cfg.algorithm
        if a.sft_schedule != "chord":
            return 1.0, a.sft_coef
        mu = chord_mu(self.state.optimizer_steps, a.chord_mu_warmup, a.chord_mu_decay, a.chord_mu_peak,
                      a.chord_mu_valley)
        return 1.0 - mu, mu

    def grads_finite(self, norm: float | None) -> bool:
        """True when every rank's gradients are finite; a collective, called by every rank at the boundary. `norm`:
        this rank's gradient norm where the trainer computes it (ZeRO-0), non-finite exactly when a gradient is."""
        optimizer = self.engine.optimizer
        if self.cfg.deepspeed.zero_stage > 0 and hasattr(optimizer, "has_overflow"):
            return not optimizer.has_overflow(partition_gradients=True)  # ZeRO's own inf/NaN check, all-reduced
        local = math.isfinite(grad_norm(self.model) if norm is None else norm)
        return all_reduce_sum([float(local)], self.dist.device)[0] == self.dist.world_size

    def micro_loss(self, batch, pg_denom, sft_denom, policy_loss_fn,
                   metrics: Means) -> tuple[torch.Tensor, torch.Tensor]:
        """(this micro-batch's share of the step loss, the token log-probs [B, T-1] it was computed from)."""
        a = self.cfg.algorithm
        logp, entropy = self.logprobs(self.model, batch, entropy_grad=a.entropy_coef != 0)
        # On-policy (`reuse_old`): this forward is the old policy; the ratio is exactly 1, its gradient is not.
        old = batch.old_logprobs if batch.old_logprobs is not None else logp.detach()
        behaviour = batch.behaviour_logprobs
        if behaviour is not None:  # rows without the sampler's log-probs (expert, filler) get ratio 1
            behaviour = torch.where(batch.has_behaviour.unsqueeze(1), behaviour, old)
        mask = batch.response_mask
        expert = batch.is_expert.float().unsqueeze(1)
        weights = batch.loss_weights.unsqueeze(1)
        pg_mask, sft_mask = mask * (1.0 - expert), mask * expert
        out = policy_loss_fn(logp, old, batch.advantages, pg_mask, a)
        is_w = is_weights(old, behaviour, pg_mask, self.plan.is_correction, a.is_cap)
        loss = aggregate(out.loss_BT * weights * is_w, pg_mask, a.loss_agg, pg_denom)
        n_pg = pg_mask.sum().item()
        # Each micro-batch holds a share of its optimizer step's loss: weight the shares so the logged value is
        # the mean over optimizer steps of the full step loss.
        share = 1.0 / (self.engine.gradient_accumulation_steps() * self.dist.world_size)
        if mask.sum() > 0:  # not a lockstep filler
            metrics.add("loss/policy", loss.item(), share)
        if n_pg:
            metrics.add("actor/clipfrac", (out.clipped_BT * pg_mask).sum().item(), n_pg)
            metrics.add("actor/entropy", (entropy.detach() * pg_mask).sum().item(), n_pg)
            metrics.add("actor/ratio_mean", (out.ratio_BT.detach() * pg_mask).sum().item(), n_pg)
        if self.reference is not None and batch.ref_logprobs is not None:
            kl = kl_penalty(logp, batch.ref_logprobs, a.kl_estimator)
            kl_loss = aggregate(kl, pg_mask, a.loss_agg, pg_denom)
            loss = loss + a.kl_coef * kl_loss
            if n_pg:
                metrics.add("actor/kl", (kl.detach() * pg_mask).sum().item(), n_pg)
        if a.entropy_coef:
            loss = loss - a.entropy_coef * aggregate(entropy, pg_mask, a.loss_agg, pg_denom)
        rl_weight, sft_weight = self.sft_weights()
        if rl_weight != 1.0:
            loss = rl_weight * loss  # CHORD: (1 - mu) x (policy loss + KL - entropy bonus)
        rl_loss = loss
        if sft_mask.sum() > 0:
            sft = aggregate(sft_token_loss(logp, a.chord_phi), sft_mask, "token-mean", sft_denom)
            loss = loss + sft_weight * sft
            metrics.add("loss/sft", (-logp.detach() * sft_mask).sum().item(), sft_mask.sum().item())
        if a.sft_schedule == "chord" and mask.sum() > 0:
            self.log_chord_split(loss, rl_loss, logp, pg_mask, sft_mask, share, metrics)
        return loss, logp

    def log_chord_split(self, loss, rl_loss, logp, pg_mask, sft_mask, share, metrics: Means) -> None:
        """CHORD's RL/SFT split of this micro-batch: the weighted terms as shares of the step loss (`chord/rl_term`,
        `chord/sft_term`) and `chord/sft_grad_share` = sum |dL/dlogp| over expert tokens / over all tokens, the SFT
        part's share of the gradient reaching the token log-probs (through which every parameter gradient but the
        entropy bonus's flows)."""
        rl_term = rl_loss.item()
        metrics.add("chord/rl_term", rl_term, share)
        metrics.add("chord/sft_term", loss.item() - rl_term, share)
        if loss.requires_grad:
            g = torch.autograd.grad(loss, logp, retain_graph=True)[0].abs()
            sft_mass, rl_mass = (g * sft_mask).sum().item(), (g * pg_mask).sum().item()
            metrics.add("chord/sft_grad_share", sft_mass, sft_mass + rl_mass)

    # -- held-out evaluation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, prompts: list[Prompt], benchmarks: dict | None = None) -> dict[str, float]:
        results = self.evaluate_benchmarks(benchmarks) if benchmarks else {}
        if not prompts and self.dist.world_size == 1:
            return results
        # On several ranks a rank without held-out prompts (fewer than ranks) still joins: the metric reduction is
        # a collective, and so is every forward pass under ZeRO-3 (the engine runs fillers).
        t = self.cfg.trainer
        sampling = self.sampling(greedy=True, max_new_tokens=t.eval_max_new_tokens)
        groups = self.rollout(prompts, 1, Means(), "eval/", sampling=sampling)
        self.reward(groups)
        metrics = Means()
        for g in groups:
            r = g.rollouts[0]
            metrics.add("eval/accuracy", float(r.reward.correct))
            if g.prompt.sample.category:
                metrics.add(f"eval/accuracy/{g.prompt.sample.category}", float(r.reward.correct))
            metrics.add("eval/reward", r.reward.overall)
            metrics.add("eval/format", r.reward.parts.get("format", float("nan")))
            metrics.add("eval/length", len(r.token_ids))
        return {**results, **metrics.reduce(self.dist.device)}

    def evaluate_benchmarks(self, benchmarks: dict) -> dict[str, float]:
        """Benchmark metrics (spark_vl.eval) over each rank's shard, averaged weighted by shard size."""
        from spark_vl.eval import evaluate

        e = self.cfg.eval
        result = evaluate(self.rollout_engine, benchmarks, e.protocol, batch_size=e.batch_size,
                          max_new_tokens=self.cfg.trainer.eval_max_new_tokens or e.max_new_tokens)
        metrics = Means()
        flat = result.flat_metrics("bench")
        for name, loaded in benchmarks.items():
            weight = float(len(loaded.samples))
            prefix = f"bench/{loaded.benchmark.name}/"  # results are keyed by the adapter's own name
            for key, value in flat.items():
                if key.startswith(prefix):
                    metrics.add(f"bench/{name}/{key[len(prefix):]}", value * weight, weight)
        return metrics.reduce(self.dist.device)
