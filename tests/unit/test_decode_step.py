"""`LeanDecoder`: the rollout's decode step without transformers' per-call machinery, equal to it bit for bit."""

import copy
import logging

import pytest
import torch

import spark_vl.rollout.decode as decode
from spark_vl.config import RolloutConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models import cache_arg, model_cache
from spark_vl.rollout import make_engine
from spark_vl.rollout.decode import LeanDecoder
from spark_vl.rollout.hf import make_room
from spark_vl.types import SamplingParams


def prefilled(model, rows=3, length=9, room=8):
    """A copy of the text decoder in eval mode and its KV cache after left-padded prompts of different lengths (row
    i has i pads), with room."""
    decoder = copy.deepcopy(model.model.language_model).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (rows, length), generator=g)
    mask = torch.ones(rows, length + room, dtype=torch.bool)
    for i in range(rows):
        mask[i, :i] = False
    positions = (mask[:, :length].long().cumsum(1) - 1).clamp(min=0).expand(3, rows, length)
    with torch.inference_mode():
        out = decoder(input_ids=ids, attention_mask=mask[:, :length].long(), position_ids=positions, use_cache=True)
    cache = model_cache(out)
    make_room(cache, room)
    return decoder, cache, mask, positions[:, :, -1:] + 1


@pytest.mark.parametrize("table", [False, True], ids=["rotary-per-step", "rotary-table"])
def test_the_lean_step_equals_transformers_forward_bit_for_bit(tiny_model, table):
    """Steps on two copies of a prefilled cache (left padding, M-RoPE positions, grouped-query attention): the same
    hidden states and the same keys and values in every layer, exactly; with the rotary table (`fed` given) over
    more steps than its first table covers, so a second one is made."""
    model, _ = tiny_model
    steps = decode.ROPE_STEPS[0] + 3 if table else 4
    decoder, cache, mask, position = prefilled(model, room=steps)
    lean = LeanDecoder(decoder)
    assert lean.unsupported is None and lean.fuse
    theirs, kv = copy.deepcopy(cache), cache_arg(decoder)
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for fed in range(steps):
            ids = torch.randint(10, 200, (3, 1), generator=g)
            step = {"input_ids": ids, "attention_mask": mask[:, None, None, : 9 + fed + 1],
                    "position_ids": position + fed, "use_cache": True}
            ours = lean({**step, kv: cache}, fed if table else None)
            want = decoder(**step, **{kv: theirs}).last_hidden_state
            assert torch.equal(ours, want)
            for a, b in zip(cache.layers, theirs.layers, strict=True):
                assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert lean.verified is True and lean.stock == 1  # the first step was also run once the stock way, on one row
    assert lean.stacked_ok == {1: True, 3: True}  # stacked projections compared on the first step of each size
    assert (lean._rope is not None and lean._rope[0] == decode.ROPE_STEPS[0]) is table


def test_stacked_projections_follow_the_weights(tiny_qwen25, monkeypatch):
    """The stacked copies are made again after an in-place update (an optimizer step) or a replaced weight, found
    on the first step of the next rollout (`fed` 0), where every weight is read again (a replaced parameter
    object too): the lean step still equals the stock one. Within a rollout (`fed` > 0) the weights' identity is
    not read again."""
    model, _ = tiny_qwen25
    decoder, cache, mask, position = prefilled(model)
    lean = LeanDecoder(decoder)
    theirs, kv = copy.deepcopy(cache), cache_arg(decoder)
    attn, mlp = decoder.layers[0].self_attn, decoder.layers[1].mlp
    changes = [lambda: None, lambda: attn.k_proj.weight.mul_(1.5), lambda: attn.q_proj.bias.add_(0.25),
               lambda: setattr(mlp.up_proj.weight, "data", mlp.up_proj.weight.data * 2.0),
               lambda: setattr(mlp.down_proj, "weight", torch.nn.Parameter(mlp.down_proj.weight * 0.5))]
    for fed, change in enumerate(changes):
        with torch.no_grad():  # as the optimizer's step: outside inference mode, which counts no versions
            change()
        step = {"input_ids": torch.full((3, 1), 11 + fed), "attention_mask": mask[:, None, None, : 9 + fed + 1],
                "position_ids": position + fed, "use_cache": True}
        with torch.inference_mode():  # each change, then the first step of a rollout
            assert torch.equal(lean({**step, kv: cache}, 0), decoder(**step, **{kv: theirs}).last_hidden_state)
    assert lean.stacked_ok == {1: True, 3: True}
    reads = []
    monkeypatch.setattr(lean, "stacks", lambda: reads.append(1) or LeanDecoder.stacks(lean))
    held = 9 + len(changes)  # tokens in the cache
    for fed in range(1, 3):
        step = {"input_ids": torch.full((3, 1), 20 + fed), "attention_mask": mask[:, None, None, : held + fed],
                "position_ids": position + len(changes) - 1 + fed, "use_cache": True}
        with torch.inference_mode():
            assert torch.equal(lean({**step, kv: cache}, fed), decoder(**step, **{kv: theirs}).last_hidden_state)
    assert reads == []


def test_stacked_projections_that_differ_are_not_used(tiny_qwen25, monkeypatch, caplog):
    """Stacked weights one rounding off (as another matrix-product kernel could compute) are found on the first
    step of the batch size and never used: the rollouts are unchanged."""
    model, processor = tiny_qwen25
    _, want = rollouts(model, processor)
    stack = decode.stack

    def off_by_one_ulp(layer):
        stacked = stack(layer)
        stacked.gate_up_weight = torch.nextafter(stacked.gate_up_weight, torch.tensor(1e9))
        return stacked

    monkeypatch.setattr(decode, "stack", off_by_one_ulp)
    with caplog.at_level(logging.INFO, logger=decode.__name__):
        engine, got = rollouts(model, processor)
    assert engine._lean.verified is True and engine._lean.stacked_ok == {1: False, 9: False}
    assert "stacked projections differ" in caplog.text
    assert got == want


def rollouts(model, processor, seed=5):
    engine = make_engine(RolloutConfig(), model, processor)
    torch.manual_seed(seed)
    groups = engine.generate([build_prompt(s) for s in synthetic_samples(3, seed=2)], 3,
                             SamplingParams(temperature=1.0, max_new_tokens=12))
    return engine, [(r.token_ids, r.logprobs) for g in groups for r in g.rollouts]


def test_rollouts_are_the_same_with_the_lean_step_and_without(tiny_model, monkeypatch):
    model, processor = tiny_model
    engine, lean = rollouts(model, processor)
    assert engine._lean.verified is True and engine._lean.stock == 1
    assert engine._lean.stacked_ok == {1: True, 9: True} and engine._lean._rope[0] == 0  # one rotary table
    monkeypatch.setattr(decode, "unsupported", lambda decoder: "switched off by the test")
    engine, stock = rollouts(model, processor)
    assert engine._lean.unsupported and engine._lean.stock == 11  # 12 new tokens: 11 decode steps
    assert lean == stock


def test_a_lean_step_that_differs_gives_way_to_transformers_forward(tiny_qwen25, monkeypatch, caplog):
    """A lean step one rounding off (as another transformers version could be) is found on the first step, said,
    and never used: the rollouts are those of the stock forward."""
    model, processor = tiny_qwen25
    _, want = rollouts(model, processor)
    rms_norm = decode.rms_norm
    monkeypatch.setattr(decode, "rms_norm", lambda *args: torch.nextafter(rms_norm(*args), torch.tensor(1e9)))
    with caplog.at_level(logging.WARNING, logger=decode.__name__):
        engine, got = rollouts(model, processor)
    assert engine._lean.verified is False and engine._lean.stock == 12  # the trial step on one row, then 11
    assert "differs from transformers' forward" in caplog.text
    assert got == want


def test_the_lean_step_steps_aside_where_it_cannot_see_the_computation(tiny_qwen25):
    model, _ = tiny_qwen25
    decoder, cache, mask, position = prefilled(model)
    assert decode.unsupported(decoder) is None
    eager = copy.deepcopy(decoder)
    eager.config._attn_implementation = "eager"
    assert "not 'sdpa'" in decode.unsupported(eager)
    hooked = copy.deepcopy(decoder)
    hooked.layers[1].mlp.register_forward_pre_hook(lambda module, args: None)  # as ZeRO-3's parameter gathering
    assert "forward hooks on layers.1.mlp" in decode.unsupported(hooked)

    class LoRALinear(torch.nn.Linear):
        pass

    adapted = copy.deepcopy(decoder)
    old = adapted.layers[0].self_attn.q_proj
    adapted.layers[0].self_attn.q_proj = LoRALinear(old.in_features, old.out_features)
    assert "not plain Linear" in decode.unsupported(adapted)
    assert "not laid out" in decode.unsupported(torch.nn.Linear(2, 2))

    # In training mode (dropout) every step is the stock forward's.
    decoder.train()
    lean = LeanDecoder(decoder)
    with torch.inference_mode():
        lean({"input_ids": torch.ones(3, 1, dtype=torch.long), "attention_mask": mask[:, None, None, :10],
              "position_ids": position, "use_cache": True, cache_arg(decoder): cache})
    assert lean.stock == 1 and lean.verified is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rolled_heads_times_the_signed_sin_are_transformers_rotate_half(dtype):
    """`x.roll(half, -1) * signed_sin(sin)` is `rotate_half(x) * sin` bit for bit (signed zeros, infinities and
    subnormal products included), for the query/key layouts of the decode step."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(16, 6, 1, 128, generator=g) * torch.logspace(-40, 30, 128)).to(dtype)
    x[0, 0, 0, :4] = torch.tensor([0.0, -0.0, float("inf"), -float("inf")])
    sin = torch.randn(16, 1, 1, 128, generator=g).to(dtype)
    sin[1, 0, 0, 64:68] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
    want = rotate_half(x) * sin
    got = x.roll(64, -1) * decode.signed_sin(sin)
    assert torch.equal(got.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                       want.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))  # the bits, signs of 0 too


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_the_models_own_norm_bit_for_bit(tiny_qwen25, dtype):
    """The decode step's RMSNorm (its casts skipped in float32) equals the model's norm module in both dtypes."""
    norm = copy.deepcopy(tiny_qwen25[0].model.language_model.layers[0].input_layernorm).to(dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=g))
        x = (torch.randn(16, 1, norm.weight.shape[0], generator=g) * 3).to(dtype)
        assert torch.equal(decode.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))
