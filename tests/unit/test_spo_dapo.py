"""SPO's tracker math, prioritised sampling and DAPO's overlong shaping, against hand computation."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from spark_vl.algorithms.spo import (
    DEFAULT_WEIGHT,
    forgetting_factor,
    prior_counts,
    sampling_weight,
    spo,
    tracked_value,
)
from spark_vl.config import AlgorithmConfig, Config, ConfigError, validate
from spark_vl.data.sampler import MixtureSampler
from spark_vl.rewards.score import overlong_penalty


def test_forgetting_factor_by_hand():
    assert forgetting_factor(0.0, 0.875) == 0.96  # first visit: 1, clipped to rho_max
    assert forgetting_factor(0.005, 0.875) == pytest.approx(2 ** (-0.005 / 0.06))  # 0.9439, inside the band
    assert forgetting_factor(0.06, 0.875) == 0.875  # 0.5 unclipped -> rho_min


def test_prior_counts_by_hand():
    # N = 1 / (1 - 0.875) = 8; 3 of 8: alpha = 8 * 3.5 / 9, beta = 8 * 5.5 / 9
    assert prior_counts(3, 8, 0.875) == pytest.approx((8 * 3.5 / 9, 8 * 5.5 / 9))
    assert prior_counts(0, 0, 0.875) == (0.5, 0.5)  # Jeffreys


def test_spo_advantage_and_update_by_hand():
    state: dict = {}
    adv = spo(torch.tensor([[1.0], [0.0]]), AlgorithmConfig(), ["x", "y"], state)
    # values 0.5 (Jeffreys): A = [0.5, -0.5]; batch mean 0, unbiased std 0.7071
    assert adv.flatten().tolist() == pytest.approx([0.5 / 0.5**0.5, -0.5 / 0.5**0.5], abs=1e-6)
    # first visit: rho = 0.96; alpha_x = 0.96 * 0.5 + 1, beta_x = 0.96 * 0.5
    assert (state["alpha"]["x"], state["beta"]["x"]) == pytest.approx((1.48, 0.48))
    assert tracked_value(state, "y") == pytest.approx(0.48 / 1.96)
    state["rho"] = {"x": 0.9}  # set by the trainer from the policy's drift on x
    spo(torch.tensor([[0.0]]), AlgorithmConfig(), ["x"], state)
    assert (state["alpha"]["x"], state["beta"]["x"]) == pytest.approx((0.9 * 1.48, 0.9 * 0.48 + 1))
    assert state["rho"] == {}  # used once


def test_tracker_converges_to_the_pass_rate():
    rng = random.Random(0)
    state: dict = {}
    cfg = AlgorithmConfig(spo_rho="constant", spo_rho_min=0.9)
    for _ in range(400):
        spo(torch.tensor([[float(rng.random() < 0.3)], [float(rng.random() < 0.8)]]), cfg, ["a", "b"], state)
    assert tracked_value(state, "a") == pytest.approx(0.3, abs=0.15)
    assert tracked_value(state, "b") == pytest.approx(0.8, abs=0.15)


def test_sampling_weight_by_hand():
    assert sampling_weight(0.5) == pytest.approx(0.55) == DEFAULT_WEIGHT
    assert sampling_weight(0.0) == pytest.approx(0.05) and sampling_weight(1.0) == pytest.approx(0.05)


def test_weighted_sampler_follows_weights_and_resumes():
    weights = [np.array([1.0, 0.0, 3.0])]
    sampler = MixtureSampler([3], seed=1)
    counts = Counter(sampler.next(weights)[1] for _ in range(4000))
    assert counts[1] == 0 and counts[2] / 4000 == pytest.approx(0.75, abs=0.03)
    saved = sampler.state_dict()
    ahead = [sampler.next(weights) for _ in range(10)]
    again = MixtureSampler([3], seed=1)
    again.load_state_dict(saved)
    assert [again.next(weights) for _ in range(10)] == ahead


@pytest.mark.parametrize("length, expected", [(50, 0.0), (80, 0.0), (90, -0.5), (100, -1.0), (120, -1.0)])
def test_overlong_penalty_by_hand(length, expected):
    assert overlong_penalty(length, 100, 20) == pytest.approx(expected)
    assert overlong_penalty(length, 100, 20, factor=0.5) == pytest.approx(expected * 0.5)
    assert overlong_penalty(length, 100, 0) == 0.0  # off


def test_single_stream_and_method_combinations_are_validated():
    cfg = Config()
    cfg.rollout.samples_per_prompt = 1
    with pytest.raises(ConfigError, match="advantage=spo"):
        validate(cfg)
    cfg.algorithm.advantage = "spo"
    cfg.trainer.sequences_per_optimizer_step = 8
    validate(cfg)
    cfg.algorithm.dynamic_sampling = True
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        validate(cfg)
    cfg.algorithm.dynamic_sampling, cfg.spark.enabled = False, True
    with pytest.raises(ConfigError, match="spark.enabled"):
        validate(cfg)
