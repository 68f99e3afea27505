"""SPARK's state inside the training loop: the auxiliary queue, the recycling RNG, the schedule and judge metrics.

The loop calls it by name (trainer/loop.py):

    spark.recycle(groups, step, metrics)        # verified policy groups -> judge / reflection prompts, queued
    aux = spark.take_mixed(step)                 # mixed: recycled prompts that share the next policy batch
    aux = spark.take_phase(step)                 # alternate: a full auxiliary phase's prompts, or None

Caps and phase sizes are per step over all ranks, so W ranks build and train what one process would: each rank
recycles its own groups; `waterfill` over every rank's candidate counts gives each rank its share of
`judgment_cap` / `reflection_cap`, and `plan_take` over every rank's queue inventory its share of a phase.
Every rank joins each count exchange in the same order. Trained items are logged as global totals
(`spark/aux/judgments_trained`, `spark/aux/reflections_trained`) with their mean age in policy steps
(`spark/aux/mean_age`). Queue and RNG state go into checkpoints.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import torch

from spark_vl.config import Config, Derived
from spark_vl.spark import AuxQueue, judge_metrics, judge_score, recycle, verdict_separation
from spark_vl.spark.aux_queue import plan_take
from spark_vl.trainer.distributed import DistInfo, all_gather_objects, all_reduce_sum, lockstep, share_of
from spark_vl.trainer.metrics import Means
from spark_vl.types import Prompt, RolloutGroup


def label_experts(prompts: list[Prompt], k: int) -> list[Prompt]:
    """Copies of the first k auxiliary prompts whose expert solution is their label in \\boxed{}."""
    return [replace(p, kind="expert", sample=replace(p.sample, solution=f"\\boxed{{{p.label}}}")) for p in prompts[:k]]


def wrong_answers(prompts: list[Prompt]) -> list[tuple[Prompt, str]]:
    """(prompt, a wrong answer): the next differing gold of the same category among `prompts`, in order."""
    pairs = []
    for i, p in enumerate(prompts):
        gold = p.sample.answer
        for q in prompts[i + 1 :] + prompts[:i]:
            if q.sample.category == p.sample.category and q.sample.answer != gold and q.sample.answer:
                pairs.append((p, q.sample.answer))
                break
    return pairs


class SparkPhase:
    def __init__(self, cfg: Config, plan: Derived, dist: DistInfo):
        self.cfg, self.plan, self.dist = cfg, plan, dist
        # Recycling uses the per-step caps of the plan (under `mixed` they are scaled to the batch share).
        self.spark_cfg = replace(cfg.spark, judgment_cap=plan.judgment_cap, reflection_cap=plan.reflection_cap)
        self.queue = AuxQueue(cfg.spark.max_age)
        self.rng = random.Random(f"spark/{cfg.trainer.seed}/{dist.rank}")
        self.totals: Counter = Counter()  # recycling counts over the whole run, for summary.md
        self.aux_phases = 0

    def _quota(self, n: int, cap: int) -> int:
        """This rank's share of a per-step cap, from every rank's candidate count (a collective call)."""
        return share_of(n, cap, self.dist.rank)

    def recycle(self, groups: list[RolloutGroup], step: int, metrics: Means) -> None:
        """Judge and reflection prompts from this step's verified policy groups, queued for training."""
        policy = [g for g in groups if g.prompt.kind == "policy"]
        result = recycle(policy, self.spark_cfg, self.rng, step, self.cfg.reward.extract, quota=self._quota)
        self.queue.push(result.prompts, step)
        for name, value in result.stats.as_dict().items():
            metrics.total(name, value)  # counts summed over ranks: what the step built
            self.totals[name] += value  # this rank's run totals (summary.md reports rank 0's, like its logs)

    def _take(self, k: int, step: int) -> list[Prompt]:
        """This rank's share of the `k` items one process holding every rank's queue would pop (newest first)."""
        inventories = all_gather_objects(self.queue.inventory(step))
        return self.queue.pop_planned(plan_take(inventories, k)[self.dist.rank])

    def take_mixed(self, step: int) -> list[Prompt]:
        """schedule=mixed: the recycled prompts that fill `aux_prompts_per_phase` of this step's batch."""
        if self.cfg.spark.schedule != "mixed":
            return []
        return self._take(self.plan.aux_prompts_per_phase, step)

    def take_phase(self, step: int) -> list[Prompt] | None:
        """schedule=alternate: the prompts of one auxiliary phase once all ranks together hold a full phase."""
        if self.cfg.spark.schedule != "alternate":
            return None
        self.queue.evict(step)
        queued = all_reduce_sum([float(len(self.queue))], self.dist.device)[0]
        if queued < self.plan.aux_prompts_per_phase:
            return None
        self.aux_phases += 1
        return self._take(self.plan.aux_prompts_per_phase, step)

    def log_trained(self, prompts: list[Prompt], step: int, metrics: Means) -> None:
        """Global totals of the auxiliary items trained this step, and their mean age in policy steps."""
        metrics.total("spark/aux/judgments_trained", sum(p.kind == "judge" for p in prompts))
        metrics.total("spark/aux/reflections_trained", sum(p.kind == "reflect" for p in prompts))
        ages = [step - p.meta["step"] for p in prompts if p.kind in ("judge", "reflect")]
        if ages:
            metrics.add("spark/aux/mean_age", sum(ages), len(ages))

    def log_judge(self, aux_groups: list[RolloutGroup], step: int, metrics: Means) -> None:
        """Judge metrics of this step's auxiliary rollouts and the queue's state."""
        judged = judge_metrics(aux_groups)
        for name, value in judged.as_dict().items():
            if value is not None and math.isfinite(value):
                metrics.add(name, value)
        if judged.pointwise_tpr is not None and judged.pointwise_tnr is not None:
            # Chance is 0.5 whatever the share of correct answers shown (plain accuracy rewards a constant verdict).
            metrics.add("spark/judge/pointwise_balanced_accuracy", (judged.pointwise_tpr + judged.pointwise_tnr) / 2)
        for name, value in self.queue.stats(step).as_dict().items():
            metrics.add(name, value)

    @torch.no_grad()
    def evaluate_judge(self, model, processor, prompts: list[Prompt]) -> dict[str, float]:
        """Held-out judge quality with no sampling: each question shown once with its gold answer and once
        with another row's gold for the same task (a wrong answer), scored by the model's own P(Yes); and the
        same two answers side by side in both orders, scored by its own P(A).

        `prompts` is the whole held-out set, the same on every rank: the pairs are dealt over the ranks and their
        scores gathered, so W ranks report what one process would (AUC included). Under ZeRO-3 on several ranks
        every rank runs the same four forward passes: a rank without a pair scores one and drops it, and a pass
        without an image gets the vision filler row (`judge_score(lockstep=True)`).

        eval/judge_accuracy: share of the 2N pointwise judgments on the right side of 0.5 (chance 0.5);
        eval/judge_auc: probability that a correct answer gets a higher P(Yes) than a wrong one;
        eval/judge_pairwise_accuracy: share of the 2N pairwise judgments that prefer the gold (chance 0.5);
        eval/judge_pairwise_consistency: share of questions judged the same way in both orders.
        """
        pairs = wrong_answers(prompts)
        if not pairs:
            return {}
        mine = pairs[self.dist.rank :: self.dist.world_size]
        synced = lockstep(self.cfg, self.dist)
        scored = mine or (pairs[:1] if synced else [])
        shown = [p for p, _ in scored]

        def score(answers: list, form: str = "pointwise") -> list[float]:
            return judge_score(model, processor, shown, answers, form, lockstep=synced)[: len(mine)] if shown else []

        golds, wrongs = [p.sample.answer for p, _ in scored], [w for _, w in scored]
        local = list(zip(score(golds), score(wrongs), score(list(zip(golds, wrongs)), "pairwise"),
                         score(list(zip(wrongs, golds)), "pairwise")))
        right, wrong, gold_a, gold_b = map(list, zip(*[row for part in all_gather_objects(local) for row in part]))
        accuracy, auc = verdict_separation(right, wrong)
        n = float(len(pairs))
        return {"eval/judge_accuracy": accuracy, "eval/judge_auc": auc,
                "eval/judge_p_yes_correct": sum(right) / n, "eval/judge_p_yes_wrong": sum(wrong) / n,
                "eval/judge_pairwise_accuracy": verdict_separation(gold_a, gold_b)[0],
                "eval/judge_pairwise_consistency": sum((a > 0.5) == (b < 0.5) for a, b in zip(gold_a, gold_b)) / n}

    def state_dict(self) -> dict:
        return {"queue": self.queue.state_dict(), "rng": self.rng.getstate(), "totals": dict(self.totals),
                "aux_phases": self.aux_phases}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.queue.load_state_dict(state["queue"])
        self.rng.setstate(state["rng"])
        self.totals = Counter(state.get("totals", {}))
        self.aux_phases = state.get("aux_phases", 0)

    def summary(self) -> str:
        lines = [f"- schedule `{self.cfg.spark.schedule}`; auxiliary phases run: {self.aux_phases}"]
        lines += [f"- {name.split('/')[-1]}: {int(v)}" for name, v in sorted(self.totals.items())]
        return "\n".join(lines)
