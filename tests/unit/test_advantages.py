import math

import pytest
import torch

from spark_vl.algorithms import get_advantage_fn
from spark_vl.config import AlgorithmConfig


def adv(name, rewards, **kw):
    return get_advantage_fn(name)(torch.tensor(rewards, dtype=torch.float32), AlgorithmConfig(**kw))


def test_grpo_unbiased_std_hand_values():
    # mean 0.5; unbiased std = sqrt(4 * 0.25 / 3) = 0.57735
    out = adv("grpo", [[1.0, 0.0, 0.0, 1.0]], adv_eps=0.0)
    expected = 0.5 / math.sqrt(1.0 / 3.0)
    assert torch.allclose(out, torch.tensor([[expected, -expected, -expected, expected]]), atol=1e-6)


def test_grpo_population_std_matches_paper_eq3():
    out = adv("grpo", [[1.0, 0.0, 0.0, 1.0]], std_unbiased=False, adv_eps=0.0)
    assert torch.allclose(out, torch.tensor([[1.0, -1.0, -1.0, 1.0]]), atol=1e-6)


def test_grpo_uneven_group():
    # rewards 1,0,0,0: mean .25, unbiased std = sqrt((.5625 + 3*.0625)/3) = 0.5
    out = adv("grpo", [[1.0, 0.0, 0.0, 0.0]], adv_eps=0.0)
    assert torch.allclose(out, torch.tensor([[1.5, -0.5, -0.5, -0.5]]), atol=1e-6)


def test_zero_variance_groups_get_zero_advantage():
    for name in ("grpo", "dr_grpo", "rloo"):
        out = adv(name, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
        assert torch.count_nonzero(out) == 0, name


def test_dr_grpo_and_no_std_switch():
    r = [[1.0, 0.0, 0.0, 0.0]]
    assert torch.allclose(adv("dr_grpo", r), torch.tensor([[0.75, -0.25, -0.25, -0.25]]))
    assert torch.allclose(adv("grpo", r, norm_by_std=False), adv("dr_grpo", r))


def test_rloo_leave_one_out():
    # A_i = r_i - mean of the others: 1 - 0 = 1 ; 0 - 1/3
    out = adv("rloo", [[1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(out, torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]), atol=1e-6)


def test_reinforce_pp_baseline_is_whitened_over_batch():
    out = adv("reinforce_pp_baseline", [[1.0, 0.0], [1.0, 1.0]], adv_eps=0.0)
    # centred: [.5, -.5, 0, 0]; mean 0, std (unbiased) = sqrt(.5/3)
    s = math.sqrt(0.5 / 3)
    assert torch.allclose(out, torch.tensor([[0.5 / s, -0.5 / s], [0.0, 0.0]]), atol=1e-5)


def test_group_of_one():
    assert adv("grpo", [[1.0]]).item() == 0.0
    assert adv("rloo", [[1.0]]).item() == 1.0


def test_unknown_and_dotted_names():
    with pytest.raises(ValueError, match="unknown advantage estimator 'nope'"):
        get_advantage_fn("nope")
    assert get_advantage_fn("spark_vl.algorithms.advantages:rloo") is get_advantage_fn("rloo")
