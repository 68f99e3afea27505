"""Rollouts -> padded TrainBatch micro-batches.

Each prompt is encoded once (`spark_vl.models.encode`); its rollouts append their response ids.
Sequences are right-padded; pixel values and grids are concatenated in sequence order, which is the
order the model scatters image features into image-token positions. Response-aligned tensors use the
*predicting* position (column t scores token t + 1), see `TrainBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spark_vl.models.encode import EncodedPrompt


@dataclass
class TrainBatch:
    """Padded tensors for one micro-batch of the update. B = sequences, T = padded length (prompt + response).

    Response-aligned tensors (`*_logprobs`, `advantages`, `response_mask`, `loss_weights`) are indexed by
    the *predicting* position: entry [b, t] belongs to token input_ids[b, t + 1], so they have T - 1 columns.
    """

    input_ids: torch.Tensor  # [B, T] long, right-padded
    attention_mask: torch.Tensor  # [B, T] long
    mm_token_type_ids: torch.Tensor  # [B, T] int, 1 on image tokens, 0 elsewhere (zero over responses)
    pixel_values: torch.Tensor | None  # [num_patches, patch_dim], the batch's images concatenated (see image_index)
    image_grid_thw: torch.Tensor | None  # [num_images, 3], every image slot in row order (M-RoPE positions)
    response_mask: torch.Tensor  # [B, T-1] float, 1 where the predicted token is a response token
    advantages: torch.Tensor  # [B, T-1] float (sequence advantage broadcast over response tokens)
    old_logprobs: torch.Tensor | None = None  # [B, T-1] old policy log-probs (the trainer, before the update)
    ref_logprobs: torch.Tensor | None = None  # [B, T-1] frozen reference log-probs
    loss_weights: torch.Tensor | None = None  # [B] per-sequence weight (e.g. auxiliary share), default 1
    is_expert: torch.Tensor | None = None  # [B] bool, sequences trained with the supervised term
    # [B, T-1] the sampler's log-probs (importance-sampling correction), on the rows where `has_behaviour` [B]
    # is true; the other rows (expert, filler) take the old log-probs, ratio 1
    behaviour_logprobs: torch.Tensor | None = None
    has_behaviour: torch.Tensor | None = None
    # Rows that share a prompt share its images: `pixel_values` then holds each distinct prompt's images once, with
    # their grids in `vision_grid_thw` [distinct, 3], and `image_index` [num_images] names the distinct image of
    # every slot of `image_grid_thw` (None = no sharing: pixel_values follow image_grid_thw)
    vision_grid_thw: torch.Tensor | None = None
    image_index: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None  # [3, B, T] M-RoPE positions when every prompt carries its own
    shared: SharedPrompts | None = None  # each distinct prompt once (`collate(share_prompts=True)`), else None

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> TrainBatch:
        return _moved(self, device)


@dataclass
class SharedPrompts:
    """A micro-batch's prompts computed once each (`spark_vl.algorithms.logprobs.shared_prompt_logprobs`): the G
    distinct prompts, left-padded, in order of first appearance, and the rows' responses, right-padded to R columns.
    Each row's response attends to its prompt's keys and values: the prompt's tokens (and images) run once, not
    once per row."""

    input_ids: torch.Tensor  # [G, P] the distinct prompts, left-padded
    attention_mask: torch.Tensor  # [G, P] long
    mm_token_type_ids: torch.Tensor  # [G, P]
    position_ids: torch.Tensor  # [3, G, P] M-RoPE positions (1 on the padding, which is never attended)
    image_grid_thw: torch.Tensor | None  # [distinct images, 3]: the distinct prompts' images in order (= pixel_values)
    rows: torch.Tensor  # [B] long: the distinct prompt of every row
    response_ids: torch.Tensor  # [B, R] every row's response, right-padded
    response_positions: torch.Tensor  # [3, B, R] their M-RoPE positions (the prompt's largest + 1 on)
    response_index: torch.Tensor  # [B, T-1] long: column t of the batch's response-aligned layout is response token
    #                                response_index[b, t] (0 where the row has no response token)

    def to(self, device: torch.device | str) -> SharedPrompts:
        return _moved(self, device)


def _moved(obj, device: torch.device | str):
    """A copy of a dataclass of tensors with every tensor (and nested such dataclass) on `device`."""
    moved = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        moved[name] = value.to(device) if isinstance(value, torch.Tensor | SharedPrompts) else value
    return type(obj)(**moved)




@dataclass
class Sequence:
    """One training sequence: an encoded prompt and a response (a rollout or an expert solution)."""

    prompt: EncodedPrompt
    response_ids: list[int]
    advantage: float = 0.0
    weight: float = 1.0
    is_expert: bool = False
    old_logprobs: list[float] | None = None  # filled by the trainer before the update
    ref_logprobs: list[float] | None = None
    behaviour_logprobs: list[float] | None = None  # the sampler's own: the gap metrics and the IS correction
    key: str = ""  # the prompt's stable key (data.prompts.prompt_key); empty for expert sequences


def collate(seqs: list[Sequence], pad_id: int, share_prompts: bool = False, uniform: bool = False) -> TrainBatch:
    """Right-pad `seqs` into one TrainBatch (numpy arrays filled at once: each distinct prompt's tokens into its
    rows, every response value at its row and column).
    `share_prompts`: also `TrainBatch.shared` (each prompt once) when every prompt carries its M-RoPE positions and
    some row repeats a prompt; with `uniform` whether or not one does (several ranks must run the same modules in
    the same order: ZeRO-3 gathers per module call, ZeRO-1/2 reduce gradients in the backward's order)."""
    B = len(seqs)
    P = np.array([len(s.prompt.input_ids) for s in seqs], dtype=np.int64)
    R = np.array([len(s.response_ids) for s in seqs], dtype=np.int64)
    T = int((P + R).max())
    has_old = all(s.old_logprobs is not None for s in seqs)
    has_ref = all(s.ref_logprobs is not None for s in seqs)
    has_behaviour = any(s.behaviour_logprobs is not None for s in seqs)
    # Every response token's row and column, all rows end to end: its token sits at column p + i, the response-
    # aligned values of the column predicting it at p - 1 + i.
    rows = np.repeat(np.arange(B), R)
    cols = np.arange(int(R.sum())) - np.repeat(np.cumsum(R) - R, R) + np.repeat(P, R)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    types = np.zeros((B, T), dtype=np.int64)
    prompts = rows_by_prompt(seqs)
    for prompt, at in prompts:  # each distinct prompt's tokens once, into all its rows
        n = len(prompt.input_ids)
        ids[at, :n] = prompt.input_ids
        types[at, :n] = prompt.mm_token_type_ids
    ids[rows, cols] = [t for s in seqs for t in s.response_ids]

    def aligned(values) -> torch.Tensor:  # [B, T - 1] float32: `values` at each response token's predicting column
        out = np.zeros((B, T - 1), dtype=np.float32)
        out[rows, cols - 1] = values
        return torch.from_numpy(out)

    def logprobs(field: str, name: str) -> torch.Tensor:  # every row's list (float32 from the same doubles)
        flat = []
        for b, s in enumerate(seqs):
            row = getattr(s, field)
            row = [0.0] * int(R[b]) if row is None else row  # (a row without the sampler's: has_behaviour)
            if len(row) != R[b]:
                raise ValueError(f"sequence {b} has {R[b]} response tokens but {len(row)} {name}")
            flat += row
        return aligned(np.array(flat, dtype=np.float32))

    pixels, grids, vision_grids, image_index = [], [], [], []
    first_image: dict[int, int] = {}  # id(encoded prompt) -> its first image's index among the distinct ones
    for s in seqs:
        if s.prompt.pixel_values is not None:
            grids.append(s.prompt.image_grid_thw)
            if id(s.prompt) not in first_image:
                first_image[id(s.prompt)] = sum(len(g) for g in vision_grids)
                pixels.append(s.prompt.pixel_values)
                vision_grids.append(s.prompt.image_grid_thw)
            start = first_image[id(s.prompt)]
            image_index.extend(range(start, start + len(s.prompt.image_grid_thw)))
    shared = len(vision_grids) < len(grids)
    positions = None
    if all(s.prompt.positions is not None for s in seqs):
        by_prompt: dict[int, torch.Tensor] = {}  # per distinct prompt: its positions, then its response's
        for prompt, _ in prompts:
            own = prompt.positions.long()
            text = own.max() + 1 + torch.arange(T - own.shape[1])
            by_prompt[id(prompt)] = torch.cat([own, text.expand(3, -1)], dim=1)
        positions = torch.stack([by_prompt[id(s.prompt)] for s in seqs], dim=1)
    once = None
    if share_prompts and positions is not None and (uniform or len(prompts) < len(seqs)):
        once = shared_prompts(seqs, pad_id, T)
    return TrainBatch(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy((np.arange(T) < (P + R)[:, None]).astype(np.int64)),
        mm_token_type_ids=torch.from_numpy(types),
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.cat(grids) if grids else None,
        response_mask=aligned(1.0),
        advantages=aligned(np.repeat(np.array([s.advantage for s in seqs], dtype=np.float32), R)),
        old_logprobs=logprobs("old_logprobs", "old log-probs") if has_old else None,
        ref_logprobs=logprobs("ref_logprobs", "reference log-probs") if has_ref else None,
        loss_weights=torch.tensor([s.weight for s in seqs], dtype=torch.float32),
        is_expert=torch.tensor([s.is_expert for s in seqs], dtype=torch.bool),
        behaviour_logprobs=logprobs("behaviour_logprobs", "sampler log-probs") if has_behaviour else None,
        has_behaviour=torch.tensor([s.behaviour_logprobs is not None for s in seqs]) if has_behaviour else None,
        vision_grid_thw=torch.cat(vision_grids) if shared else None,
        image_index=torch.tensor(image_index, dtype=torch.long) if shared else None,
        position_ids=positions,
        shared=once,
    )


def shared_prompts(seqs: list[Sequence], pad_id: int, T: int) -> SharedPrompts:
    """`SharedPrompts` of `seqs` (collated to T columns); every prompt carries its positions."""
    by_id = distinct_prompts(seqs)
    index = {key: g for g, key in enumerate(by_id)}
    distinct = list(by_id.values())
    P = max(len(e.input_ids) for e in distinct)
    R = max(1, max(len(s.response_ids) for s in seqs))
    positions = torch.ones(3, len(distinct), P, dtype=torch.long)
    for g, e in enumerate(distinct):
        positions[:, g, P - len(e.input_ids) :] = e.positions
    response_positions = torch.stack([s.prompt.positions.max() + 1 + torch.arange(R) for s in seqs]).expand(3, -1, -1)
    grids = [e.image_grid_thw for e in distinct if e.pixel_values is not None]
    return SharedPrompts(
        input_ids=_tensor([[pad_id] * (P - len(e.input_ids)) + e.input_ids for e in distinct], np.int64),
        attention_mask=_tensor([[0] * (P - len(e.input_ids)) + [1] * len(e.input_ids) for e in distinct], np.int64),
        mm_token_type_ids=_tensor([[0] * (P - len(e.input_ids)) + e.mm_token_type_ids for e in distinct], np.int64),
        position_ids=positions,
        image_grid_thw=torch.cat(grids) if grids else None,
        rows=torch.tensor([index[id(s.prompt)] for s in seqs], dtype=torch.long),
        response_ids=_tensor([s.response_ids + [pad_id] * (R - len(s.response_ids)) for s in seqs], np.int64),
        response_positions=response_positions.long(),
        response_index=_tensor([_aligned(list(range(len(s.response_ids))), len(s.prompt.input_ids),
                                         T - len(s.prompt.input_ids) - len(s.response_ids)) for s in seqs], np.int64),
    )


def _tensor(rows: list[list], dtype) -> torch.Tensor:
    """A [B, T] tensor from equal-length Python rows (through numpy: a third of torch.tensor's time on nested lists;
    the same values, float32 rounded from the same doubles)."""
    return torch.from_numpy(np.array(rows, dtype=dtype))


def _aligned(values: list[float], p: int, pad: int) -> list[float]:
    """A response-aligned row of T - 1 columns for a prompt of p tokens: column p - 1 predicts the first response
    token; `pad` columns follow the response."""
    return [0.0] * (p - 1) + list(values) + [0.0] * pad


def response_values(values_BT: torch.Tensor, seqs: list[Sequence]) -> list[list[float]]:
    """Cut per-sequence response slices out of a [B, T-1] tensor (inverse of collate's placement)."""
    out = []
    for b, s in enumerate(seqs):
        p, r = len(s.prompt.input_ids), len(s.response_ids)
        out.append(values_BT[b, p - 1 : p - 1 + r].tolist())
    return out


def rows_by_prompt(seqs: list[Sequence]) -> list[tuple[EncodedPrompt, list[int]]]:
    """Each distinct encoded prompt (by identity) with its rows, in order of first appearance."""
    rows: dict[int, tuple[EncodedPrompt, list[int]]] = {}
    for b, s in enumerate(seqs):
        rows.setdefault(id(s.prompt), (s.prompt, []))[1].append(b)
    return list(rows.values())


def distinct_prompts(seqs: list[Sequence]) -> dict[int, EncodedPrompt]:
    """The encoded prompts of `seqs` by identity (rows of a group share one object), in order of first appearance."""
    return {id(prompt): prompt for prompt, _ in rows_by_prompt(seqs)}


def by_prompt(seqs: list[Sequence]) -> list[Sequence]:
    """`seqs` with the rows of each prompt side by side (prompts in order of first appearance, rows in their order):
    micro-batches cut from it hold several rows of a prompt, which `SharedPrompts` computes once."""
    order = {key: g for g, key in enumerate(distinct_prompts(seqs))}
    return sorted(seqs, key=lambda s: order[id(s.prompt)])


def mini_batches(seqs: list[Sequence], num_minis: int) -> list[list[Sequence]]:
    """Shuffle policy sequences into `num_minis` optimizer-step mini-batches; expert sequences are dealt
    round-robin over them, so the supervised term is spread over every update."""
    policy = [s for s in seqs if not s.is_expert]
    experts = [s for s in seqs if s.is_expert]
    order = torch.randperm(len(policy)).tolist()
    minis = split_even([policy[i] for i in order], num_minis)
    for i, s in enumerate(experts):
        minis[i % num_minis].append(s)
    return minis


def split_even(items: list, parts: int) -> list[list]:
    """`parts` consecutive chunks whose sizes differ by at most one (some empty if items are few)."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out
