"""SPARK's per-step caps and phases are global: W simulated ranks (threads running the trainer's own SparkPhase)
build and train what one process does (shared/reviews/method_audit.md B1, B5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "scripts" / "sim_spark_recycling.py"
_spec = importlib.util.spec_from_file_location("sim_spark_recycling", _path)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)


@pytest.mark.parametrize("schedule", ["alternate", "mixed"])
def test_every_world_size_builds_and_trains_what_one_process_does(schedule):
    results = {w: sim.simulate(w, schedule, steps=30) for w in (1, 2, 8)}
    one = results[1]
    for w, r in results.items():
        for key in ("judgments_built", "reflections_built", "judgments_trained", "reflections_trained"):
            assert r[key] == one[key], (w, key, r[key], one[key])
        # 64 groups of 8 rollouts at accuracy 0.5 give more candidates than the caps: reflections are not starved
        assert r["judgments_trained"] == r["reflections_trained"] > 0
        assert r["expired"] == 0
        if schedule == "alternate":  # 32 + 32 built per step, one 64-prompt phase per step: the current step's
            assert r["judgments_trained"] == 30 * 32 and r["mean_age"] < 1
        else:  # mixed: 32 auxiliary prompts of each 64-prompt batch, built one step before (the earliest possible)
            assert r["judgments_trained"] == 29 * 16 and r["mean_age"] == 1.0


def test_caps_bind_per_step_over_all_ranks_when_ranks_hold_few_candidates():
    """At accuracy 0.95 most groups are all correct: reflections are scarce and unevenly spread over 8 ranks; the
    totals built and trained still equal one process's."""
    one, eight = sim.simulate(1, "alternate", steps=12, accuracy=0.95), sim.simulate(8, "alternate", steps=12,
                                                                                      accuracy=0.95)
    for key in ("judgments_built", "reflections_built", "judgments_trained", "reflections_trained"):
        assert eight[key] == one[key], key
