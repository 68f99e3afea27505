"""Scoring rewards beside the log-prob passes: when it may, and how the advantages find their sequences."""

import os
from types import SimpleNamespace

import pytest
import torch

from spark_vl.config import load_config
from spark_vl.trainer import distributed
from spark_vl.trainer.batch import Sequence
from spark_vl.trainer.loop import Trainer, set_advantages
from spark_vl.types import Prompt, Rollout, RolloutGroup, Sample


def test_advantages_land_on_the_sequences_of_non_empty_rollouts_in_order():
    prompt = Prompt("p", [], [], Sample("p", "q", "1"))
    groups = [RolloutGroup(prompt, [Rollout(prompt, [5], "a"), Rollout(prompt, [], ""), Rollout(prompt, [6], "b")]),
              RolloutGroup(prompt, [Rollout(prompt, [], ""), Rollout(prompt, [7, 8], "c")])]
    seqs = [Sequence(None, [5]), Sequence(None, [6]), Sequence(None, [7, 8]), Sequence(None, [9], is_expert=True)]
    set_advantages(seqs, groups, [[1.0, 2.0, 3.0], [4.0, 5.0]])
    assert [s.advantage for s in seqs] == [1.0, 3.0, 5.0, 0.0]  # empty rollouts have none; experts keep 0
    with pytest.raises(ValueError):
        set_advantages(seqs, groups, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize(("overrides", "judge", "expected"), [
    ([], None, True),
    (["trainer.overlap_reward=false"], None, False),
    (["algorithm.dynamic_sampling=true"], None, False),  # only the groups the rewards let through are trained
    ([], object(), False),  # a judge model's forward passes would share the device (and ZeRO-3's collectives)
    (["reward.name=my_lab.rewards:score"], None, False),  # a plug-in (not loaded here) may use the device
])
def test_scoring_overlaps_only_where_nothing_else_needs_the_model_or_the_rewards_first(overrides, judge, expected):
    cfg = load_config("configs/demo_cpu.yaml", overrides)
    gpu = SimpleNamespace(device=torch.device("cuda", 0))  # (a spare core: the passes run on the device)
    assert Trainer.overlaps.fget(SimpleNamespace(cfg=cfg, reward_judge=judge, dist=gpu)) is expected


def test_scoring_overlaps_on_a_cpu_only_where_the_passes_leave_a_core_free(monkeypatch):
    """On a CPU whose cores torch's threads fill, the scorer would only take turns with the passes."""
    cfg = load_config("configs/demo_cpu.yaml", [])
    trainer = SimpleNamespace(cfg=cfg, reward_judge=None, dist=SimpleNamespace(device=torch.device("cpu")))
    cores = len(os.sched_getaffinity(0))
    for threads, expected in ((cores, False), (cores + 2, False), (max(1, cores - 1), cores > 1)):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        assert distributed.spare_core(torch.device("cpu")) is expected
        assert Trainer.overlaps.fget(trainer) is expected
    assert distributed.spare_core(torch.device("cuda", 0))
