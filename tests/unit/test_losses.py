import math

import pytest
import torch

from spark_vl.algorithms.losses import AggregationDenominators, aggregate, gspo, kl_penalty, ppo_clip


def test_ppo_clip_hand_values():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))  # ratios vs old = 0
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    out = ppo_clip(logp, old, adv, clip_low=0.2, clip_high=0.3)
    # A>0, r=1.5 -> clipped to 1.3 -> loss -1.3 ; A<0, r=0.5 -> max(0.5, 0.8) = 0.8 ; r=1.1 -> -1.1 ; r=.7 -> .8
    assert torch.allclose(out.loss_BT, torch.tensor([[-1.3, 0.8, -1.1, 0.8]]), atol=1e-6)
    assert out.clipped_BT.tolist() == [[1.0, 1.0, 0.0, 1.0]]


def test_dual_clip_bounds_negative_advantage_loss():
    logp = torch.log(torch.tensor([[5.0]]))
    out = ppo_clip(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]), dual_clip=3.0)
    assert out.loss_BT.item() == pytest.approx(3.0)
    out = ppo_clip(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]))
    assert out.loss_BT.item() == pytest.approx(5.0)


def test_ppo_gradient_is_zero_when_clipped():
    logp = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_()
    out = ppo_clip(logp, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]))
    out.loss_BT.sum().backward()
    assert logp.grad[0, 0] == 0.0 and logp.grad[0, 1] == pytest.approx(-1.0)


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([[0.0]]), torch.tensor([[-0.5]])  # d = 0.5
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    assert kl_penalty(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k9")


def test_k3_is_nonnegative_and_clamped():
    d = torch.linspace(-30, 30, 101).unsqueeze(0)
    k3 = kl_penalty(d, torch.zeros_like(d), "k3")
    assert (k3 >= 0).all() and (k3 <= 10).all()


def test_aggregation_modes_hand_values():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    d = AggregationDenominators(tokens=4, sequences=2, norm_const=3)
    assert aggregate(loss, mask, "token-mean", d).item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq-mean-token-sum", d).item() == pytest.approx((6 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-mean", d).item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", d).item() == pytest.approx(10 / 6)


def test_aggregation_is_split_invariant():
    """Summing micro-batch shares with global denominators equals the whole-batch value."""
    torch.manual_seed(0)
    loss = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        d = AggregationDenominators(mask.sum().item(), 6, 5)
        whole = aggregate(loss, mask, mode, d)
        parts = aggregate(loss[:2], mask[:2], mode, d) + aggregate(loss[2:], mask[2:], mode, d)
        assert torch.allclose(whole, parts, atol=1e-6), mode


def test_gspo_uses_length_normalised_sequence_ratio():
    logp = torch.tensor([[0.2, 0.4, 9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = gspo(logp, torch.zeros(1, 3), torch.ones(1, 3), mask, clip_low=10, clip_high=10)
    s = math.exp(0.3)
    assert out.ratio_BT[0, :2].tolist() == pytest.approx([s, s], rel=1e-6)
    (out.loss_BT * mask).sum().backward()
    # d/dlogp_t of -s * exp(logp_t - sg(logp_t)) = -s for each unmasked token
    assert logp.grad[0, :2].tolist() == pytest.approx([-s, -s], rel=1e-5)
