"""SPARK inside the training loop: recycle each policy step's groups and train on the auxiliary prompts.

  alternate  after the policy update, if every rank's queue holds a full share of `prompts_per_step`
             auxiliary prompts, run an auxiliary phase (rollout -> verifier -> the same update);
  mixed      auxiliary prompts take `spark.mixed_share` of each step's batch.

The queue lives on each rank (it recycles that rank's own groups); readiness is agreed across ranks so
every rank runs the same number of optimizer steps. Queue and RNG state go into checkpoints.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import torch

from spark_vl.config import Config
from spark_vl.spark import AuxQueue, judge_metrics, judge_score, recycle, verdict_separation
from spark_vl.trainer.engine import all_reduce_sum
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
    def __init__(self, cfg: Config, rank: int, world_size: int, device):
        self.cfg = cfg
        self.world, self.device = world_size, device
        self.queue = AuxQueue(cfg.spark.max_age)
        self.rng = random.Random(f"spark/{cfg.trainer.seed}/{rank}")
        self.totals: Counter = Counter()  # recycling counts over the whole run, for summary.md
        self.aux_phases = 0
        self.initial_engine = None  # recycle_from=initial: rollouts of the frozen initial model

    def recycling_groups(self, trainer, groups: list[RolloutGroup]) -> list[RolloutGroup]:
        """The groups auxiliary prompts are built from: this step's policy groups, or (no co-evolution) fresh
        rollouts of the same prompts by the frozen initial model, scored by the same verifier."""
        policy = [g for g in groups if g.prompt.kind == "policy"]
        if self.cfg.spark.recycle_from == "policy":
            return policy
        if self.initial_engine is None:
            from spark_vl.config import derived
            from spark_vl.rollout import make_engine
            from spark_vl.trainer.engine import build_reference, zero3_loading

            # Built like the KL reference: a frozen copy of the initial weights, partitioned under ZeRO-3.
            plan = derived(self.cfg, self.world)
            keep = zero3_loading(self.cfg, plan, trainer.dtype)  # noqa: F841 (alive while the copy loads)
            frozen = build_reference(self.cfg.model, self.cfg, plan, trainer.dist, trainer.dtype)
            synced = self.cfg.deepspeed.zero_stage == 3 and self.world > 1
            self.initial_engine = make_engine(self.cfg.rollout.backend, frozen, trainer.processor,
                                              self.cfg.rollout.generation_batch_size, synced)
        initial = self.initial_engine.generate([g.prompt for g in policy], self.cfg.rollout.samples_per_prompt,
                                               trainer.sampling())
        trainer.reward(initial)
        return initial

    @property
    def share(self) -> int:
        """Auxiliary prompts per rank for one alternate phase."""
        return self.cfg.trainer.prompts_per_step // self.world

    def take_mixed(self, step: int) -> list[Prompt]:
        if self.cfg.spark.schedule != "mixed":
            return []
        k = math.floor(self.cfg.spark.mixed_share * self.cfg.trainer.prompts_per_step / self.world)
        return self.queue.pop(k, step)

    def after_policy_step(self, trainer, groups: list[RolloutGroup], step: int, m) -> None:
        source = self.recycling_groups(trainer, groups)
        result = recycle(source, self.cfg.spark, self.rng, step, self.cfg.reward.extract)
        self.queue.push(result.prompts, step)
        for name, value in result.stats.as_dict().items():
            m.add(name, value)
            self.totals[name] += value
        aux_groups = [g for g in groups if g.prompt.kind != "policy"]
        if self.cfg.spark.schedule == "alternate":
            ready = all_reduce_sum([float(self.queue.ready(self.share, step))], self.device)[0] == self.world
            if ready:
                prompts = self.queue.pop(self.share, step)
                n_aux = self.cfg.spark.samples_per_prompt or self.cfg.rollout.samples_per_prompt
                aux_groups = trainer.run_phase(prompts, label_experts(prompts, self.cfg.spark.aux_sft_prompts),
                                               n_aux, "aux/", m)
                self.aux_phases += 1
        judged = judge_metrics(aux_groups)
        for name, value in judged.as_dict().items():
            if value is not None and math.isfinite(value):
                m.add(name, value)
        if judged.pointwise_tpr is not None and judged.pointwise_tnr is not None:
            # Chance is 0.5 whatever the share of correct answers shown (plain accuracy rewards a constant verdict).
            m.add("spark/judge/pointwise_balanced_accuracy", (judged.pointwise_tpr + judged.pointwise_tnr) / 2)
        for name, value in self.queue.stats(step).as_dict().items():
            m.add(name, value)

    @torch.no_grad()
    def evaluate_judge(self, trainer, prompts: list[Prompt]) -> dict[str, float]:
        """Held-out judge quality with no sampling: each question shown once with its gold answer and once
        with another row's gold for the same task (a wrong answer), scored by the model's own P(Yes); and the
        same two answers side by side in both orders, scored by its own P(A).

        eval/judge_accuracy: share of the 2N pointwise judgments on the right side of 0.5 (chance 0.5);
        eval/judge_auc: probability that a correct answer gets a higher P(Yes) than a wrong one;
        eval/judge_pairwise_accuracy: share of the 2N pairwise judgments that prefer the gold (chance 0.5);
        eval/judge_pairwise_consistency: share of questions judged the same way in both orders.
        """
        pairs = wrong_answers(prompts)
        if not pairs:
            return {}
        shown = [p for p, _ in pairs]
        golds, wrongs = [p.sample.answer for p in shown], [w for _, w in pairs]
        right = judge_score(trainer.model, trainer.processor, shown, golds)
        wrong = judge_score(trainer.model, trainer.processor, shown, wrongs)
        gold_a = judge_score(trainer.model, trainer.processor, shown, list(zip(golds, wrongs)), "pairwise")
        gold_b = judge_score(trainer.model, trainer.processor, shown, list(zip(wrongs, golds)), "pairwise")
        accuracy, auc = verdict_separation(right, wrong)
        n = float(len(pairs))
        m = {"eval/judge_accuracy": accuracy, "eval/judge_auc": auc,
             "eval/judge_p_yes_correct": sum(right) / n, "eval/judge_p_yes_wrong": sum(wrong) / n,
             "eval/judge_pairwise_accuracy": verdict_separation(gold_a, gold_b)[0],
             "eval/judge_pairwise_consistency": sum((a > 0.5) == (b < 0.5) for a, b in zip(gold_a, gold_b)) / n}
        totals = all_reduce_sum([v * n for v in m.values()] + [n], self.device)
        return {k: totals[i] / totals[-1] for i, k in enumerate(m)}

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
