"""The vLLM backend's logic against a fake vLLM (tests/unit/_fake_vllm.py): weight buckets, parameter names, call
order of sleep / wake / push / cache resets / generate, placeholder rendering and the prompt-id check.
The real vLLM runs in tests/vllm/ (marked `vllm`, own virtualenv)."""

import pytest
import torch

from spark_vl.config import RolloutConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.encode import encode_prompt
from spark_vl.plugins import PluginError
from spark_vl.rollout import engine_class
from spark_vl.rollout.hf import vision_token_ids
from spark_vl.rollout.vllm import (
    PromptMismatchError,
    VLLMEngine,
    WeightSyncError,
    collapse_image_tokens,
    module_block,
    weight_buckets,
)
from spark_vl.types import SamplingParams

from ._fake_vllm import FakeLLM, FakeSamplingParams

# -- pure helpers ----------------------------------------------------------------------------------------------


def test_module_block():
    assert module_block("model.language_model.layers.3.self_attn.q_proj.weight") == "model.language_model.layers.3"
    assert module_block("model.visual.blocks.0.mlp.gate_proj.bias") == "model.visual.blocks.0"
    assert module_block("model.visual.merger.mlp.0.weight") == "model.visual.merger.mlp.0"
    assert module_block("lm_head.weight") == "lm_head"


def test_weight_buckets_cut_at_layers_and_respect_the_budget():
    named = [
        ("embed.weight", 50),
        ("layers.0.a", 30), ("layers.0.b", 30),  # a 60-byte layer
        ("layers.1.a", 30), ("layers.1.b", 30),
        ("layers.2.a", 70), ("layers.2.b", 70),  # 140 > budget: split per parameter
        ("huge.weight", 250),  # a single parameter over the budget travels alone
        ("norm.weight", 10),
    ]
    buckets = weight_buckets(named, bucket_bytes=100)
    assert buckets == [
        ["embed.weight"],  # 50 + the 60-byte layer 0 would exceed 100
        ["layers.0.a", "layers.0.b"],  # layer 1 would make 120
        ["layers.1.a", "layers.1.b"],
        ["layers.2.a"],
        ["layers.2.b"],
        ["huge.weight"],
        ["norm.weight"],
    ]
    assert [n for b in buckets for n in b] == [n for n, _ in named]
    assert weight_buckets(named, bucket_bytes=10**9) == [[n for n, _ in named]]  # everything fits: one bucket


def test_collapse_image_tokens():
    img = 9
    assert collapse_image_tokens([1, 5, img, img, img, 6, 2, 5, img, img, 6], img) == [1, 5, img, 6, 2, 5, img, 6]
    assert collapse_image_tokens([1, 2, 3], img) == [1, 2, 3]


# -- the engine with a fake vLLM ---------------------------------------------------------------------------------

EXPECTED_PARAMS = ["language_model.model.embed_tokens.weight", "visual.blocks.0.attn.qkv.weight"]


def _prompts(n=2):
    return [build_prompt(s) for s in synthetic_samples(n, seed=5)]


def _engine(tiny_qwen25, bucket_mb=0.01, gpu=False, monkeypatch=None, **cfg):
    model, processor = tiny_qwen25
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    per_image = encode_prompt(_prompts(1)[0], processor).input_ids.count(image_id)
    fake = FakeLLM(image_id, per_image, EXPECTED_PARAMS, tok.eos_token_id)
    if gpu:  # sleep mode exists only on GPU: pretend to be on one while the engine is built
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    engine = VLLMEngine(model, processor, RolloutConfig(backend="vllm", vllm_weight_bucket_mb=bucket_mb, **cfg),
                        llm=fake, sampling_params_cls=FakeSamplingParams)
    if gpu:
        monkeypatch.undo()
    return engine, fake


def test_first_generate_pushes_every_parameter_then_resets_caches(tiny_qwen25):
    model, processor = tiny_qwen25
    engine, fake = _engine(tiny_qwen25, bucket_mb=0.2)
    assert fake.calls == []  # CPU: no sleep mode, nothing happens at construction
    groups = engine.generate(_prompts(2), 3, SamplingParams(temperature=0.7, max_new_tokens=8))
    assert fake.names() == ["collective_rpc", "reload_weights", "reset_prefix_cache", "reset_mm_cache",
                            "reset_encoder_cache", "generate"]
    # Every parameter in HF names, tied lm_head and the vision tower included, with full shapes.
    sent = [n for n, _ in fake.model.received]
    expected = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert sent == expected and "lm_head.weight" in sent and any(n.startswith("model.visual.") for n in sent)
    assert dict(fake.model.received)["lm_head.weight"] == tuple(model.lm_head.weight.shape)
    # Buckets: within the budget unless one parameter is larger; a layer is never split when it fits.
    budget = int(0.2 * 2**20)
    sizes = {n: p.numel() * 4 for n, p in model.named_parameters(remove_duplicate=False)}
    assert [n for b in engine.last_buckets for n in b] == expected
    for bucket in engine.last_buckets:
        assert len(bucket) == 1 or sum(sizes[n] for n in bucket) <= budget
    for bucket in engine.last_buckets:
        blocks = {module_block(n) for n in bucket}
        for block in blocks:
            members = [n for n in expected if module_block(n) == block]
            if sum(sizes[n] for n in members) <= budget:
                assert set(members) <= set(bucket), block
    layer0 = [n for n in expected if n.startswith("model.language_model.layers.0.")]
    assert 3 < len(engine.last_buckets) < len(expected) and any(set(layer0) <= set(b) for b in engine.last_buckets)
    assert [len(g.rollouts) for g in groups] == [3, 3]

    engine.generate(_prompts(1), 1, SamplingParams(temperature=0.0))
    assert fake.names()[-1] == "generate" and fake.names().count("collective_rpc") == 1  # weights unchanged
    engine.sync_weights(model)
    engine.generate(_prompts(1), 1, SamplingParams(temperature=0.0))
    assert fake.names().count("collective_rpc") == 2 and fake.names()[-2] == "reset_encoder_cache"


def test_requests_have_one_placeholder_per_image_and_the_raw_images(tiny_qwen25):
    model, processor = tiny_qwen25
    engine, fake = _engine(tiny_qwen25)
    prompts = _prompts(2)
    engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=8))
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for prompt, request in zip(prompts, fake.requests):
        expanded = encode_prompt(prompt, processor).input_ids
        assert request["prompt_token_ids"].count(image_id) == len(prompt.images) == 1
        assert request["prompt_token_ids"] == collapse_image_tokens(expanded, image_id)
        assert request["multi_modal_data"]["image"][0] is prompt.images[0]  # the PIL image itself


def test_sampling_params_and_rollouts(tiny_qwen25):
    model, processor = tiny_qwen25
    tok = processor.tokenizer
    engine, fake = _engine(tiny_qwen25)
    groups = engine.generate(_prompts(1), 2, SamplingParams(temperature=0.7, top_p=1.0, max_new_tokens=8, seed=3))
    sp = fake.sampling[-1]
    assert (sp.n, sp.temperature, sp.max_tokens, sp.logprobs) == (2, 0.7, 8, 0)
    assert sp.seed is None  # on CPU per-request seeds are dropped (vLLM's CPU runner fails on them)
    engine.cuda = True
    engine.generate(_prompts(1), 2, SamplingParams(temperature=0.7, seed=3))
    assert fake.sampling[-1].seed == 3
    engine.cuda = False
    assert sp.logit_bias == {i: -100.0 for i in vision_token_ids(tok)} and len(sp.logit_bias) == 4
    assert tok.eos_token_id in sp.stop_token_ids and not sp.detokenize and sp.stop is None
    first, second = groups[0].rollouts
    assert first.token_ids == [11, 12, 13, tok.eos_token_id] and second.token_ids == [12, 13, 14, tok.eos_token_id]
    assert first.logprobs == pytest.approx([-0.5, -0.6, -0.7, -0.8])
    assert first.finish_reason == "stop" and first.text == tok.decode(first.token_ids, skip_special_tokens=True)
    engine.generate(_prompts(1), 1, SamplingParams(temperature=0.0, stop=["\\boxed"]))
    greedy = fake.sampling[-1]
    assert greedy.temperature == 0.0 and greedy.detokenize and greedy.stop == ["\\boxed"]


def test_prompt_id_mismatch_fails_loudly(tiny_qwen25):
    engine, fake = _engine(tiny_qwen25)
    fake.tokens_per_image += 1  # vLLM resized the image differently from the trainer's processor
    with pytest.raises(PromptMismatchError, match="vLLM's prompt has"):
        engine.generate(_prompts(1), 1, SamplingParams())


def test_first_push_checks_every_vllm_parameter_was_set(tiny_qwen25):
    engine, fake = _engine(tiny_qwen25)
    fake.model.forget = {EXPECTED_PARAMS[1]}
    with pytest.raises(WeightSyncError, match="visual.blocks.0.attn.qkv.weight"):
        engine.wake()


def test_sleep_level_2_wakes_weights_pushes_then_wakes_kv_cache(tiny_qwen25, monkeypatch):
    model, _ = tiny_qwen25
    engine, fake = _engine(tiny_qwen25, gpu=True, monkeypatch=monkeypatch)
    assert fake.calls == [("sleep", 2)]  # asleep from the start: the trainer's update comes first
    engine.wake()
    engine.generate(_prompts(1), 1, SamplingParams())
    engine.sleep()
    assert fake.names() == ["sleep", "wake_up", "collective_rpc", "reload_weights", "reset_prefix_cache",
                            "reset_mm_cache", "reset_encoder_cache", "wake_up", "generate", "sleep"]
    assert [c[1] for c in fake.calls if c[0] == "wake_up"] == [("weights",), ("kv_cache",)]
    # Level 2 dropped the weights: the next wake pushes again even without a sync_weights call.
    engine.wake()
    assert fake.names().count("collective_rpc") == 2
    # generate() on a sleeping engine (benchmark evaluation) wakes it and puts it back to sleep.
    engine.sleep()
    fake.calls.clear()
    engine.generate(_prompts(1), 1, SamplingParams())
    assert fake.names()[0] == "wake_up" and fake.names()[-2:] == ["generate", "sleep"]


def test_sleep_level_1_keeps_weights(tiny_qwen25, monkeypatch):
    model, _ = tiny_qwen25
    engine, fake = _engine(tiny_qwen25, gpu=True, monkeypatch=monkeypatch, vllm_sleep_level=1)
    engine.wake()
    engine.sleep()
    engine.wake()
    assert fake.names().count("collective_rpc") == 1  # the first push only
    engine.sleep()
    engine.sync_weights(model)
    engine.wake()
    assert fake.names().count("collective_rpc") == 2
    assert ("sleep", 1) in fake.calls


def test_cpu_sleep_and_wake_are_no_ops_that_say_so_once(tiny_qwen25, caplog):
    engine, fake = _engine(tiny_qwen25)
    with caplog.at_level("INFO", logger="spark_vl.rollout.vllm"):
        for _ in range(3):
            engine.sleep()
    assert not [c for c in fake.calls if c[0] in ("sleep", "wake_up")]
    assert sum("sleep mode is off" in r.message for r in caplog.records) <= 1


def test_engine_class_is_lazy_and_names_the_install(monkeypatch):
    import importlib.util
    import sys

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else object())
    with pytest.raises(PluginError, match="setup_vllm_cpu.sh"):
        engine_class("vllm")
    monkeypatch.undo()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert engine_class("vllm") is VLLMEngine
    assert "vllm" not in sys.modules or hasattr(sys.modules["vllm"], "LLM")  # nothing imported vLLM by accident


def test_tensor_parallel_for_evaluation():
    from spark_vl.rollout.vllm import tensor_parallel_for

    assert tensor_parallel_for(28, 8) == 4  # Qwen2.5-VL-7B: 28 heads
    assert tensor_parallel_for(40, 8) == 8 and tensor_parallel_for(64, 3) == 2 and tensor_parallel_for(16, 0) == 1


@pytest.mark.parametrize("override, message", [
    ("rollout.vllm_sleep_level=3", "must be 1 or 2"),
    ("rollout.vllm_gpu_memory_utilization=1.5", "must lie in"),
    ("algorithm.is_cap=1.0", "must be > 1"),
    ("spark.enabled=true spark.recycle_from=initial", "second vLLM engine"),
])
def test_vllm_settings_are_validated(override, message):
    from spark_vl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, ["rollout.backend=vllm", *override.split()])
