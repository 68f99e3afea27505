import pytest
import torch

from spark_vl.algorithms.logprobs import sequence_logprobs
from spark_vl.config import RolloutConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.encode import encode_prompt
from spark_vl.rollout import make_engine
from spark_vl.rollout.hf import (
    LOG1P_MARGIN,
    NOT_FINITE,
    RoomyLayer,
    draw,
    exponential_like,
    make_room,
    near_float32_tie,
    vision_token_ids,
)
from spark_vl.trainer.batch import Sequence, collate, response_values
from spark_vl.types import SamplingParams


def prompts(n=3):
    return [build_prompt(s) for s in synthetic_samples(n, seed=5)]


def _behaviour_vs_trainer(model, processor, suppress: bool):
    engine = make_engine(RolloutConfig(generation_batch_size=4), model, processor)
    if not suppress:
        engine.suppress_ids = []
    torch.manual_seed(0)
    groups = engine.generate(prompts(), 3, SamplingParams(temperature=1.0, max_new_tokens=10))
    assert [len(g.rollouts) for g in groups] == [3, 3, 3]
    seqs, behaviour = [], []
    for g in groups:
        enc = encode_prompt(g.prompt, processor)
        for r in g.rollouts:
            assert r.prompt is g.prompt and len(r.logprobs) == len(r.token_ids) > 0
            assert r.finish_reason in ("stop", "length")
            seqs.append(Sequence(enc, r.token_ids))
            behaviour.append(r.logprobs)
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, collate(seqs, processor.tokenizer.pad_token_id))
    recomputed = response_values(lp, seqs)
    return [b - a for x, y in zip(recomputed, behaviour) for a, b in zip(x, y)]


def test_groups_shape_and_behaviour_logprobs_match_trainer(tiny_model):
    """Left-padded sampling and right-padded training forward see the same distribution (positions, images,
    mm_token_type_ids) when the sampler samples from the full vocabulary."""
    model, processor = tiny_model
    diffs = _behaviour_vs_trainer(model, processor, suppress=False)
    assert max(abs(d) for d in diffs) < 1e-4


def test_suppressed_vision_tokens_renormalise_the_behaviour_distribution(tiny_qwen25):
    # Banning the vision tokens moves their mass to the other tokens: sampler log-probs are higher by
    # -log(1 - p_banned) > 0 (~4/512 for a near-uniform random model), never lower.
    model, processor = tiny_qwen25
    diffs = _behaviour_vs_trainer(model, processor, suppress=True)
    assert all(0 < d < 0.05 for d in diffs)


def test_greedy_batched_equals_one_at_a_time(tiny_model):
    model, processor = tiny_model
    engine = make_engine(RolloutConfig(), model, processor)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    batched = engine.generate(prompts(4), 1, greedy)
    for g in batched:
        single = engine.generate([g.prompt], 1, greedy)[0]
        assert single.rollouts[0].token_ids == g.rollouts[0].token_ids


def test_vision_tokens_are_never_generated(tiny_qwen25):
    model, processor = tiny_qwen25
    banned = vision_token_ids(processor.tokenizer)
    assert len(banned) == 4
    with torch.no_grad():  # make the vision tokens the model's favourite outputs
        model.lm_head.weight[banned] *= 50
    try:
        engine = make_engine(RolloutConfig(), model, processor)
        groups = engine.generate(prompts(2), 4, SamplingParams(temperature=1.0, max_new_tokens=16))
        assert not any(t in banned for g in groups for r in g.rollouts for t in r.token_ids)
    finally:
        with torch.no_grad():
            model.lm_head.weight[banned] /= 50


def test_temperature_topk_topp_and_stop_strings(tiny_qwen25):
    model, processor = tiny_qwen25
    engine = make_engine(RolloutConfig(), model, processor)
    torch.manual_seed(1)
    groups = engine.generate(prompts(2), 2, SamplingParams(temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=8))
    for r in (r for g in groups for r in g.rollouts):
        assert len(r.token_ids) <= 8 and all(lp <= 0 for lp in r.logprobs)
    # a stop string that the greedy output contains ends generation there
    greedy = engine.generate(prompts(1), 1, SamplingParams(temperature=0.0, max_new_tokens=12))[0].rollouts[0]
    word = greedy.text.strip()[:2]
    if word:
        stopped = engine.generate(prompts(1), 1, SamplingParams(temperature=0.0, max_new_tokens=12, stop=[word]))
        r = stopped[0].rollouts[0]
        assert r.finish_reason == "stop" and len(r.token_ids) <= len(greedy.token_ids)


def _generate_reference(model, engine, rows, sampling, stop_ids, with_logprobs=False):
    """transformers.generate on the same left-padded rows, with the same processors: the tokens our sampler must
    reproduce for the same seed (and, `with_logprobs`, each token's log-prob under generate's processed scores)."""
    from spark_vl.models.encode import pad_prompts

    enc = pad_prompts(rows, engine.pad_id, side="left")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=not sampling.greedy, max_new_tokens=sampling.max_new_tokens,
                             temperature=sampling.temperature or 1.0, top_k=sampling.top_k or None,
                             top_p=sampling.top_p, eos_token_id=stop_ids, pad_token_id=engine.pad_id,
                             suppress_tokens=engine.suppress_ids, repetition_penalty=sampling.repetition_penalty,
                             output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[:, enc["input_ids"].shape[1]:]
    if not with_logprobs:
        return tokens.tolist()
    logp = torch.stack([torch.log_softmax(s, dim=-1) for s in out.scores], dim=1)
    return tokens.tolist(), logp.gather(2, tokens.unsqueeze(2)).squeeze(2).tolist()


@pytest.mark.parametrize("sampling", [
    SamplingParams(temperature=1.0, max_new_tokens=16),
    SamplingParams(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3, max_new_tokens=16),
    SamplingParams(temperature=0.0, max_new_tokens=16),
], ids=["plain", "warped", "greedy"])
def test_sampler_draws_exactly_what_transformers_generate_draws(tiny_model, sampling):
    """Same seed, same tokens as transformers.generate, with prompts prefilled once and shared by their rows, and
    the same log-probs (so the decode loop's own KV cache and masks compute what generate's do); a frequent token
    made a stop token ends rows early (kept, then padding), as generate does. The log-probs are bitwise equal where
    the CPU's matrix kernels give a row the same result in a batch of 3 prompts (ours, shared) as in one of 9
    (generate's); on others (AVX2 here) the last bit of a prefill value can differ, so they are compared to 1e-6."""
    model, processor = tiny_model
    engine = make_engine(RolloutConfig(), model, processor)
    encoded = [encode_prompt(p, processor) for p in prompts(3)]
    rows = [e for e in encoded for _ in range(3)]
    torch.manual_seed(3)
    probe, _, _ = engine._sample(rows, sampling)
    frequent = max(set(t for r in probe for t in r), key=lambda t: sum(r.count(t) for r in probe))
    for stops in (engine.stop_ids, [*engine.stop_ids, frequent]):
        engine.stop_ids = stops
        torch.manual_seed(3)
        tokens, logprobs, stopped = engine._sample(rows, sampling)
        torch.manual_seed(3)
        reference, reference_logp = _generate_reference(model, engine, rows, sampling, stops, with_logprobs=True)
        for ours, theirs, lp, their_lp, stop in zip(tokens, reference, logprobs, reference_logp, stopped):
            assert ours == theirs[: len(ours)]
            torch.testing.assert_close(torch.tensor(lp), torch.tensor(their_lp[: len(ours)]), rtol=0, atol=1e-6)
            assert stop == (ours[-1] in stops)
            assert all(t == engine.pad_id for t in theirs[len(ours):])  # generate pads a stopped row
    assert any(stopped)  # the frequent token did stop some rows
    assert engine._lean.verified is True  # the decode steps above ran through `LeanDecoder`


def test_roomy_cache_layer_writes_in_place_and_returns_what_concatenation_would():
    """In place while there is room, then grown; always the values and shapes concatenation gives."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    torch.manual_seed(0)
    plain, cache = DynamicLayer(), DynamicCache()
    first = (torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4))
    plain.update(*first)
    cache.update(*first, layer_idx=0)
    make_room(cache, 2)
    roomy = cache.layers[0]
    assert isinstance(roomy, RoomyLayer)
    storage = roomy.keys.data_ptr()
    for _ in range(2):
        new = (torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4))
        expected, got = plain.update(*new), cache.update(*new, layer_idx=0)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
        assert roomy.keys.data_ptr() == storage and cache.get_seq_length() == plain.get_seq_length()
    for _ in range(3):  # past the room (a finished rank feeding on under ZeRO-3): the buffers double
        new = (torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4))
        expected, got = plain.update(*new), cache.update(*new, layer_idx=0)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert roomy.buffers[0].shape[-2] == 14 and cache.get_seq_length() == 10


def test_a_finished_rank_feeds_on_past_its_token_budget_under_zero3(tiny_qwen25, monkeypatch):
    """ZeRO-3: a rank runs a decode forward for as long as any rank is still sampling, past its own max_new_tokens
    (e.g. the one-token filler call of a rank without prompts): the cache and the mask grow on."""
    import spark_vl.rollout.hf as hf

    model, processor = tiny_qwen25
    engine = make_engine(RolloutConfig(), model, processor)
    engine.synced_gpus = True
    others = iter([1] * 40)  # the other rank is still sampling for 40 more decode steps
    monkeypatch.setattr(hf, "max_over_ranks", lambda value, device: max(value, next(others, 0)))
    forwards = []
    hook = model.model.language_model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        row = encode_prompt(prompts(1)[0], processor)
        tokens, logprobs, _ = engine._sample([row], SamplingParams(temperature=0.0, max_new_tokens=2))
    finally:
        hook.remove()
    assert len(tokens[0]) == 2 and len(logprobs[0]) == 2 and len(forwards) == 1 + 40


def test_text_only_prompts_of_different_lengths_match_generate(tiny_qwen25):
    """Left-padded text-only rows: positions count each row's real tokens (no image, no M-RoPE offset)."""
    from spark_vl.data.prompts import build_messages
    from spark_vl.types import Prompt

    model, processor = tiny_qwen25
    engine = make_engine(RolloutConfig(), model, processor)
    base = prompts(1)[0]
    texts = ["What is two plus two?", "Name a colour. " * 6, "Hi"]
    rows = [encode_prompt(Prompt(f"t{i}", build_messages(t, 0), [], base.sample), processor)
            for i, t in enumerate(texts)]
    assert len({len(r.input_ids) for r in rows}) == 3
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    tokens, _, _ = engine._sample(rows, greedy)
    assert tokens == _generate_reference(model, engine, rows, greedy, engine.stop_ids)


def test_each_prompt_is_prefilled_once_for_all_its_samples(tiny_qwen25):
    model, processor = tiny_qwen25
    engine = make_engine(RolloutConfig(), model, processor)
    images = []
    hook = model.model.visual.register_forward_hook(
        lambda m, args, kwargs, out: images.append(len(kwargs.get("grid_thw", args[1:2] and args[1]))),
        with_kwargs=True)
    try:
        engine.generate(prompts(3), 4, SamplingParams(temperature=1.0, max_new_tokens=4))
    finally:
        hook.remove()
    assert images == [3]  # one vision pass over the 3 distinct images, not 12


def test_prefill_takes_the_towers_features_as_the_models_forward_computes_them(tiny_model, monkeypatch):
    """The prefill hands the model the vision features (`mm_encoder_outputs`, Qwen2.5-VL's grid tensors kept): the
    same tokens and bitwise the same log-probs as the model computing them from the pixels."""
    import spark_vl.rollout.hf as hf

    model, processor = tiny_model
    engine = make_engine(RolloutConfig(), model, processor)
    rows = [e for e in (encode_prompt(p, processor) for p in prompts(3)) for _ in range(2)]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8)
    calls = []
    real = hf.image_features
    monkeypatch.setattr(hf, "image_features", lambda *args: calls.append(len(args[2])) or real(*args))
    torch.manual_seed(5)
    given = engine._sample(rows, sampling)
    assert calls == [3]
    accepts = hf.accepts
    monkeypatch.setattr(hf, "accepts", lambda cls, method, name: name != "mm_encoder_outputs"
                        and accepts(cls, method, name))
    torch.manual_seed(5)
    assert engine._sample(rows, sampling) == given and calls == [3]


def test_prompt_encodings_are_shared_while_the_prompt_lives(tiny_qwen25, monkeypatch):
    """The rollout's encoding of a prompt serves the update (another PromptEncoder of the same processor); the
    entry leaves the cache with its prompt."""
    import gc

    from spark_vl.models import encode as enc_mod

    _, processor = tiny_qwen25
    calls = []
    real = enc_mod.encode_prompt
    monkeypatch.setattr(enc_mod, "encode_prompt", lambda p, proc, text=None: calls.append(p.uid) or real(p, proc))
    prompt = prompts(1)[0]
    first = enc_mod.PromptEncoder(processor)(prompt)
    assert enc_mod.PromptEncoder(processor)(prompt) is first and calls == [prompt.uid]
    cache = enc_mod.PromptEncoder._shared[processor]
    assert id(prompt) in cache
    key = id(prompt)
    del prompt
    gc.collect()
    assert key not in cache


def test_draw_is_torch_multinomial_on_the_same_random_stream():
    """Token for token what `torch.multinomial(p, 1)` draws for the same seed (peaked, flat and masked rows, ties of
    zeros), and the generator is left where multinomial leaves it."""
    for trial in range(200):
        g = torch.Generator().manual_seed(trial)
        scores = torch.randn(16, 64, generator=g) * (trial % 9 + 0.05)
        if trial % 3 == 0:
            scores[:, trial % 5 :: 4] = -float("inf")
        probs = torch.softmax(scores, dim=-1)
        torch.manual_seed(trial)
        expected, after = torch.multinomial(probs, 1).squeeze(1), torch.rand(4)
        torch.manual_seed(trial)
        assert torch.equal(draw(probs), expected) and torch.equal(torch.rand(4), after)


@pytest.mark.parametrize("shape", [(16, 512), (4, 151_936), (3, 7)])
def test_exponential_like_is_exponential_on_the_same_stream(shape):
    """Bit for bit the values `exponential_` draws for a seed (16 x 512: the issue-17 rollout; 4 x 151,936: Qwen's
    vocabulary), and the generator left where `exponential_` leaves it."""
    for seed in range(20 if shape[1] < 1000 else 2):
        torch.manual_seed(seed)
        expected, after = torch.empty(shape).exponential_(), torch.rand(4)
        torch.manual_seed(seed)
        assert torch.equal(exponential_like(torch.empty(shape)), expected) and torch.equal(torch.rand(4), after)


def test_values_next_to_a_float32_tie_take_the_c_librarys_log1p(monkeypatch):
    """A margin wide enough to send half of the values to the C library's log1p gives the same values too."""
    monkeypatch.setattr("spark_vl.rollout.hf.LOG1P_MARGIN", 2**27)
    torch.manual_seed(3)
    u = torch.rand(16, 512, dtype=torch.float64)
    assert near_float32_tie(torch.log1p(-u).neg_(), 2**27).float().mean() > 0.4
    torch.manual_seed(3)
    expected = torch.empty(16, 512).exponential_()
    torch.manual_seed(3)
    assert torch.equal(exponential_like(torch.empty(16, 512)), expected)


def test_float32_ties_are_found_and_only_they_can_round_two_ways():
    """Soundness of the tie test: a double and one within `margin` units of it round to different float32 values
    only if the tie test flags the first; exact ties and their neighbours are flagged, float32 values are not."""
    g = torch.Generator().manual_seed(0)
    q = torch.rand(100_000, generator=g) * 40  # the range of -log1p(-u)
    upper = torch.nextafter(q, torch.full_like(q, float("inf")))
    tie = (q.double() + upper.double()) / 2  # exact: the midpoint of two float32 neighbours is a double
    bits = tie.view(torch.int64)
    for offset in (0, 1, -1, LOG1P_MARGIN - 1, -LOG1P_MARGIN):
        assert near_float32_tie((bits + offset).view(torch.float64), LOG1P_MARGIN).all()
    assert not near_float32_tie(q.double(), LOG1P_MARGIN).any()
    # Doubles around ties (within 2 x margin) and anywhere: moved by up to margin - 1 units, any that round to
    # another float32 were flagged.
    spread = torch.randint(-2 * LOG1P_MARGIN, 2 * LOG1P_MARGIN, bits.shape, generator=g)
    near_ties = (bits + spread).view(torch.float64)
    anywhere = torch.rand(1_000_000, generator=g, dtype=torch.float64) * 40
    for d in (near_ties, anywhere):
        for units in (1, -1, LOG1P_MARGIN - 1, -(LOG1P_MARGIN - 1)):
            moved = d.float() != (d.view(torch.int64) + units).view(torch.float64).float()
            assert not (moved & ~near_float32_tie(d, LOG1P_MARGIN)).any()
            assert d is anywhere or moved.any()


def test_non_finite_scores_stop_the_rollout_with_multinomials_message(tiny_qwen25):
    """A NaN score (diverged weights) in any row, live or finished, at any step stops the rollout with the error the
    loop turns into a clear abort, as torch.multinomial's own check did."""
    model, processor = tiny_qwen25
    engine = make_engine(RolloutConfig(), model, processor)
    real, calls = engine._scores, []

    def scores_with_nan(history, logits, sampling):
        out = real(history, logits, sampling)
        calls.append(1)
        if len(calls) == 5:
            out[2, 7] = float("nan")
        return out

    engine._scores = scores_with_nan
    rows = [encode_prompt(p, processor) for p in prompts(2) for _ in range(2)]
    with pytest.raises(RuntimeError, match=NOT_FINITE):
        engine._sample(rows, SamplingParams(temperature=1.0, max_new_tokens=8))
    engine._scores, calls[:] = real, []
    assert len(engine._sample(rows, SamplingParams(temperature=1.0, max_new_tokens=8))[0]) == 4
