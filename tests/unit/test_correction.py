"""Importance-sampling correction (spark_vl/algorithms/correction.py) against hand-computed values."""

import math

import pytest
import torch

from spark_vl.algorithms.correction import SamplerGap, is_weights, sampler_gap, sampler_gaps
from spark_vl.config import Config, derived, load_config
from spark_vl.models.encode import EncodedPrompt
from spark_vl.trainer.batch import Sequence, collate
from spark_vl.trainer.metrics import Means

# Two sequences, three positions; the second sequence has only two response tokens.
# log-ratios old - behaviour: row 0 = [ln 3, ln 0.25, 0], row 1 = [ln 1.5, ln 1.2, (padding)]
LR = [[math.log(3.0), math.log(0.25), 0.0], [math.log(1.5), math.log(1.2), 5.0]]
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
BEHAVIOUR = torch.full((2, 3), -1.0)
OLD = BEHAVIOUR + torch.tensor(LR)


def weights(mode, cap=2.0):
    return is_weights(OLD, BEHAVIOUR, MASK, mode, cap)


def close(t, expected):
    return torch.allclose(t, torch.tensor(expected), atol=1e-6)


def test_token_tis_truncates_at_the_cap():
    # rho = [3, 0.25, 1 | 1.5, 1.2, pad] -> min(rho, 2)
    assert close(weights("token"), [[2.0, 0.25, 1.0], [1.5, 1.2, 0.0]])
    assert close(weights("token", cap=4.0), [[3.0, 0.25, 1.0], [1.5, 1.2, 0.0]])


def test_token_mask_drops_tokens_outside_the_band():
    # band [0.5, 2]: 3 and 0.25 fall outside
    assert weights("mask").tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def test_sequence_tis_uses_the_product_of_ratios():
    # row 0: 3 * 0.25 * 1 = 0.75; row 1: 1.5 * 1.2 = 1.8 (padding excluded); both under the cap 2
    assert close(weights("sequence"), [[0.75, 0.75, 0.75], [1.8, 1.8, 0.0]])
    # cap 1.5: row 1 truncated to 1.5
    assert close(weights("sequence", cap=1.5), [[0.75, 0.75, 0.75], [1.5, 1.5, 0.0]])


def test_sequence_mask_uses_the_geometric_mean():
    # geometric means: row 0 = 0.75^(1/3) = 0.909, row 1 = 1.8^(1/2) = 1.342; cap 1.2 -> band [0.833, 1.2]
    assert weights("sequence_mask", cap=1.2).tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert weights("sequence_mask", cap=2.0).tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_none_and_missing_sampler_logprobs_give_the_mask():
    assert weights("none").tolist() == MASK.tolist()
    assert is_weights(OLD, None, MASK, "token").tolist() == MASK.tolist()
    with pytest.raises(ValueError, match="token"):
        weights("tis")


def test_weights_are_detached():
    old = OLD.clone().requires_grad_(True)
    assert not is_weights(old, BEHAVIOUR, MASK, "token").requires_grad


def test_sampler_gap_metrics():
    old = torch.tensor([math.log(3.0), math.log(0.25), 0.0]) - 1.0
    behaviour = torch.full((3,), -1.0)
    gap = sampler_gap(old, behaviour, cap=2.0)
    assert gap.tokens == 3
    assert gap.abs_diff == pytest.approx(math.log(3.0) + math.log(4.0))
    assert gap.ratio == pytest.approx(3.0 + 0.25 + 1.0)
    assert gap.ratio_max == pytest.approx(3.0)
    assert gap.outside == 2
    # k3 = sum (rho - 1 - log rho)
    assert gap.k3 == pytest.approx((3 - 1 - math.log(3)) + (0.25 - 1 - math.log(0.25)) + 0.0)


def test_auto_correction_resolves_by_backend():
    assert derived(Config()).is_correction == "none"
    assert derived(load_config(None, ["rollout.backend=vllm"])).is_correction == "token"
    assert derived(load_config(None, ["rollout.backend=vllm", "algorithm.is_correction=mask"])).is_correction == "mask"
    assert derived(load_config(None, ["algorithm.is_correction=sequence"])).is_correction == "sequence"


def test_collate_carries_behaviour_logprobs_and_flags_rows_without():
    prompt = EncodedPrompt([1, 2], [0, 0], None, None)
    sampled = Sequence(prompt, [5, 6], old_logprobs=[-1.0, -2.0], behaviour_logprobs=[-1.5, -2.5])
    expert = Sequence(prompt, [7], is_expert=True, old_logprobs=[-3.0])
    batch = collate([sampled, expert], pad_id=0)
    # position p - 1 = 1 predicts the first response token
    assert batch.behaviour_logprobs[0].tolist() == [0.0, -1.5, -2.5]
    assert batch.has_behaviour.tolist() == [True, False]  # the expert row takes its old log-probs: ratio 1
    assert collate([expert], pad_id=0).behaviour_logprobs is None
    # without old log-probs (the on-policy update fills them from its own forward) the sampler's still travel
    fresh = Sequence(prompt, [5, 6], behaviour_logprobs=[-1.5, -2.5])
    assert collate([fresh], pad_id=0).behaviour_logprobs[0].tolist() == [0.0, -1.5, -2.5]


def test_means_maximum_is_reduced_as_a_max():
    m = Means()
    m.maximum("rollout/is_ratio_max", 1.5)
    m.maximum("rollout/is_ratio_max", 3.0)
    m.maximum("rollout/is_ratio_max", 2.0)
    m.add("x", 2.0, 4)
    assert m.reduce("cpu") == {"rollout/is_ratio_max": 3.0, "x": 0.5}


def test_sampler_gaps_of_many_sequences_are_each_sequence_alone_bit_for_bit():
    """All sequences' tokens at once (lists of floats, as the trainer keeps them): every sum equals the one-sequence
    computation on float32 tensors exactly, whatever the lengths (one token, a row shorter than a vector register,
    long rows; 20 random sets of 16 lengths); a sequence without tokens gets the empty gap."""
    g = torch.Generator().manual_seed(0)
    for lengths in [[1, 7, 0, 33, 130, 5], *(torch.randint(0, 400, (16,), generator=g).tolist() for _ in range(20))]:
        old = [(torch.randn(n, generator=g) * 0.3 - 2).tolist() for n in lengths]
        behaviour = [(torch.tensor(o) + torch.randn(len(o), generator=g) * 0.4).tolist() for o in old]
        gaps = sampler_gaps(old, behaviour, cap=1.5)
        for o, b, gap in zip(old, behaviour, gaps, strict=True):
            if not o:
                assert gap == SamplerGap(0, 0.0, 0.0, 0.0, float("-inf"), 0)
                continue
            d = torch.clamp(torch.tensor(o).double() - torch.tensor(b).double(), -20, 20)
            rho = torch.exp(d)
            alone = SamplerGap(len(o), float(d.abs().sum()), float((torch.expm1(d) - d).sum()), float(rho.sum()),
                               float(rho.max()), int(((rho > 1.5) | (rho < 1 / 1.5)).sum()))
            assert gap == alone
        assert sum(g.outside for g in gaps) > 0
