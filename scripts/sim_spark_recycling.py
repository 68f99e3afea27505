"""Simulate SPARK's recycling and auxiliary schedule on W ranks, with the trainer's own `SparkPhase`.

Each simulated rank is a thread running the real `SparkPhase.recycle` / `take_phase` / `take_mixed` /
`log_trained` on its share of 64 policy groups (8 rollouts each, every rollout correct with probability
`accuracy`); the ranks' collectives (gather, all-reduce) are exchanged through a barrier. Nothing is trained:
what is measured is what the auxiliary phases *would* train each step, in total over the ranks, and its age.

    python scripts/sim_spark_recycling.py                  # alternate and mixed, W = 1, 2, 8, 30 steps

This is the audit's simulation (shared/reviews/method_audit.md, B1/B5) run against the fixed code; results in
docs/SPARK.md.
"""

from __future__ import annotations

import argparse
import random
import threading
from collections import Counter
from types import SimpleNamespace

from PIL import Image

from spark_vl.config import Config, derived
from spark_vl.data.prompts import build_prompt
from spark_vl.trainer import distributed, spark_phase
from spark_vl.trainer.metrics import Means
from spark_vl.types import RewardOutput, Rollout, RolloutGroup, Sample


class ThreadWorld:
    """torch.distributed's gather / all-reduce for W threads, one per rank."""

    def __init__(self, world: int):
        self.world, self.local = world, threading.local()
        self.barrier, self.slots = threading.Barrier(world), [None] * world

    def all_gather_objects(self, value):
        self.slots[self.local.rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def all_reduce_sum(self, values, device=None):
        return [sum(column) for column in zip(*self.all_gather_objects(list(values)))]


def groups_for(step: int, indices: range, accuracy: float, seed: int) -> list[RolloutGroup]:
    """The policy groups of `indices` (this rank's share of the step); each group's rollouts depend only on
    (seed, step, index), so every world size sees the same data."""
    img = Image.new("RGB", (28, 28))
    out = []
    for i in indices:
        rng = random.Random(f"{seed}/{step}/{i}")
        sample = Sample(uid=f"{step}/{i}", problem="How many?", answer="3", images=[img], answer_type="integer")
        p = build_prompt(sample, template="spark", images=[img])
        rollouts = []
        for _ in range(8):
            right = rng.random() < accuracy
            text = "\\boxed{3}" if right else f"\\boxed{{{rng.randint(4, 9)}}}"
            rollouts.append(Rollout(prompt=p, token_ids=[1], text=text,
                                    reward=RewardOutput(float(right), {"accuracy": float(right)})))
        out.append(RolloutGroup(p, rollouts))
    return out


def simulate(world: int, schedule: str = "alternate", steps: int = 30, accuracy: float = 0.5,
             prompts_per_step: int = 64, seed: int = 0) -> dict:
    """Totals over the run: judgments / reflections trained, mean age of trained items, items expired."""
    cfg = Config()
    cfg.spark.enabled, cfg.spark.schedule = True, schedule
    cfg.trainer.prompts_per_step, cfg.trainer.sequences_per_optimizer_step = prompts_per_step, prompts_per_step
    cfg.rollout.samples_per_prompt = 8
    plan = derived(cfg, world)
    net = ThreadWorld(world)
    per_rank: list[Counter] = [Counter() for _ in range(world)]
    ages: list[list[int]] = [[] for _ in range(world)]
    phases: list = []  # each rank's SparkPhase, filled by the threads
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            net.local.rank = rank
            phase = spark_phase.SparkPhase(cfg, plan, SimpleNamespace(rank=rank, world_size=world, device="cpu"))
            phases.append(phase)
            for step in range(1, steps + 1):
                metrics = Means()
                aux = phase.take_mixed(step)
                n_aux = int(net.all_reduce_sum([len(aux)])[0])
                mine = range(rank, prompts_per_step - n_aux, world)  # the trainer's policy[rank::world]
                phase.recycle(groups_for(step, mine, accuracy, seed), step, metrics)
                trained = list(aux)
                if (taken := phase.take_phase(step)) is not None:
                    trained += taken
                phase.log_trained(trained, step, metrics)
                per_rank[rank].update(metrics.totals)
                ages[rank] += [step - p.meta["step"] for p in trained]
        except BaseException as err:  # surface a thread's failure in the caller
            errors.append(err)
            net.barrier.abort()

    saved = spark_phase.all_gather_objects, spark_phase.all_reduce_sum, distributed.all_gather_objects
    spark_phase.all_gather_objects, spark_phase.all_reduce_sum = net.all_gather_objects, net.all_reduce_sum
    distributed.all_gather_objects = net.all_gather_objects  # behind share_of
    try:
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        spark_phase.all_gather_objects, spark_phase.all_reduce_sum, distributed.all_gather_objects = saved
    if errors:
        raise errors[0]
    total = sum(per_rank, Counter())
    flat = [a for rank_ages in ages for a in rank_ages]
    return {
        "judgments_trained": int(total["spark/aux/judgments_trained"]),
        "reflections_trained": int(total["spark/aux/reflections_trained"]),
        "judgments_built": int(total["spark/recycle/pointwise"] + total["spark/recycle/pairwise"]),
        "reflections_built": int(total["spark/recycle/reflect_cot"] + total["spark/recycle/reflect_answer"]),
        "mean_age": sum(flat) / len(flat) if flat else float("nan"),
        "expired": sum(p.queue.expired for p in phases),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--accuracy", type=float, default=0.5)
    args = parser.parse_args()
    print("| schedule | W | judgments built | reflections built | judgments trained | reflections trained "
          "| mean age | expired |")
    print("|---|---|---|---|---|---|---|---|")
    for schedule in ("alternate", "mixed"):
        for world in (1, 2, 8):
            r = simulate(world, schedule, args.steps, args.accuracy)
            print(f"| {schedule} | {world} | {r['judgments_built']} | {r['reflections_built']} | "
                  f"{r['judgments_trained']} | {r['reflections_trained']} | {r['mean_age']:.2f} | {r['expired']} |")


if __name__ == "__main__":
    main()
