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

from spark_vl.config import Config
from spark_vl.spark import AuxQueue, judge_metrics, recycle
from spark_vl.trainer.engine import all_reduce_sum
from spark_vl.types import Prompt, RolloutGroup


class SparkPhase:
    def __init__(self, cfg: Config, rank: int, world_size: int, device):
        self.cfg = cfg
        self.world, self.device = world_size, device
        self.queue = AuxQueue(cfg.spark.max_age)
        self.rng = random.Random(f"spark/{cfg.trainer.seed}/{rank}")
        self.totals: Counter = Counter()  # recycling counts over the whole run, for summary.md
        self.aux_phases = 0

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
        policy = [g for g in groups if g.prompt.kind == "policy"]
        result = recycle(policy, self.cfg.spark, self.rng, step, self.cfg.reward.extract)
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
                aux_groups = trainer.run_phase(prompts, [], n_aux, "aux/", m)
                self.aux_phases += 1
        for name, value in judge_metrics(aux_groups).as_dict().items():
            if value is not None and math.isfinite(value):
                m.add(name, value)
        for name, value in self.queue.stats(step).as_dict().items():
            m.add(name, value)

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
