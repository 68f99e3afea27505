import pytest
import torch
from torch.utils.checkpoint import checkpoint

from spark_vl.algorithms.logprobs import chunked_logprobs, naive_logprobs, sequence_logprobs
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.encode import EncodedPrompt, attach_positions, encode_prompt
from spark_vl.trainer.batch import Sequence, collate, response_values


def test_chunked_equals_naive_values_and_grads():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    hidden = torch.randn(3, 41, 16, requires_grad=True)
    targets = torch.randint(0, 300, (3, 41))
    lp, ent = chunked_logprobs(hidden, head, targets, chunk_size=7)
    ref = naive_logprobs(head(hidden), targets)
    assert torch.allclose(lp, ref, atol=1e-5)
    probs = torch.softmax(head(hidden), -1)
    assert torch.allclose(ent, -(probs * probs.log()).sum(-1), atol=1e-4)
    (lp * torch.arange(41)).sum().backward()
    g_chunked = hidden.grad.clone()
    hidden.grad = None
    (ref * torch.arange(41)).sum().backward()
    assert torch.allclose(g_chunked, hidden.grad, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [7, 41])
def test_checkpointing_only_when_there_are_several_chunks_with_the_same_gradients(chunk_size, monkeypatch):
    """One chunk runs without activation checkpointing (it would only compute the head twice); the values and
    gradients are bitwise those of the checkpointed computation."""
    import spark_vl.algorithms.logprobs as module
    from spark_vl.algorithms.logprobs import _chunk_logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    targets = torch.randint(0, 300, (3, 41))
    hidden = torch.randn(3, 41, 16, requires_grad=True)
    calls = []
    monkeypatch.setattr(module, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    lp, _ = chunked_logprobs(hidden, head, targets, chunk_size=chunk_size, temperature=0.7)
    (lp * torch.arange(41)).sum().backward()
    assert len(calls) == (0 if chunk_size == 41 else 6)
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    ref = torch.cat([checkpoint(_chunk_logprobs, head, hidden[:, i : i + chunk_size], targets[:, i : i + chunk_size],
                                0.7, use_reentrant=False)[0] for i in range(0, 41, chunk_size)], dim=1)
    (ref * torch.arange(41)).sum().backward()
    assert torch.equal(lp, ref)
    assert torch.equal(grads[0], hidden.grad) and torch.equal(grads[1], head.weight.grad)


def test_log_probs_without_entropy_are_the_same(tiny_qwen25):
    """The no-grad passes (old and reference log-probs) skip the entropy: same log-probs, bitwise."""
    model, processor = tiny_qwen25
    seqs = _sequences(processor)
    for s in seqs:
        attach_positions(model, s.prompt)
    batch = collate(seqs, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        lp, ent = sequence_logprobs(model, batch, temperature=0.7)
        lp_only, none = sequence_logprobs(model, batch, temperature=0.7, with_entropy=False)
    assert none is None and ent.shape == lp.shape and torch.equal(lp, lp_only)


def test_temperature_scales_logits():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 20, bias=False)
    h, y = torch.randn(1, 5, 8), torch.randint(0, 20, (1, 5))
    lp, _ = chunked_logprobs(h, head, y, temperature=0.5)
    assert torch.allclose(lp, naive_logprobs(head(h) / 0.5, y), atol=1e-5)


def _sequences(processor, n=4):
    samples = synthetic_samples(n, seed=3, image_size=56 + 28)
    tok = processor.tokenizer
    out = []
    for i, s in enumerate(samples):
        # different image sizes in one batch
        if i % 2:
            s.images = [s.images[0].resize((56, 112))]
        ids = tok(s.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append(Sequence(encode_prompt(build_prompt(s), processor), ids[: 5 + 3 * i]))
    return out


def test_model_logprobs_match_full_logits_and_single_sequences(tiny_model):
    model, processor = tiny_model
    seqs = _sequences(processor)
    batch = collate(seqs, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, batch, chunk_size=16)
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=batch.mm_token_type_ids,
        ).logits
    full = naive_logprobs(logits[:, :-1], batch.input_ids[:, 1:])
    assert torch.allclose(lp * batch.response_mask, full * batch.response_mask, atol=1e-5)
    batched = response_values(lp, seqs)
    for s, values in zip(seqs, batched):
        one = collate([s], processor.tokenizer.pad_token_id)
        with torch.no_grad():
            single, _ = sequence_logprobs(model, one)
        assert torch.allclose(torch.tensor(values), torch.tensor(response_values(single, [s])[0]), atol=1e-5)
        assert len(values) == len(s.response_ids)


def test_lm_head_runs_only_from_the_first_response_column(tiny_qwen25):
    model, processor = tiny_qwen25
    seqs = _sequences(processor, 3)
    batch = collate(seqs, processor.tokenizer.pad_token_id)
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    with torch.no_grad():
        lp, ent = sequence_logprobs(model, batch)
    hook.remove()
    start = min(len(s.prompt.input_ids) for s in seqs) - 1  # the shortest prompt's last token predicts first
    assert seen == [batch.input_ids.shape[1] - 1 - start]
    assert lp.shape == ent.shape == batch.response_mask.shape
    assert lp[:, :start].abs().sum() == 0 and ent[:, :start].abs().sum() == 0
    assert (lp[:, start:] != 0).any(dim=1).all()


def test_response_mask_marks_predicting_positions(tiny_qwen25):
    _, processor = tiny_qwen25
    seqs = _sequences(processor, 2)
    batch = collate(seqs, processor.tokenizer.pad_token_id)
    for b, s in enumerate(seqs):
        p = len(s.prompt.input_ids)
        cols = batch.response_mask[b].nonzero().flatten().tolist()
        assert cols == list(range(p - 1, p - 1 + len(s.response_ids)))
        assert batch.input_ids[b, p : p + len(s.response_ids)].tolist() == s.response_ids


@pytest.mark.parametrize("encoder_outputs", [True, False], ids=["features-reused", "pixels-repeated"])
def test_rows_sharing_a_prompt_run_the_vision_tower_once_with_the_same_result(tiny_model, encoder_outputs,
                                                                             monkeypatch):
    """3 prompts x 3 responses: the vision tower sees 3 images, not 9, and log-probs and gradients equal those of
    9 separately encoded rows (a transformers without `mm_encoder_outputs` repeats the pixels instead)."""
    import copy

    from spark_vl.algorithms import logprobs as lp_mod

    model, processor = tiny_model
    pad = processor.tokenizer.pad_token_id
    encoded = [encode_prompt(p, processor) for p in [build_prompt(s) for s in synthetic_samples(3, seed=2)]]
    seqs = [Sequence(e, list(range(100, 105 + k))) for e in encoded for k in range(3)]
    shared = collate(seqs, pad)
    separate = collate([Sequence(copy.copy(s.prompt), s.response_ids) for s in seqs], pad)
    assert shared.image_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and separate.image_index is None
    assert len(shared.pixel_values) * 3 == len(separate.pixel_values)
    if not encoder_outputs:
        real = lp_mod.accepts
        monkeypatch.setattr(lp_mod, "accepts", lambda cls, method, name: name != "mm_encoder_outputs"
                            and real(cls, method, name))
    images = []
    hook = model.model.visual.register_forward_hook(
        lambda m, args, kwargs, out: images.append(len(kwargs.get("grid_thw", args[1:2] and args[1]))),
        with_kwargs=True)
    try:
        grads = []
        for batch in (shared, separate):
            model.zero_grad()
            values, _ = sequence_logprobs(model, batch)
            (values * batch.response_mask).sum().backward()
            grads.append((values.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    finally:
        hook.remove()
        model.zero_grad()
    assert images == ([3, 9] if encoder_outputs else [9, 9])  # features: once per distinct image
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, atol=1e-5)


def test_positions_computed_once_per_prompt_equal_the_models_own(tiny_model):
    """`attach_positions` stores each prompt's M-RoPE positions; a batch built from them (responses continuing
    the prompt's text positions) scores exactly what the model computes from the whole right-padded batch."""
    from spark_vl.models.encode import attach_positions

    model, processor = tiny_model
    seqs = _sequences(processor, 4)
    seqs.append(Sequence(encode_prompt(build_prompt(synthetic_samples(1)[0]), processor), []))  # a filler row
    plain = collate(seqs, processor.tokenizer.pad_token_id)
    for s in seqs:
        attach_positions(model, s.prompt)
    cached = collate(seqs, processor.tokenizer.pad_token_id)
    assert plain.position_ids is None and cached.position_ids.shape == (3, *cached.input_ids.shape)
    with torch.no_grad():
        expected, _ = sequence_logprobs(model, plain)
        ours, _ = sequence_logprobs(model, cached)
        own, _ = model.model.get_rope_index(plain.input_ids, mm_token_type_ids=plain.mm_token_type_ids,
                                            image_grid_thw=plain.image_grid_thw,
                                            attention_mask=plain.attention_mask)
    real = plain.attention_mask.bool()
    assert torch.equal(cached.position_ids[:, real], own[:, real])
    assert torch.equal(ours * plain.response_mask, expected * plain.response_mask)


def test_synced_chunk_count_pads_with_empty_chunks():
    """ZeRO-3 lockstep: a rank with fewer positions still calls the head as often as the others; the extra
    calls see empty chunks and change nothing."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden, targets = torch.randn(2, 5, 8), torch.randint(0, 11, (2, 5))
    calls = []
    handle = head.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    plain, _ = chunked_logprobs(hidden, head, targets, chunk_size=2)
    assert calls == [2, 2, 1]
    calls.clear()
    synced, _ = chunked_logprobs(hidden, head, targets, chunk_size=2, sync_chunks=lambda n: n + 2)
    handle.remove()
    assert calls == [2, 2, 1, 0, 0] and torch.equal(plain, synced)


def _collate_row_by_row(seqs, pad_id):
    """The definition of collate's placement, one row at a time (the reference for the batched construction)."""
    T = max(len(s.prompt.input_ids) + len(s.response_ids) for s in seqs)
    B = len(seqs)
    out = {"input_ids": torch.full((B, T), pad_id), "attention_mask": torch.zeros(B, T, dtype=torch.long),
           "mm_token_type_ids": torch.zeros(B, T, dtype=torch.long), "response_mask": torch.zeros(B, T - 1),
           "advantages": torch.zeros(B, T - 1), "old_logprobs": torch.zeros(B, T - 1),
           "ref_logprobs": torch.zeros(B, T - 1), "behaviour_logprobs": torch.zeros(B, T - 1),
           "position_ids": torch.zeros(3, B, T, dtype=torch.long)}
    for b, s in enumerate(seqs):
        p, r = len(s.prompt.input_ids), len(s.response_ids)
        out["input_ids"][b, : p + r] = torch.tensor(s.prompt.input_ids + s.response_ids)
        out["attention_mask"][b, : p + r] = 1
        out["mm_token_type_ids"][b, :p] = torch.tensor(s.prompt.mm_token_type_ids)
        out["response_mask"][b, p - 1 : p - 1 + r] = 1.0
        out["advantages"][b, p - 1 : p - 1 + r] = s.advantage
        out["old_logprobs"][b, p - 1 : p - 1 + r] = torch.tensor(s.old_logprobs)
        out["ref_logprobs"][b, p - 1 : p - 1 + r] = torch.tensor(s.ref_logprobs)
        if s.behaviour_logprobs is not None:
            out["behaviour_logprobs"][b, p - 1 : p - 1 + r] = torch.tensor(s.behaviour_logprobs)
        out["position_ids"][:, b, :p] = s.prompt.positions
        out["position_ids"][:, b, p:] = s.prompt.positions.max() + 1 + torch.arange(T - p)
    return out


def test_collate_places_every_row_as_the_row_by_row_definition(tiny_model):
    """Shared and distinct image prompts, responses of different lengths (one empty, one expert without sampler
    log-probs): every tensor equals the row-by-row placement exactly, and a log-prob list of the wrong length is
    an error that names the sequence."""
    model, processor = tiny_model
    seqs = _sequences(processor)
    seqs.append(Sequence(seqs[0].prompt, seqs[0].response_ids[:2]))  # shares prompt 0's image
    seqs.append(Sequence(seqs[1].prompt, [], is_expert=True))  # an empty response
    g = torch.Generator().manual_seed(0)
    for i, s in enumerate(seqs):
        attach_positions(model, s.prompt)
        r = len(s.response_ids)
        s.advantage = 0.1 * i - 0.2
        s.old_logprobs, s.ref_logprobs = torch.randn(r, generator=g).tolist(), torch.randn(r, generator=g).tolist()
        s.behaviour_logprobs = None if s.is_expert else torch.randn(r, generator=g).tolist()
    pad = processor.tokenizer.pad_token_id
    batch, want = collate(seqs, pad), _collate_row_by_row(seqs, pad)
    for name, expected in want.items():
        assert torch.equal(getattr(batch, name), expected), name
    assert batch.has_behaviour.tolist() == [True] * 5 + [False]
    seqs[2].ref_logprobs = seqs[2].ref_logprobs[:-1]
    with pytest.raises(ValueError, match="sequence 2 has .* reference log-probs"):
        collate(seqs, pad)


def test_collate_of_random_batches_is_the_row_by_row_definition():
    """200 random batches (prompts of 1-40 tokens shared by several rows, responses of 0-12 tokens): every tensor
    equals the row-by-row placement, with collate's dtypes."""
    g = torch.Generator().manual_seed(1)

    def ints(n, high):
        return torch.randint(0, high, (n,), generator=g).tolist()

    for _ in range(200):
        prompts = []
        for n in (int(x) for x in torch.randint(1, 41, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g)):
            prompts.append(EncodedPrompt(ints(n, 100), ints(n, 2), None, None, torch.arange(n).expand(3, n)))
        seqs = []
        for k in ints(int(torch.randint(1, 9, (1,), generator=g)), len(prompts)):
            r = int(torch.randint(0, 13, (1,), generator=g))
            values = [torch.randn(r, generator=g).tolist() for _ in range(3)]
            seqs.append(Sequence(prompts[k], ints(r, 100), advantage=float(torch.randn(1, generator=g)),
                                 old_logprobs=values[0], ref_logprobs=values[1],
                                 behaviour_logprobs=values[2] if r % 2 else None))
        batch = collate(seqs, 7)
        for name, expected in _collate_row_by_row(seqs, 7).items():
            if name == "behaviour_logprobs" and batch.has_behaviour is None:
                assert batch.behaviour_logprobs is None and not expected.any()
                continue
            got = getattr(batch, name)
            assert got.dtype == (torch.float32 if expected.is_floating_point() else torch.int64), name
            assert torch.equal(got, expected), name


def _shared_prompt_rows(model, processor):
    """3 prompts (two image sizes) x 3 responses of different lengths, a row without a response, rows shuffled."""
    samples = synthetic_samples(3, seed=2)
    samples[1].images = [samples[1].images[0].resize((56, 112))]
    encoded = [encode_prompt(build_prompt(s), processor) for s in samples]
    for e in encoded:
        attach_positions(model, e)
    g = torch.Generator().manual_seed(0)
    vocab = [t for t in range(10, 300) if t not in processor.tokenizer.all_special_ids]
    seqs = [Sequence(e, [vocab[int(i)] for i in torch.randint(0, len(vocab), (3 + 4 * k,), generator=g)])
            for e in encoded for k in range(3)]
    seqs.append(Sequence(encoded[0], []))
    return [seqs[i] for i in torch.randperm(len(seqs), generator=g).tolist()]


def test_shared_prompt_layout_is_each_rows_prompt_and_response(tiny_model):
    """`SharedPrompts`: each distinct prompt once, left-padded, with its own positions; every row's response and its
    positions; `response_index` maps each response column of the batch to the response token it scores."""
    model, processor = tiny_model
    pad = processor.tokenizer.pad_token_id
    seqs = _shared_prompt_rows(model, processor)
    batch = collate(seqs, pad, share_prompts=True)
    sp = batch.shared
    assert collate(seqs, pad).shared is None
    first_seen = list(dict.fromkeys(id(s.prompt) for s in seqs))  # distinct prompts in order of first appearance
    assert sp.input_ids.shape[0] == 3 and sp.rows.tolist() == [first_seen.index(id(s.prompt)) for s in seqs]
    for b, s in enumerate(seqs):
        p, r = len(s.prompt.input_ids), len(s.response_ids)
        g = int(sp.rows[b])
        assert sp.input_ids[g, -p:].tolist() == s.prompt.input_ids and sp.attention_mask[g].sum() == p
        assert sp.attention_mask[g, -p:].all() and torch.equal(sp.position_ids[:, g, -p:], s.prompt.positions)
        assert sp.response_ids[b, :r].tolist() == s.response_ids
        assert torch.equal(sp.response_positions[:, b, :r], batch.position_ids[:, b, p : p + r])
        cols = batch.response_mask[b].nonzero().flatten()
        assert torch.equal(sp.response_ids[b, sp.response_index[b, cols]], batch.input_ids[b, cols + 1])
    images = [s.prompt.image_grid_thw for s in {id(s.prompt): s for s in seqs}.values()]
    assert torch.equal(sp.image_grid_thw, torch.cat(images))


def test_shared_prompts_score_what_the_full_rows_score(tiny_model):
    """Each prompt computed once (its rows attending to its keys and values) gives the full rows' log-probs, entropy
    and gradients up to float rounding, 0 on every column that is not a response token, and runs the vision tower
    and the prompt's tokens once per distinct prompt."""
    model, processor = tiny_model
    pad = processor.tokenizer.pad_token_id
    seqs = _shared_prompt_rows(model, processor)
    plain, shared = collate(seqs, pad), collate(seqs, pad, share_prompts=True)
    seen = {"images": [], "tokens": []}
    def images(module, args, kwargs, out):
        seen["images"].append(len(kwargs.get("grid_thw", args[1:2] and args[1])))

    hooks = [model.model.visual.register_forward_hook(images, with_kwargs=True),
             model.model.language_model.layers[0].register_forward_hook(
                 lambda m, args, out: seen["tokens"].append(args[0].shape[0] * args[0].shape[1]))]
    results = []
    try:
        for batch in (plain, shared):
            model.zero_grad()
            lp, ent = sequence_logprobs(model, batch, chunk_size=7)
            ((lp * batch.response_mask).sum() + 0.1 * (ent * batch.response_mask).sum()).backward()
            results.append((lp.detach(), ent.detach(), [p.grad.clone() for p in model.parameters()]))
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad()
    on = plain.response_mask.bool()
    (lp_a, ent_a, grads_a), (lp_b, ent_b, grads_b) = results
    assert torch.allclose(lp_a[on], lp_b[on], atol=1e-5) and torch.allclose(ent_a[on], ent_b[on], atol=1e-5)
    assert (lp_b[~on] == 0).all() and (ent_b[~on] == 0).all()
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert seen["images"] == [3, 3]  # already once per distinct image in the full rows
    P, R = shared.shared.input_ids.shape[1], shared.shared.response_ids.shape[1]
    assert seen["tokens"] == [plain.input_ids.numel(), 3 * P, len(seqs) * R]
    assert 3 * P + len(seqs) * R < plain.input_ids.numel()


def test_share_prompts_is_refused_where_it_cannot_apply():
    """Gradient checkpointing drops the prompts' keys and values: the two cannot be combined (a ConfigError at load
    time, naming both keys); flash attention takes no [B, 1, R, P + R] mask."""
    from spark_vl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.gradient_checkpointing"):
        load_config("configs/demo_cpu.yaml", ["trainer.share_prompts=true", "model.gradient_checkpointing=true"])
    with pytest.raises(ConfigError, match="attn_implementation"):
        load_config("configs/demo_cpu.yaml", ["trainer.share_prompts=true",
                                              "model.attn_implementation=flash_attention_2"])
    assert load_config("configs/demo_cpu.yaml", ["trainer.share_prompts=true"]).trainer.share_prompts


def test_prompts_are_shared_only_where_a_row_repeats_one_unless_ranks_need_the_same_modules(tiny_qwen25):
    """A micro-batch of distinct prompts keeps the full rows (two passes would only cost more), unless `uniform`
    (several ranks); `by_prompt` puts a prompt's rows side by side, stably, so micro-batches cut from it share."""
    from spark_vl.trainer.batch import by_prompt

    model, processor = tiny_qwen25
    pad = processor.tokenizer.pad_token_id
    seqs = _shared_prompt_rows(model, processor)
    distinct = list({id(s.prompt): s for s in seqs}.values())
    assert collate(distinct, pad, share_prompts=True).shared is None
    assert collate(distinct, pad, share_prompts=True, uniform=True).shared.input_ids.shape[0] == len(distinct)
    grouped = by_prompt(seqs)
    order = list(dict.fromkeys(id(s.prompt) for s in seqs))
    assert [id(s.prompt) for s in grouped] == sorted((id(s.prompt) for s in seqs), key=order.index)
    for key in order:  # each prompt's rows keep their order
        assert [s for s in grouped if id(s.prompt) == key] == [s for s in seqs if id(s.prompt) == key]


def test_grid_tensors_give_the_vision_tower_the_same_features_and_gradients(tiny_qwen25, tiny_qwen3):
    """Qwen2.5-VL's grid-derived tensors, made once per grid (here inside inference mode, as in the reference pass)
    and handed to the tower: the same features, and the same gradients in a pass with autograd, as the tower
    computing them itself; kept per grid; nothing for Qwen3-VL's tower."""
    import spark_vl.models as module

    model, processor = tiny_qwen25
    trunk = model.model
    encoded = [encode_prompt(build_prompt(s), processor) for s in synthetic_samples(3, seed=4)]
    pixels = torch.cat([e.pixel_values for e in encoded for _ in range(2)])
    grid = torch.cat([e.image_grid_thw for e in encoded for _ in range(2)])
    module._GRID_TENSORS.clear()
    with torch.inference_mode():
        given = module.grid_tensors(trunk.visual, grid)
    assert sorted(given) == ["image_cu_seqlens", "image_cu_window_seqlens", "image_position_ids", "image_window_index"]
    assert module.grid_tensors(trunk.visual, grid.clone()) is given and len(module._GRID_TENSORS) == 1

    def features_and_grads(kwargs):
        model.zero_grad()
        out = trunk.get_image_features(pixels, grid, return_dict=True, **kwargs).pooler_output
        sum((f * torch.arange(f.numel()).view_as(f)).sum() for f in out).backward()
        return [f.detach() for f in out], [p.grad.clone() for p in trunk.visual.parameters()]

    (f_given, g_given), (f_own, g_own) = features_and_grads(given), features_and_grads({})
    assert all(torch.equal(a, b) for a, b in zip(f_given, f_own, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(g_given, g_own, strict=True))
    model.zero_grad()
    assert module.grid_tensors(tiny_qwen3[0].model.visual, grid) == {}


def test_trunk_mask_scores_right_padded_rows_as_the_padding_mask_does(tiny_model, monkeypatch):
    """Rows of different lengths (so right padding), prompts repeated as in a group: the log-probs without gradient
    (no mask: causal attention) and the log-probs and every gradient with it (the ready-made float mask) are bitwise
    those of handing the trunk the [B, T] padding mask."""
    import spark_vl.algorithms.logprobs as module

    model, processor = tiny_model
    seqs = [s for s in _sequences(processor, 3) for _ in range(2)]
    for i, s in enumerate(seqs):
        attach_positions(model, s.prompt)
        seqs[i] = Sequence(s.prompt, s.response_ids[: 3 + 2 * i])
    batch = collate(seqs, processor.tokenizer.pad_token_id)
    assert not bool(batch.attention_mask.all())

    def scored(grad):
        model.zero_grad()
        with torch.set_grad_enabled(grad):
            lp, _ = sequence_logprobs(model, batch, with_entropy=False)
            if grad:
                (lp * batch.response_mask * torch.arange(lp.numel()).view_as(lp)).sum().backward()
        # the padding's own columns are not scores (they differ: padded tokens attend to other padding now)
        return lp.detach()[batch.response_mask.bool()], [p.grad.clone() for p in model.parameters()
                                                         if p.grad is not None]

    with torch.no_grad():
        assert module.trunk_mask(model, batch) is None
    float_mask = module.trunk_mask(model, batch)
    assert float_mask.dtype == torch.float32 and float_mask.shape == (len(seqs), 1, *batch.input_ids.shape[1:] * 2)
    fast = {grad: scored(grad) for grad in (False, True)}
    monkeypatch.setattr(module, "trunk_mask", lambda model, batch: batch.attention_mask)
    for grad in (False, True):
        (lp, grads), (want_lp, want_grads) = fast[grad], scored(grad)
        assert torch.equal(lp, want_lp)
        assert len(grads) == len(want_grads) > (0 if grad else -1)
        assert all(torch.equal(a, b) for a, b in zip(grads, want_grads, strict=True))
    model.zero_grad()


def test_trunk_mask_keeps_the_padding_mask_where_it_is_not_checked(tiny_qwen25, monkeypatch):
    """No padding (transformers drops the mask itself), left padding, no positions given (the model derives them from
    the mask), another attention implementation: the [B, T] mask as it is."""
    from types import SimpleNamespace

    from spark_vl.algorithms.logprobs import trunk_mask

    model, _ = tiny_qwen25
    positions = torch.zeros(3, 2, 3, dtype=torch.long)
    right = SimpleNamespace(attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), position_ids=positions)
    with torch.no_grad():
        assert trunk_mask(model, right) is None
        for mask in (torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 1], [0, 1, 1]])):
            assert trunk_mask(model, SimpleNamespace(attention_mask=mask, position_ids=positions)) is mask
        no_positions = SimpleNamespace(attention_mask=right.attention_mask, position_ids=None)
        assert trunk_mask(model, no_positions) is right.attention_mask
        monkeypatch.setattr(model.model.language_model.config, "_attn_implementation", "eager")
        assert trunk_mask(model, right) is right.attention_mask
