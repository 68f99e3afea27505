"""The rollout's decode step for Qwen text decoders, without transformers' per-call machinery.

A rollout runs the text decoder once per new token on [B, 1] ids. On a small model most of that call is not
arithmetic but transformers' own machinery: ~30 nested module calls with their hook checks, four decorators on the
decoder's forward and one on every attention, config lookups, mask preparation and output containers. `LeanDecoder`
issues the same tensor operations, in the same order, on the same weights, and calls the model's own embedding,
rotary embedding and activation modules; the M-RoPE positions and the [B, 1, 1, L] boolean mask are the caller's,
as for the stock forward.

It does not assume it computes the same numbers. Its first step is computed both ways, on two copies of one row's
KV cache, and compared bitwise (the new hidden state and every layer's new keys and values): any difference (another
transformers version, a decoder laid out otherwise) makes it use the stock forward from then on, with a warning.
It steps aside, before trying, wherever it cannot see the computation: another attention than `sdpa`, a forward hook
on any module (ZeRO-3's parameter gathering, PEFT), a Linear subclass (LoRA, quantized layers), sliding-window
layers, a decoder without the Qwen layout; and in training mode (dropout).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.nn.modules import module as torch_module
from transformers.cache_utils import DynamicCache

logger = logging.getLogger(__name__)

PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


class LeanDecoder:
    """`lean(step)`: the last hidden state [B, 1, H] of `decoder(**step)` for one new token per row, where `step`
    holds input_ids [B, 1], attention_mask [B, 1, 1, L] (bool), position_ids [3, B, 1], the cache (under
    `cache` or `past_key_values`) and use_cache. `stock` counts the steps run through the stock forward."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.unsupported = unsupported(decoder)
        self.verified: bool | None = None  # None: not compared with the stock forward yet
        self.stock = 0
        if self.unsupported:
            logger.info("rollout decode step: transformers' forward (%s)", self.unsupported)

    def __call__(self, step: dict) -> torch.Tensor:
        cache_key = "cache" if "cache" in step else "past_key_values"
        lean = (not self.unsupported and self.verified is not False and not self.decoder.training
                and step["input_ids"].shape[1] == 1
                and getattr(step[cache_key], "layers", None) is not None)  # per-layer keys and values to copy
        if lean and self.verified is None:
            self.verified = lean = self.matches_stock(step, cache_key)
        if not lean:
            self.stock += 1
            return self.decoder(**step).last_hidden_state
        return self.forward(step["input_ids"], step["attention_mask"], step["position_ids"], step[cache_key])

    def matches_stock(self, step: dict, cache_key: str) -> bool:
        """One step of the first row both ways, each on its own copy of that row's cache: equal bit for bit?"""
        self.stock += 1
        row = {k: v for k, v in step.items() if k != cache_key}
        row.update(input_ids=step["input_ids"][:1], attention_mask=step["attention_mask"][:1],
                   position_ids=step["position_ids"][:, :1])
        stock_cache, lean_cache = one_row(step[cache_key]), one_row(step[cache_key])
        want = self.decoder(**row, **{cache_key: stock_cache}).last_hidden_state
        got = self.forward(row["input_ids"], row["attention_mask"], row["position_ids"], lean_cache)
        same = torch.equal(want, got) and all(
            torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
            for a, b in zip(stock_cache.layers, lean_cache.layers, strict=True))
        if not same:
            logger.warning("rollout decode step: the lean step differs from transformers' forward (hidden states off "
                           "by up to %.3g); using transformers' forward", float((want - got).abs().max()))
        return same

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
        """transformers' decoder forward for one new token per row (Qwen2.5-VL / Qwen3-VL text models), op for op."""
        d = self.decoder
        B = input_ids.shape[0]
        hidden = d.embed_tokens(input_ids)
        cos, sin = d.rotary_emb(hidden, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        for i, layer in enumerate(d.layers):
            attn, mlp = layer.self_attn, layer.mlp
            x = rms_norm(hidden, layer.input_layernorm)
            q, k, v = (linear(x, p).view(B, 1, -1, attn.head_dim) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
            if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head's query and key
                q, k = rms_norm(q, attn.q_norm), rms_norm(k, attn.k_norm)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = cache.update(k, v, i)
            groups = attn.num_key_value_groups
            if groups > 1:  # one query per row: the query heads of each key/value head side by side (`pack_gqa`)
                q = q.reshape(B, q.shape[1] // groups, groups, q.shape[-1])
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=attn.scaling,
                                                 is_causal=False)
            out = out.reshape(B, -1, 1, v.shape[-1]).transpose(1, 2).contiguous().reshape(B, 1, -1).contiguous()
            hidden = hidden + linear(out, attn.o_proj)
            x = rms_norm(hidden, layer.post_attention_layernorm)
            hidden = hidden + linear(mlp.act_fn(linear(x, mlp.gate_proj)) * linear(x, mlp.up_proj), mlp.down_proj)
        return rms_norm(hidden, d.norm)


def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """Qwen's RMSNorm: in float32, then back to the input's dtype before the weight."""
    dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + norm.variance_epsilon)
    return norm.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


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
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return f"attention {getattr(config, '_attn_implementation', None)!r}, not 'sdpa'"
    if getattr(config, "use_sliding_window", False) or any(t != "full_attention"
                                                            for t in getattr(config, "layer_types", None) or []):
        return "sliding-window attention layers"
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
