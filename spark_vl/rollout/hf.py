"""The transformers rollout backend (reference implementation, CPU and single-GPU path).

Each prompt is encoded once (`spark_vl.models.encode`) and prefilled once: its n rows share the prefill's KV cache,
copied to every row (`reorder_cache`), so the vision tower and the prompt run once per prompt, not n times. Then
one forward pass per new token on the whole chunk (`generation_batch_size` rows), sampled exactly as
`transformers.generate` samples (the same logits processors in the same order, then `draw`: `torch.multinomial`'s
own draw on the softmax, without its per-step checks; the same tokens for the same seed, tests check both), without
its per-step bookkeeping; the KV cache has
room for every new token from the start (`RoomyLayer`: written in place, not concatenated each step). The log-prob of
every sampled token is read from the final (warped) scores, so the recorded behaviour log-probs are the
distribution each token was drawn from. M-RoPE positions are computed once per prompt (`attach_positions`, the
model's own `get_rope_index`) and passed to the prefill; a new token continues at the prompt's largest position + 1.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from spark_vl.config import RolloutConfig
from spark_vl.models import accepts, cache_arg, image_features, model_cache, no_autograd
from spark_vl.models.encode import EncodedPrompt, PromptEncoder, attach_positions, pad_prompts, vision_filler
from spark_vl.rollout.decode import LeanDecoder
from spark_vl.types import Prompt, Rollout, RolloutGroup, SamplingParams

VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholder tokens the tokenizer knows."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})


class HFEngine:
    def __init__(self, model, processor, cfg: RolloutConfig | None = None, synced_gpus: bool = False):
        self.model = model
        self.processor = processor
        self.generation_batch_size = (cfg or RolloutConfig()).generation_batch_size
        self.synced_gpus = synced_gpus
        tok = processor.tokenizer
        self.stop_ids = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")} - {None})
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]
        # A response must never contain vision placeholders: the processor would count them as image slots
        # and the update would fail with "image features and image tokens do not match".
        self.suppress_ids = vision_token_ids(tok)
        self._suppress_index: torch.Tensor | None = None  # suppress_ids on the model's device, made once
        self._lean: LeanDecoder | None = None  # the decode step of the current model's text decoder

    # Weight sync and sleep/wake only matter for an engine that holds its own copy of the weights.
    def sync_weights(self, model) -> None:
        self.model = model

    def sleep(self) -> None:
        pass

    def wake(self) -> None:
        pass

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]:
        with no_autograd(self.model):
            return self._generate(prompts, n, sampling)

    def _generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]:
        encode = PromptEncoder(self.processor)  # each prompt is processed once, not n times
        encode.many(prompts)  # those not encoded yet (held out, recycled, several ranks' draws): one processor call
        jobs = [p for p in prompts for _ in range(n)]
        rollouts: dict[int, list[Rollout]] = {id(p): [] for p in prompts}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        size = max(1, self.generation_batch_size)
        chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
        # ZeRO-3: every forward pass is a collective (parameters are gathered per layer), so the ranks first agree on
        # the number of calls, and a rank with fewer chunks (or none) joins the others' remaining calls with a
        # one-token filler whose output is discarded.
        calls = max_over_ranks(len(chunks), next(self.model.parameters()).device) if self.synced_gpus else len(chunks)
        for i in range(calls):
            if i >= len(chunks):
                self._sample([EncodedPrompt([self.pad_id], [0], None, None)], replace(sampling, max_new_tokens=1))
                continue
            chunk = chunks[i]
            for prompt, rollout in zip(chunk, self._generate_chunk(chunk, [encode(p) for p in chunk], sampling)):
                rollouts[id(prompt)].append(rollout)
        return [RolloutGroup(prompt=p, rollouts=rollouts[id(p)]) for p in prompts]

    def _generate_chunk(self, prompts: list[Prompt], encoded: list[EncodedPrompt],
                        sampling: SamplingParams) -> list[Rollout]:
        tok = self.processor.tokenizer
        tokens, logprobs, stopped = self._sample(encoded, sampling)
        results = []
        for i, prompt in enumerate(prompts):
            ids = tokens[i]
            text = tok.decode(ids, skip_special_tokens=True)
            results.append(Rollout(prompt=prompt, token_ids=ids, text=text, logprobs=logprobs[i],
                                   finish_reason="stop" if stopped[i] else "length"))
        return results

    def _scores(self, history: torch.Tensor | None, logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
        """The final scores a token is drawn from, processed as transformers.generate does, in its order:
        repetition penalty (over `history`, prompt + sampled ids), suppressed tokens, then temperature, top-k and
        top-p (not for greedy)."""
        scores = logits.float()
        if sampling.repetition_penalty != 1.0:
            scores = RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty)(history, scores)
        if self.suppress_ids:
            if self._suppress_index is None or self._suppress_index.device != scores.device:
                self._suppress_index = torch.tensor(self.suppress_ids, device=scores.device)
            scores = scores.index_fill_(1, self._suppress_index, -float("inf"))
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                scores = TemperatureLogitsWarper(sampling.temperature)(history, scores)
            if sampling.top_k > 0:
                scores = TopKLogitsWarper(sampling.top_k)(history, scores)
            if sampling.top_p < 1.0:
                scores = TopPLogitsWarper(sampling.top_p)(history, scores)
        return scores

    def _sample(self, encoded: list[EncodedPrompt],
                sampling: SamplingParams) -> tuple[list[list[int]], list[list[float]], list[bool]]:
        """Token ids, their sampled log-probs and whether each row stopped (a stop token, kept, or a stop string)
        for a chunk of encoded prompts; rows that repeat an encoded prompt object share its prefill."""
        device = next(self.model.parameters()).device
        first: dict[int, int] = {}
        for e in encoded:
            first.setdefault(id(e), len(first))
        unique = list({id(e): e for e in encoded}.values())
        rows = torch.tensor([first[id(e)] for e in encoded], device=device)
        if self.synced_gpus and all(e.pixel_values is None for e in unique):
            unique.append(vision_filler(self.processor))  # prefilled, never decoded: see `vision_filler`
        enc = {k: v.to(device) for k, v in pad_prompts(unique, self.pad_id, side="left").items()}
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(next(self.model.parameters()).dtype)
            if accepts(type(self.model.model), "forward", "mm_encoder_outputs"):  # the tower's grid tensors, kept
                enc["mm_encoder_outputs"] = {"image": image_features(self.model.model, enc.pop("pixel_values"),
                                                                     enc["image_grid_thw"])}
        B, prompt_cols = len(encoded), enc["input_ids"].shape[1]
        # M-RoPE positions once per prompt (`attach_positions`, kept on the encoded prompt for the update), left-
        # padded (the padding's are never seen: masked); a new token continues at its prompt's largest + 1.
        with torch.inference_mode(False):  # normal tensors: the update reads them with autograd on
            for e in unique:
                attach_positions(self.model, e)
        position_ids = torch.ones(3, len(unique), prompt_cols, dtype=torch.long)
        for u, e in enumerate(unique):
            position_ids[:, u, prompt_cols - len(e.input_ids) :] = e.positions
        enc["position_ids"] = position_ids.to(device)
        position = torch.tensor([int(e.positions.max()) + 1 for e in unique], device=device).index_select(0, rows)
        # prompt + sampled ids, kept only for the repetition penalty
        history = enc["input_ids"].index_select(0, rows) if sampling.repetition_penalty != 1.0 else None
        # the rows' attention masks [B, 1, 1, L] with room for every new token (a step reads the first
        # prompt_cols + fed + 1 columns)
        mask = torch.cat([enc["attention_mask"].index_select(0, rows).bool(),
                          torch.ones(B, sampling.max_new_tokens, dtype=torch.bool, device=device)], dim=1)
        mask = mask[:, None, None]
        # each row's position for each new token [3, B, max_new_tokens] (a step reads column `fed`)
        positions = steps_ahead(position, sampling.max_new_tokens)
        last = enc["input_ids"][:, -1:].index_select(0, rows)  # the newest token of each row (prompts: left-padded)
        stop_ids = torch.tensor(self.stop_ids, device=device)
        done, all_done = torch.zeros(B, dtype=torch.bool, device=device), False
        lengths = torch.full((B,), -1, dtype=torch.long, device=device)  # set when a row stops
        longest_stop = max((len(s) for s in sampling.stop), default=0)
        sampled: list[torch.Tensor] = []
        logprobs: list[torch.Tensor] = []
        # Decode steps carry no image: they call the text decoder and the LM head directly (the multimodal wrappers
        # cost ~0.4 ms per step on a small model), through `LeanDecoder` (transformers' forward without its per-call
        # machinery, checked bitwise against it); a model without `model.language_model` gets the full forward.
        decoder = getattr(self.model.model, "language_model", None)
        if decoder is not None and (self._lean is None or self._lean.decoder is not decoder):
            self._lean = LeanDecoder(decoder)
        kv = cache_arg(decoder if decoder is not None else self.model)
        fed = 0  # new tokens in the cache (a rank that finished early under ZeRO-3 feeds on with the others)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(**enc, use_cache=True, logits_to_keep=1)
            cache = model_cache(out)
            cache.reorder_cache(rows)  # every row gets its prompt's keys and values
            make_room(cache, sampling.max_new_tokens)
            logits = out.logits[:, -1].index_select(0, rows)
            while True:
                if len(sampled) < sampling.max_new_tokens and not all_done:
                    scores = self._scores(history, logits, sampling)
                    if sampling.greedy:
                        token = scores.argmax(dim=-1)
                    else:
                        token = draw(torch.softmax(scores, dim=-1))
                    token = torch.where(done, self.pad_id, token)
                    sampled.append(token)
                    last = token.unsqueeze(1)
                    logprobs.append(torch.log_softmax(scores, dim=-1).gather(1, last))  # [B, 1]
                    if history is not None:
                        history = torch.cat([history, last], dim=1)
                    hit = ~done & torch.isin(token, stop_ids)
                    if longest_stop:
                        hit |= self._stop_string(sampled, ~done & ~hit, sampling.stop, longest_stop)
                    lengths = torch.where(hit, len(sampled), lengths)
                    done |= hit
                    all_done = bool(done.all())
                finished = len(sampled) >= sampling.max_new_tokens or all_done
                if self.synced_gpus:  # ZeRO-3: forwards are collective; a finished rank runs on with the others
                    finished = max_over_ranks(int(not finished), device) == 0
                if finished:
                    break
                if fed == positions.shape[-1]:  # a finished rank feeding on with the others (ZeRO-3)
                    mask = torch.cat([mask, mask.new_ones(mask.shape)], dim=-1)
                    positions = steps_ahead(position, 2 * positions.shape[-1])
                # A [B, 1, 1, L] boolean mask (the one query sees every real key) skips transformers' per-step mask
                # construction.
                step = {"input_ids": last, "attention_mask": mask[..., : prompt_cols + fed + 1],
                        "position_ids": positions[..., fed : fed + 1], kv: cache, "use_cache": True}
                if decoder is not None:
                    logits = self.model.lm_head(self._lean(step, fed)[:, -1])
                else:
                    logits = self.model(**step, logits_to_keep=1).logits[:, -1]
                fed += 1
        finally:
            self.model.train(was_training)
        stopped = lengths >= 0
        lengths = torch.where(stopped, lengths, len(sampled)).tolist()
        if not sampled:
            return [[] for _ in range(B)], [[] for _ in range(B)], [False] * B
        tokens_BT, logp_BT = torch.stack(sampled, dim=1).cpu(), torch.cat(logprobs, dim=1).float().cpu()
        if bool(logp_BT.isnan().any()):  # `draw`'s check, once: a NaN or inf score makes its row's log-probs NaN
            raise RuntimeError(f"{NOT_FINITE}: the policy's scores were not finite while sampling")
        return ([tokens_BT[b, :n].tolist() for b, n in enumerate(lengths)],
                [logp_BT[b, :n].tolist() for b, n in enumerate(lengths)], stopped.tolist())

    def _stop_string(self, sampled: list[torch.Tensor], live: torch.Tensor, stops: list[str],
                     longest: int) -> torch.Tensor:
        """Rows (among `live`) whose newest tokens complete a stop string; every token adds at least one
        character, so the last `longest` tokens hold any stop string that ends now."""
        tok = self.processor.tokenizer
        hit = torch.zeros_like(live)
        tail = torch.stack(sampled[-longest:], dim=1).tolist()
        for b in live.nonzero().flatten().tolist():
            text = tok.decode(tail[b])
            hit[b] = any(s in text for s in stops)
        return hit


NOT_FINITE = "probability tensor contains either `inf`, `nan` or element < 0"  # torch.multinomial's words


def draw(probs_BV: torch.Tensor) -> torch.Tensor:
    """One token per row of `probs_BV`, exactly as `torch.multinomial(probs_BV, 1)` draws it from the same random
    stream: its one-sample path is the Gumbel-max trick, argmax(p / q) with q ~ Exp(1) (a test compares tokens and
    the generator's state after). Without multinomial's validity checks (max, min and row sums, each read back to
    the host, every decode step): `_sample` checks its log-probs once at the end instead, where any NaN or inf
    score shows as a NaN log-prob of its row."""
    return (probs_BV / exponential_like(probs_BV)).argmax(dim=-1)


# A double rounds to float32 by its 29 low mantissa bits: it sits next to a rounding boundary (a tie) when they are
# within LOG1P_MARGIN units of 2^28. Two log1p implementations that differ by less than that many units in the last
# place (torch's vectorised one and the C library's differ by at most 1 over 2 million draws) round alike elsewhere.
LOG1P_MARGIN = 2**8
_LOW_BITS, _TIE = 2**29 - 1, 2**28


def near_float32_tie(d: torch.Tensor, margin: int) -> torch.Tensor:
    """Which non-negative doubles lie within `margin` units in the last place of a float32 tie (the midpoint of two
    neighbouring float32 values): the 29 low mantissa bits, which rounding to float32 drops, are 2^28 +- margin."""
    return ((d.view(torch.int64) - (_TIE - margin)) & _LOW_BITS) < 2 * margin


def exponential_like(x: torch.Tensor) -> torch.Tensor:
    """`torch.empty_like(x).exponential_()`: the same values and the same generator state after, drawn faster.

    On CPU, `exponential_` takes one double u per value from the default generator, serially, and returns
    float(-log1p(-u)) with the C library's log1p: 220-300 us for 16 x 512 values, 12 % of a decode step of the tiny
    model (124 us here; on a 152k vocabulary 82-89 vs 97 ms, the serial generator being most of it). Here the same
    doubles come from `torch.rand` (the same stream) and log1p is torch's vectorised one, which differs from the C
    library's in the last bit of ~8 % of the doubles; the float32 they round to can differ only next to a float32
    tie, and the values within `LOG1P_MARGIN` units of one (~1 in a million) are computed again with the C
    library's log1p (Python's `math.log1p`). Other devices and dtypes (another random stream; rounding twice
    through float32) keep `exponential_`."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return torch.empty_like(x).exponential_()
    u = torch.rand(x.shape, dtype=torch.float64)
    d = torch.neg(u).log1p_().neg_()
    near = near_float32_tie(d, LOG1P_MARGIN)
    q = d.float()
    if near.any():
        index = near.nonzero(as_tuple=True)
        q[index] = torch.tensor([-math.log1p(-v) for v in u[index].tolist()], dtype=torch.float64).float()
    return q


class RoomyLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of buffers with room for more tokens: `update` writes the
    new ones in place where `DynamicLayer` concatenates (a new, longer tensor per layer and step). The views hold the
    same values with the same shapes, so attention computes the same numbers (the sampler tests compare with
    `generate`, which concatenates). Full buffers double (a rank that finished early feeds on with the others
    under ZeRO-3, past its own token budget)."""

    def __init__(self, layer: DynamicLayer, room: int):
        super().__init__()
        self.device, self.is_initialized = layer.device, True
        self.buffers: list[torch.Tensor] = []
        self._reserve(layer.keys, layer.values, layer.keys.shape[-2] + room)

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Buffers of `capacity` positions holding `keys` and `values` first; the views show what they hold."""
        B, H, length, _ = keys.shape
        self.buffers = []
        for t in (keys, values):
            buf = t.new_empty(B, H, capacity, t.shape[-1])
            buf[:, :, :length] = t
            self.buffers.append(buf)
        self._view(length)

    def _view(self, length: int) -> None:
        self.keys, self.values = self.buffers[0][:, :, :length], self.buffers[1][:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        keys, values = self.buffers
        if end > keys.shape[-2]:
            self._reserve(self.keys, self.values, max(end, 2 * keys.shape[-2]))
            keys, values = self.buffers
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        self._view(end)
        return self.keys, self.values


def make_room(cache, room: int) -> None:
    """Give every plain dynamic layer of a prefilled `cache` room for `room` more tokens (`RoomyLayer`); other
    layer kinds (sliding windows, caches without layers) keep growing their own way."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4:
            layers[i] = RoomyLayer(layer, room)


def steps_ahead(position_B: torch.Tensor, steps: int) -> torch.Tensor:
    """M-RoPE position ids [3, B, steps] of the next `steps` new tokens of each row, the first at `position_B`."""
    B = position_B.shape[0]
    return (position_B.view(B, 1) + torch.arange(steps, device=position_B.device)).expand(3, B, steps)


def max_over_ranks(value: int, device: torch.device) -> int:
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())
