"""Per-token log-probs (and entropy) of VLM inputs without materialising [B, T, V] logits.

The model's trunk gives hidden states [B, T, H]; the LM head is applied to a chunk of positions at a
time and each chunk is wrapped in activation checkpointing (when there is more than one), so forward *and*
backward hold one [B, chunk, V] block of logits at a time (vocabulary 151,646 x 4,096 positions would otherwise be
~2.5 GB per sequence in fp32). The chunk length is chosen so a block holds at most `max_chunk_elements`
logits (default 2^25: 128 MB in fp32). log p(y) = logit_y - logsumexp(logits); entropy = logsumexp - sum p * logit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch.utils.checkpoint import checkpoint

from spark_vl.models import accepts, cache_arg, image_features, model_cache, not_plain_sdpa


def _chunk_logprobs(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    entropy_grad: bool = False,
    suppress_ids: torch.Tensor | None = None,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = head(hidden).float()
    if suppress_ids is not None:  # tokens the sampler can never draw: not part of its distribution
        logits = logits.index_fill(-1, suppress_ids.to(logits.device), torch.finfo(logits.dtype).min)
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp, None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):  # a metric unless it is a loss term
        probs = torch.softmax(logits, dim=-1)
        entropy = lse - (probs * logits).sum(-1)
    return logp, entropy


MAX_CHUNK_ELEMENTS = 2**25


def chunk_length(batch: int, vocab: int, max_chunk_elements: int = MAX_CHUNK_ELEMENTS) -> int:
    """Positions per chunk so that one [batch, chunk, vocab] block stays under the element budget."""
    return max(1, max_chunk_elements // max(1, batch * vocab))


def chunked_logprobs(
    hidden_BTH: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    targets_BT: torch.Tensor,
    chunk_size: int | None = None,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    entropy_grad: bool = False,
    suppress_ids: torch.Tensor | None = None,
    sync_chunks: Callable[[int], int] | None = None,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(targets) [B, T] and entropy [B, T] (None without `with_entropy`: a pass that only needs log-probs
    skips the extra softmax over every block) from hidden states, one chunk of positions at a time.

    `chunk_size` None = sized from the vocabulary (`vocab_size`, or the head's out_features) by the budget.
    `sync_chunks` maps this rank's chunk count to the count to run (ZeRO-3 on several ranks: the maximum over
    ranks, since every call of the head gathers its weight collectively); chunks past the end are empty.
    `temperature` divides the logits and `suppress_ids` (e.g. vision placeholders the sampler never draws) are
    masked out first, so the log-probs are the sampler's distribution. The entropy carries a gradient only
    with `entropy_grad` (an entropy bonus in the loss); otherwise it is a detached metric.
    """
    if chunk_size is None:
        vocab = vocab_size or getattr(head, "out_features", None) or 151_936
        chunk_size = chunk_length(hidden_BTH.shape[0], vocab)
    logps, entropies = [], []
    chunks = -(-hidden_BTH.shape[1] // chunk_size)
    if sync_chunks is not None:
        chunks = sync_chunks(chunks)
    # A single block is held once either way: checkpointing it would only run the head twice (same numbers).
    use_ckpt = torch.is_grad_enabled() and hidden_BTH.requires_grad and chunks > 1
    for start in range(0, chunks * chunk_size, chunk_size):
        h = hidden_BTH[:, start : start + chunk_size]
        y = targets_BT[:, start : start + chunk_size]
        if use_ckpt:
            lp, ent = checkpoint(_chunk_logprobs, head, h, y, temperature, entropy_grad, suppress_ids, with_entropy,
                                 use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(head, h, y, temperature, entropy_grad, suppress_ids, with_entropy)
        logps.append(lp)
        entropies.append(ent)
    return torch.cat(logps, dim=1), torch.cat(entropies, dim=1) if with_entropy else None


def naive_logprobs(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """The reference computation: full log-softmax, then gather. Used by tests and the benchmark."""
    return torch.log_softmax(logits_BTV.float(), dim=-1).gather(-1, targets_BT.unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(model, batch, chunk_size: int | None = None, temperature: float = 1.0,
                      entropy_grad: bool = False, suppress_ids: torch.Tensor | None = None,
                      sync_chunks: Callable[[int], int] | None = None, with_entropy: bool = True):
    """log p and entropy [B, T-1] of input_ids[:, 1:] given the prefix, for a Qwen-VL model and a TrainBatch
    (entropy None without `with_entropy`).

    Calls the trunk (`model.model`) and then the LM head module per chunk, so ZeRO-3's parameter hooks
    still fire; `mm_token_type_ids` is always passed (Qwen3-VL needs it, Qwen2.5-VL's M-RoPE positions
    are otherwise computed differently). The head runs only from the batch's first response column on (the
    prompt's logits are never used): the columns before it are 0. A batch with `shared` prompts goes to
    `shared_prompt_logprobs` (the same values up to rounding; 0 on every column that is not a response token).
    """
    if batch.shared is not None:
        return shared_prompt_logprobs(model, batch, chunk_size, temperature, entropy_grad, suppress_ids, sync_chunks,
                                      with_entropy)
    out = model.model(
        input_ids=batch.input_ids,
        attention_mask=trunk_mask(model, batch),
        image_grid_thw=batch.image_grid_thw,
        mm_token_type_ids=batch.mm_token_type_ids,
        position_ids=batch.position_ids,  # None: the model computes them
        use_cache=False,
        **vision_inputs(model, batch),
    )
    start = first_response_column(batch.response_mask)
    hidden = out.last_hidden_state[:, start:-1]
    logp, entropy = chunked_logprobs(hidden, model.lm_head, batch.input_ids[:, start + 1 :], chunk_size, temperature,
                                     entropy_grad=entropy_grad, suppress_ids=suppress_ids, sync_chunks=sync_chunks,
                                     with_entropy=with_entropy)
    if start == 0:
        return logp, entropy
    pad = logp.new_zeros(logp.shape[0], start)
    return torch.cat([pad, logp], dim=1), torch.cat([pad, entropy], dim=1) if with_entropy else None


def shared_prompt_logprobs(model, batch, chunk_size: int | None = None, temperature: float = 1.0,
                           entropy_grad: bool = False, suppress_ids: torch.Tensor | None = None,
                           sync_chunks: Callable[[int], int] | None = None, with_entropy: bool = True):
    """`sequence_logprobs` with each distinct prompt computed once (`batch.shared`, see `SharedPrompts`).

    Two passes of the trunk: the G distinct prompts (left-padded, images included), keeping their keys and values;
    then the B responses alone, each attending to its prompt's cached keys and values (copied to its row) and
    causally to itself. Under causal attention a prompt's states do not depend on what follows it, so this is the
    same computation as the full rows, in other blocks (values equal up to float rounding); gradients from every
    row of a prompt add up in its keys and values. The prompt's last state predicts each row's first response token.
    Needs a KV cache through the trunk in training (not under gradient checkpointing: `trainer.share_prompts`
    refuses it) and the text decoder as `model.model.language_model` (both Qwen-VL families). Every rank calls the
    same modules in the same order (ZeRO-3 gathers per call), whatever its rows.
    """
    sp = batch.shared
    trunk = model.model
    decoder = trunk.language_model
    prompts = replace(batch, image_grid_thw=sp.image_grid_thw, vision_grid_thw=None, image_index=None)
    out = trunk(input_ids=sp.input_ids, attention_mask=sp.attention_mask, image_grid_thw=sp.image_grid_thw,
                mm_token_type_ids=sp.mm_token_type_ids, position_ids=sp.position_ids, use_cache=True,
                **vision_inputs(model, prompts))
    cache = model_cache(out)
    cache.reorder_cache(sp.rows)  # every row gets its prompt's keys and values
    B, R = sp.response_ids.shape
    P = sp.input_ids.shape[1]
    # [B, 1, R, P + R]: a response token sees its prompt's real tokens and its own row's tokens up to itself.
    causal = torch.ones(R, R, dtype=torch.bool, device=sp.response_ids.device).tril()
    mask = torch.cat([sp.attention_mask.bool().index_select(0, sp.rows)[:, None, :].expand(B, R, P),
                      causal.expand(B, R, R)], dim=-1)[:, None]
    responses = decoder(input_ids=sp.response_ids, attention_mask=mask, position_ids=sp.response_positions,
                        use_cache=True, **{cache_arg(decoder): cache}).last_hidden_state
    first = out.last_hidden_state[:, -1:].index_select(0, sp.rows)  # predicts each row's first response token
    hidden = torch.cat([first, responses[:, :-1]], dim=1)
    logp, entropy = chunked_logprobs(hidden, model.lm_head, sp.response_ids, chunk_size, temperature,
                                     entropy_grad=entropy_grad, suppress_ids=suppress_ids, sync_chunks=sync_chunks,
                                     with_entropy=with_entropy)
    on = batch.response_mask.bool()
    logp = torch.where(on, logp.gather(1, sp.response_index), 0.0)
    if with_entropy:
        entropy = torch.where(on, entropy.gather(1, sp.response_index), 0.0)
    return logp, entropy


def vision_inputs(model, batch) -> dict:
    """The image inputs of the trunk: the vision tower's features, computed here once per distinct image (rows that
    share a prompt, `batch.image_index`, reuse them; gradients from every use add up) and passed as
    `mm_encoder_outputs`. Always computed here, shared or not, so every ZeRO-3 rank runs the vision tower and then
    the trunk in the same order (parameters are gathered per module call). A transformers without that argument
    gets every row's pixels."""
    if batch.pixel_values is None:
        return {}
    trunk = model.model
    if not accepts(type(trunk), "forward", "mm_encoder_outputs"):
        if batch.image_index is None:
            return {"pixel_values": batch.pixel_values}
        patches = batch.vision_grid_thw.prod(-1)
        starts = torch.cumsum(patches, 0) - patches
        rows = torch.cat([torch.arange(int(starts[i]), int(starts[i] + patches[i])) for i in batch.image_index])
        return {"pixel_values": batch.pixel_values[rows.to(batch.pixel_values.device)]}
    shared = batch.image_index is not None
    grid = batch.vision_grid_thw if shared else batch.image_grid_thw
    features = image_features(trunk, batch.pixel_values, grid)
    if shared:
        index = batch.image_index.tolist()
        features.pooler_output = tuple(features.pooler_output[i] for i in index)
        if getattr(features, "deepstack_features", None) is not None:  # Qwen3-VL: inner vision layers' features
            features.deepstack_features = [tuple(layer[i] for i in index) for layer in features.deepstack_features]
    return {"mm_encoder_outputs": {"image": features}}


def trunk_mask(model, batch) -> torch.Tensor | None:
    """The attention mask given to the trunk for a batch of right-padded rows (`collate`'s layout) with their M-RoPE
    positions (without them the model derives positions from the [B, T] mask), chosen for speed where the result is
    bitwise the one of the [B, T] padding mask (checked by tests on both model families).

    On CPU under SDPA: without gradient, None: causal attention alone hides a row's padding from its tokens (padding
    only follows them), and transformers then runs SDPA with `is_causal` and without building, converting and adding
    a [B, 1, T, T] mask (~10 % of a small model's pass). With gradient that path is not exact: transformers then hands
    the grouped key/value heads to SDPA unrepeated, whose backward sums their gradients in another order. So the
    padding-and-causal mask is given ready made, as the additive float mask SDPA would convert the boolean one to
    (the same values, without transformers' mask building and SDPA's conversion in every layer). Elsewhere (GPU
    kernels, eager or flash attention, sliding windows, left padding): the padding mask, as before."""
    mask_BT = batch.attention_mask
    config = getattr(getattr(model.model, "language_model", None), "config", None)
    if (batch.position_ids is None or mask_BT.device.type != "cpu" or not_plain_sdpa(config) is not None
            or bool(mask_BT.all()) or not right_padded(mask_BT)):  # (no padding: transformers drops the mask itself)
        return mask_BT
    if not torch.is_grad_enabled():
        return None
    B, T = mask_BT.shape
    options = {"dtype": model.lm_head.weight.dtype, "device": mask_BT.device}
    causal = torch.full((T, T), float("-inf"), **options).triu_(1)
    padding = torch.zeros(B, 1, 1, T, **options).masked_fill_(mask_BT[:, None, None, :] == 0, float("-inf"))
    return causal + padding  # [B, 1, T, T]: 0 where a token may attend, -inf elsewhere


def right_padded(mask_BT: torch.Tensor) -> bool:
    """Every row's tokens first, then its padding (a row of a 0/1 mask never rises)."""
    return bool((mask_BT[:, 1:] <= mask_BT[:, :-1]).all())


def first_response_column(mask_BT: torch.Tensor) -> int:
    """The first column any row scores (a batch without response tokens keeps its last column, so the head still
    runs once: ZeRO-3 ranks must call it alike)."""
    columns = mask_BT.any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else mask_BT.shape[1] - 1
