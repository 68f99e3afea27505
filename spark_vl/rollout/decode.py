"""The rollout's decode step for Qwen text decoders, without transformers' per-call machinery.

A rollout runs the text decoder once per new token on [B, 1] ids. On a small model most of that call is not
arithmetic but transformers' own machinery: ~30 nested module calls with their hook checks, four decorators on the
decoder's forward and one on every attention, config lookups, mask preparation and output containers. `LeanDecoder`
issues the same tensor operations on the same weights, and calls the model's own embedding, rotary embedding and
activation modules; the M-RoPE positions and the [B, 1, 1, L] boolean mask are the caller's, as for the stock
forward. Where the per-operation cost dominates it also issues fewer of them, each computing the same numbers:
- the query, key and value projections as one matrix product (and the MLP's gate and up projections as another) on
  the weights stacked once per weight update, for decoders whose stacked copies are small (`FUSE_MAX_BYTES`): each
  output column is the same dot product over the same inputs;
- the rotary embedding of the query and key heads together (multiplications and additions: exactly rounded, the
  same per element whatever the tensor's shape); the activation still runs on a contiguous gate, as the stock one
  does (an elementwise kernel's scalar tail can round a transcendental like silu differently from its vector body);
- the rotary cos/sin of the coming positions at once, when the caller says how many tokens it fed since the first
  step (`fed`): the table is an outer product with one factor per element, then cos and sin (whose scalar and
  vector paths agree: 0 differences in 200,000 arguments on the development machine, where silu's differ in 4 %).

It does not assume it computes the same numbers. Its first step is computed both ways, on two copies of one row's
KV cache, and compared bitwise (the new hidden state and every layer's new keys and values): any difference (another
transformers version, a decoder laid out otherwise) makes it use the stock forward from then on, with a warning. The
stacked projections are also compared with the separate ones on the first step of every batch size (the rows are
the matrix products' M dimension, which can select another kernel), and are not used where they differ. It steps
aside, before trying, wherever it cannot see the computation: another attention than `sdpa`, a forward hook on any
module (ZeRO-3's parameter gathering, PEFT), a Linear subclass (LoRA, quantized layers), sliding-window layers, a
decoder without the Qwen layout; and in training mode (dropout).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.modules import module as torch_module
from transformers.cache_utils import DynamicCache

from spark_vl.models import not_plain_sdpa

logger = logging.getLogger(__name__)

PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
FUSE_MAX_BYTES = 64 * 2**20  # stacked copies of the q/k/v and gate/up weights up to this size (small decoders)
ROPE_STEPS = (32, 256)  # rotary tables: the first covers 32 positions, each next one twice as many, at most 256


@dataclass
class Stacked:
    """One layer's stacked projections: [q; k; v] (weight and bias) and [gate; up]."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    gate_up_weight: torch.Tensor


class LayerRefs(NamedTuple):
    """What one layer's decode step reads, taken from its modules once a rollout (`LeanDecoder.layer_refs`): each
    norm as (weight, epsilon), each projection as (weight, bias)."""

    input_norm: tuple[torch.Tensor, float]
    post_norm: tuple[torch.Tensor, float]
    qkv: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]
    head_dim: int
    q_heads: int
    qk_heads: int  # query + key heads
    qk_norms: tuple[tuple[torch.Tensor, float], tuple[torch.Tensor, float]] | None  # Qwen3's per-head norms
    groups: int
    scaling: float
    o: tuple[torch.Tensor, torch.Tensor | None]
    gate_up: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]
    gate_features: int
    act: Callable[[torch.Tensor], torch.Tensor]
    down: tuple[torch.Tensor, torch.Tensor | None]
    stack: Stacked | None


class LeanDecoder:
    """`lean(step)`: the last hidden state [B, 1, H] of `decoder(**step)` for one new token per row, where `step`
    holds input_ids [B, 1], attention_mask [B, 1, 1, L] (bool), position_ids [3, B, 1], the cache (under
    `cache` or `past_key_values`) and use_cache. `stock` counts the steps run through the stock forward."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.unsupported = unsupported(decoder)
        self.verified: bool | None = None  # None: not compared with the stock forward yet
        self.stock = 0
        self.fuse = not self.unsupported and stacked_bytes(decoder) <= FUSE_MAX_BYTES
        self.stacked_ok: dict[int, bool] = {}  # batch size -> stacked projections equal the separate ones bitwise
        self._stacked: tuple[tuple, list[Stacked]] | None = None  # (the weights' identity and versions, stacks)
        self._layers: tuple[list[LayerRefs], tuple, bool] | None = None  # `layer_refs` of this rollout
        self._rope: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (first `fed` it covers, cos, signed sin)
        if self.unsupported:
            logger.info("rollout decode step: transformers' forward (%s)", self.unsupported)

    def __call__(self, step: dict, fed: int | None = None) -> torch.Tensor:
        """`fed`: new tokens fed since the first decode step, whose position_ids this step's are plus `fed` (the
        rotary table is then reused); None computes the rotary embedding of this step alone."""
        cache_key = "cache" if "cache" in step else "past_key_values"
        lean = (not self.unsupported and self.verified is not False and not self.decoder.training
                and step["input_ids"].shape[1] == 1
                and getattr(step[cache_key], "layers", None) is not None)  # per-layer keys and values to copy
        if lean and self.verified is None:
            self.verified = lean = self.matches_stock(step, cache_key, fed)
        if not lean:
            self.stock += 1
            return self.decoder(**step).last_hidden_state
        return self.forward(step["input_ids"], step["attention_mask"], step["position_ids"], step[cache_key], fed)

    def matches_stock(self, step: dict, cache_key: str, fed: int | None = None) -> bool:
        """One step of the first row both ways, each on its own copy of that row's cache: equal bit for bit?"""
        self.stock += 1
        row = {k: v for k, v in step.items() if k != cache_key}
        row.update(input_ids=step["input_ids"][:1], attention_mask=step["attention_mask"][:1],
                   position_ids=step["position_ids"][:, :1])
        stock_cache, lean_cache = one_row(step[cache_key]), one_row(step[cache_key])
        want = self.decoder(**row, **{cache_key: stock_cache}).last_hidden_state
        got = self.forward(row["input_ids"], row["attention_mask"], row["position_ids"], lean_cache, fed)
        same = torch.equal(want, got) and all(
            torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
            for a, b in zip(stock_cache.layers, lean_cache.layers, strict=True))
        if not same:
            logger.warning("rollout decode step: the lean step differs from transformers' forward (hidden states off "
                           "by up to %.3g); using transformers' forward", float((want - got).abs().max()))
        return same

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache,
                fed: int | None = None) -> torch.Tensor:
        """transformers' decoder forward for one new token per row (Qwen2.5-VL / Qwen3-VL text models)."""
        B = input_ids.shape[0]
        hidden = self.decoder.embed_tokens.forward(input_ids)  # `forward`, not the module call: no hooks anywhere
        cos, sin = self.rope(hidden, position_ids, fed)
        # The weights cannot change within a rollout: they are read (and their identity checked for the stacks) on
        # its first step, or on every step when called without `fed`.
        if not fed or self._layers is None:
            self._layers = self.layer_refs()
        layers, final_norm, fused = self._layers
        check = fused and B not in self.stacked_ok  # this batch size's first step: compare both ways
        stacked = fused and self.stacked_ok.get(B) is True
        same = True
        for i, r in enumerate(layers):
            x = rms_norm(hidden, *r.input_norm)
            qkv, equal = side_by_side(x, r.qkv, r.stack and r.stack.qkv_weight, r.stack and r.stack.qkv_bias,
                                      stacked, check)
            same = same and equal
            qkv = qkv.view(B, 1, -1, r.head_dim).transpose(1, 2)  # [B, q + k + v heads, 1, head_dim]
            qk, v = qkv[:, : r.qk_heads], qkv[:, r.qk_heads :]
            if r.qk_norms is not None:  # Qwen3: RMSNorm over each head's query and key
                qk = torch.cat([rms_norm(qk[:, : r.q_heads], *r.qk_norms[0]),
                                rms_norm(qk[:, r.q_heads :], *r.qk_norms[1])], dim=1)
            qk = qk * cos + qk.roll(qk.shape[-1] // 2, -1) * sin  # `rotate_half(qk) * sin`: see `signed_sin`
            q, k = qk[:, : r.q_heads], qk[:, r.q_heads :]
            k, v = cache.update(k, v, i)
            if r.groups > 1:  # one query per row: the query heads of each key/value head side by side (`pack_gqa`)
                q = q.reshape(B, q.shape[1] // r.groups, r.groups, q.shape[-1])
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=r.scaling,
                                                 is_causal=False)
            out = out.reshape(B, 1, -1)  # one query: the heads' outputs side by side, as the stock transpose gives
            hidden = hidden + F.linear(out, *r.o)
            x = rms_norm(hidden, *r.post_norm)
            gate_up, equal = side_by_side(x, r.gate_up, r.stack and r.stack.gate_up_weight, None, stacked, check)
            same = same and equal
            gate, up = gate_up[..., : r.gate_features], gate_up[..., r.gate_features :]
            # The activation on a contiguous gate, as the stock forward's: a kernel's scalar tail of a shorter row
            # can round a transcendental differently from its vector body.
            hidden = hidden + F.linear(r.act(gate.contiguous()) * up, *r.down)
        if check:
            self.stacked_ok[B] = same
            if not same:
                logger.info("rollout decode step: stacked projections differ from separate ones for %d rows; "
                            "not stacking them", B)
        return rms_norm(hidden, *final_norm)

    def layer_refs(self) -> tuple[list[LayerRefs], tuple[torch.Tensor, float], bool]:
        """What each layer's step reads (weights, norms, head counts), read from its modules once, with the stacked
        projections (`stacks`); the final norm's weight and epsilon; whether there are stacks."""
        stacks = self.stacks()
        layers = []
        for i, layer in enumerate(self.decoder.layers):
            attn, mlp = layer.self_attn, layer.mlp
            q_heads, k_heads = (p.out_features // attn.head_dim for p in (attn.q_proj, attn.k_proj))
            layers.append(LayerRefs(
                input_norm=norm_refs(layer.input_layernorm), post_norm=norm_refs(layer.post_attention_layernorm),
                qkv=tuple((p.weight, p.bias) for p in (attn.q_proj, attn.k_proj, attn.v_proj)),
                head_dim=attn.head_dim, q_heads=q_heads, qk_heads=q_heads + k_heads,
                qk_norms=(norm_refs(attn.q_norm), norm_refs(attn.k_norm)) if hasattr(attn, "q_norm") else None,
                groups=attn.num_key_value_groups, scaling=attn.scaling, o=(attn.o_proj.weight, attn.o_proj.bias),
                gate_up=tuple((p.weight, p.bias) for p in (mlp.gate_proj, mlp.up_proj)),
                gate_features=mlp.gate_proj.out_features, act=getattr(mlp.act_fn, "forward", mlp.act_fn),
                down=(mlp.down_proj.weight, mlp.down_proj.bias), stack=stacks[i] if stacks is not None else None))
        return layers, norm_refs(self.decoder.norm), stacks is not None

    def rope(self, hidden: torch.Tensor, position_ids: torch.Tensor, fed: int | None):
        """cos and the signed sin (`signed_sin`) [B, 1, 1, head_dim] at `position_ids`: from the table of this
        rollout's coming positions when `fed` is given (made at fed 0, and again when it runs out; one [B, 1, 1,
        head_dim] entry per position), else computed for this step alone."""
        if fed is None:
            cos, sin = self.decoder.rotary_emb(hidden, position_ids)
            return cos.unsqueeze(1), signed_sin(sin.unsqueeze(1))
        table = self._rope
        if fed == 0 or table is None or not table[0] <= fed < table[0] + len(table[1]):
            length = ROPE_STEPS[0] if fed == 0 or table is None else min(2 * len(table[1]), ROPE_STEPS[1])
            ahead = position_ids + torch.arange(length, device=position_ids.device)  # [3, B, length]
            cos, sin = (t.transpose(0, 1)[:, :, None, None] for t in self.decoder.rotary_emb(hidden, ahead))
            table = self._rope = (fed, cos, signed_sin(sin))  # [length, B, 1, 1, head_dim]
        start, cos, sin = table
        return cos[fed - start], sin[fed - start]

    def stacks(self) -> list[Stacked] | None:
        """Every layer's stacked projections (None where `fuse` is off), stacked again when any weight was replaced
        or changed in place (an optimizer step, outside inference mode, bumps its version)."""
        if not self.fuse:
            return None
        tensors = [t for layer in self.decoder.layers for p in projections(layer) for t in (p.weight, p.bias)
                   if t is not None]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                self._stacked = (key, [stack(layer) for layer in self.decoder.layers])
        return self._stacked[1]


def projections(layer) -> tuple[torch.nn.Linear, ...]:
    """The projections a layer's stacks are made of: q, k, v, gate, up."""
    return (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.mlp.gate_proj,
            layer.mlp.up_proj)


def stack(layer) -> Stacked:
    q, k, v, gate, up = projections(layer)
    return Stacked(
        qkv_weight=torch.cat([q.weight, k.weight, v.weight]),
        qkv_bias=torch.cat([q.bias, k.bias, v.bias]) if q.bias is not None else None,
        gate_up_weight=torch.cat([gate.weight, up.weight]),
    )


def stacked_bytes(decoder) -> float:
    """Bytes the stacked copies of `decoder`'s projections would take (biases left out: small); inf for a decoder
    with biases on some of q/k/v only, or on gate/up (not stacked)."""
    total = 0
    for layer in decoder.layers:
        q, k, v, gate, up = projections(layer)
        if len({p.bias is None for p in (q, k, v)}) > 1 or gate.bias is not None or up.bias is not None:
            return float("inf")
        total += sum(p.weight.numel() * p.weight.element_size() for p in (q, k, v, gate, up))
    return total


def side_by_side(x: torch.Tensor, parts: tuple[tuple[torch.Tensor, torch.Tensor | None], ...],
                 weight: torch.Tensor | None, bias: torch.Tensor | None, stacked: bool,
                 check: bool) -> tuple[torch.Tensor, bool]:
    """`x` through each of `parts` (weight, bias), outputs side by side: one product on their stacked `weight` /
    `bias` when `stacked`, else each part's own, then (on a `check` step) whether the stacked product gives the
    same bits."""
    if stacked:
        return F.linear(x, weight, bias), True
    out = torch.cat([F.linear(x, w, b) for w, b in parts], dim=-1)
    return out, not check or torch.equal(F.linear(x, weight, bias), out)


def norm_refs(norm) -> tuple[torch.Tensor, float]:
    return norm.weight, norm.variance_epsilon


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen's RMSNorm: in float32, then back to the input's dtype before the weight."""
    low = x.dtype != torch.float32  # (the casts are skipped in float32, where they would return `x` itself)
    x32 = x.to(torch.float32) if low else x
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (y.to(x.dtype) if low else y)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """`sin` with its first half negated: transformers' `rotate_half(x) * sin` (x's halves swapped, the new first
    half negated) is then `x.roll(half, -1) * signed_sin(sin)`, bit for bit (a product's rounding does not depend
    on which factor carries the sign), in one operation instead of four."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def one_row(cache) -> DynamicCache:
    """A new dynamic cache holding a copy of the first row of every layer of `cache`."""
    row = DynamicCache()
    for i, layer in enumerate(cache.layers):
        row.update(layer.keys[:1].clone(), layer.values[:1].clone(), i)
    return row


def unsupported(decoder) -> str | None:
    """Why `LeanDecoder` cannot run `decoder` (None: it can try)."""
    config = getattr(decoder, "config", None)
    if config is None or not all(hasattr(decoder, a) for a in ("embed_tokens", "rotary_emb", "layers", "norm")):
        return f"{type(decoder).__name__} is not laid out as a Qwen text decoder"
    if (attention := not_plain_sdpa(config)) is not None:
        return attention
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return "global forward hooks"
    for name, module in decoder.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return f"forward hooks on {name or 'the decoder'}"
    if not hasattr(decoder.norm, "variance_epsilon"):
        return "a final norm that is not Qwen's RMSNorm"
    for layer in decoder.layers:
        for part, names in PROJECTIONS.items():
            block = getattr(layer, part, None)
            if block is None or not all(type(getattr(block, n, None)) is torch.nn.Linear for n in names):
                return f"{part} projections that are not plain Linear layers"
        attn = layer.self_attn
        if not all(hasattr(attn, a) for a in ("head_dim", "scaling", "num_key_value_groups")):
            return "an attention module without head_dim / scaling / num_key_value_groups"
        if not hasattr(layer.mlp, "act_fn"):
            return "an MLP without act_fn"
        norms = [getattr(layer, "input_layernorm", None), getattr(layer, "post_attention_layernorm", None)]
        norms += [attn.q_norm, getattr(attn, "k_norm", None)] if hasattr(attn, "q_norm") else []
        if not all(hasattr(n, "weight") and hasattr(n, "variance_epsilon") for n in norms):
            return "normalisation layers that are not Qwen's RMSNorm"
    return None
