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


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
@pytest.mark.parametrize("eps", [1e-6, 1e-9])
def test_flat_groups_of_any_value_get_exactly_zero_advantage(name, eps):
    """Method audit B6: 0.9 x 8 gave -0.056 (eps 1e-6) / -0.92 (eps 1e-9) from float rounding of the mean."""
    rewards = [[v] * 8 for v in (0.9, 0.1, 0.7, 0.55, 3.3, -1.7)]
    assert torch.count_nonzero(adv(name, rewards, adv_eps=eps)) == 0


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_flat_group_next_to_a_mixed_group_stays_zero(name):
    out = adv(name, [[0.9] * 4, [1.0, 0.1, 0.1, 1.0]])
    assert torch.count_nonzero(out[0]) == 0
    assert torch.count_nonzero(out[1]) == 4


def test_nearly_flat_group_is_not_flattened():
    out = adv("grpo", [[0.5, 0.5, 0.5, 0.5001]], adv_eps=0.0)
    assert out[0, 3] > 1.0 and out[0, 0] < 0


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
