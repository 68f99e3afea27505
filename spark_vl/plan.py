"""Memory plan of a run before it starts: per GPU and per host, from the config and the model's shape.

    spark-vl plan --config configs/qwen2_5_vl/7b_grpo.yaml --gpus-per-node 8 --nodes 1 --gpu-memory 80GiB
    line, fits = plan_summary(cfg, world_size=8)          # the one-line summary printed at train start

Pure arithmetic (no torch import, no weights read): the shape comes from a local folder's config.json or a
built-in table of the released Qwen2.5-VL / Qwen3-VL sizes. Simplifications, stated once:

- Worst case: every sequence of a micro-batch is data.max_prompt_length + rollout.max_new_tokens long (the
  trainer pads a micro-batch to its longest row) and every prompt carries `images_per_prompt` images at the
  full pixel budget: model.max_pixels / (patch x merge)^2 image tokens each, counted inside the prompt length.
- Model states (ZeRO paper, Rajbhandari et al. 2020, K = 12): bf16 weights 2 B/param, bf16 gradients
  2 B/param, optimizer states 12 B/param (fp32 master copy 4 + Adam m 4 + v 4). With D data-parallel ranks:
  stage 0 keeps all three whole, 1 shards the optimizer states, 2 also the gradients, 3 also the weights.
  offload_optimizer moves the optimizer states (and, at stage >= 2, an fp32 gradient partition, 4 B/param)
  to host memory; offload_param (stage 3) moves the weight partition to the host. Gradients and optimizer
  states count trainable parameters only (model.freeze_vision / freeze_projector).
- Frozen copies (bf16, partitioned under ZeRO-3, never offloaded, as spark_vl.trainer.distributed.build_frozen_copy
  builds them): the KL reference when algorithm.kl_coef > 0, the initial model when spark.recycle_from=initial, and
  the separate reward judge reward.judge_model (its own shape; its forward pass is not planned, see README).
- Activations, bf16, SDPA/flash attention (no s^2 term, no dropout), counting the tensors autograd saves per
  token per decoder layer, in the manner of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", 34 s b h bytes per layer for a GPT block) but for Qwen's block (RMSNorm, GQA, SwiGLU):
      2 B x (4 h + 2 q + 2 kv + 4 I) + 4 B x heads
  (norm inputs and outputs 4 h; q and attention output 2 q with q = heads x head_dim; k and v 2 kv with
  kv = kv_heads x head_dim; gate, up, silu(gate), silu(gate) x up 4 I; fp32 log-sum-exp of flash attention).
  Without checkpointing every layer keeps that; with gradient checkpointing each layer keeps its input
  (2 h bytes per token) and the layer being recomputed holds its full activations twice (the activations and
  their gradients). The vision tower is counted the same way over its patches (a gated MLP for Qwen2.5-VL,
  fc1/GELU/fc2 for Qwen3-VL); a frozen vision tower keeps no activations.
- Log-probs are computed in chunks (spark_vl.algorithms.logprobs): one [micro-batch, chunk, vocab] block of
  at most 2^25 logits instead of [B, T, V]; it costs 16 B per element at its peak (bf16 logits, fp32 logits,
  fp32 softmax or gradient, and one more fp32 temporary).
- Rollout. HF backend: the policy generates generation_batch_size sequences per rank with a KV cache of
  2 x layers x kv_heads x head_dim x 2 B per token, plus the prefill's transient MLP activations
  (3 I + 2 h per prompt token, bf16) for the whole generation batch. vLLM backend (colocated, one engine per
  rank): while awake it claims rollout.vllm_gpu_memory_utilization of the GPU's TOTAL memory (weights / TP +
  KV cache + its own buffers); asleep, level 1 copies its weights to host RAM and drops the KV cache, level 2
  drops both (rollout.vllm_sleep_level, default 2; --vllm-sleep-level overrides it). Without sleep the engine
  keeps its share during the update.
- Fixed terms (assumed, not derived): 2 GiB per GPU for the CUDA context, NCCL buffers and allocator slack;
  the ZeRO communication buckets (reduce bucket, 5e8 elements by default, bf16; 2x under ZeRO-3 for the
  gathered-parameter prefetch: the largest of the embedding and two decoder layers); 4 GiB of host RAM per
  rank for the Python process, CUDA libraries and the data pipeline.

Two phases are checked: the update (trainer states + activations + log-prob chunk + buffers, the rollout
engine asleep) and the rollout (trainer states + the generation memory). The peak is their maximum.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

GiB = 2**30
RUNTIME_RESERVE = 2 * GiB  # CUDA context + NCCL + allocator slack per GPU (assumed)
HOST_PER_RANK = 4 * GiB  # Python process, CUDA libraries, data pipeline per rank (assumed)
DEFAULT_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)
MAX_CHUNK_ELEMENTS = 2**25  # mirrors spark_vl.algorithms.logprobs.MAX_CHUNK_ELEMENTS (a test checks they agree)
LOGITS_BYTES_PER_ELEMENT = 16


# ---------------------------------------------------------------------------------------------------------------
# Model shapes


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that decide memory. `family` is qwen2_5_vl or qwen3_vl (their blocks differ slightly)."""

    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    patch: int
    merge: int = 2
    temporal_patch: int = 2
    vision_position_embeddings: int = 0  # Qwen3-VL's learned position table
    deepstack: int = 0  # Qwen3-VL's extra mergers (len(deepstack_visual_indexes))
    name: str = ""


def _q25(name, hidden, layers, heads, kv_heads, intermediate, vocab, tied, vision_intermediate=3420):
    return ModelShape("qwen2_5_vl", hidden, layers, heads, kv_heads, hidden // heads, intermediate, vocab, tied,
                      vision_depth=32, vision_hidden=1280, vision_intermediate=vision_intermediate, vision_heads=16,
                      patch=14, name=name)


def _q3(name, hidden, layers, heads, intermediate, tied, vision_depth, vision_hidden, vision_intermediate):
    return ModelShape("qwen3_vl", hidden, layers, heads, 8, 128, intermediate, 151936, tied,
                      vision_depth=vision_depth, vision_hidden=vision_hidden, vision_intermediate=vision_intermediate,
                      vision_heads=16, patch=16, vision_position_embeddings=2304, deepstack=3, name=name)


# Shapes of the released checkpoints (config.json), read from these sources (2026-12):
# - Qwen2.5-VL-7B-Instruct: huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blame/main/config.json (hidden 3584, 28 layers,
#   28/4 heads, intermediate 18944, vocab 152064, untied; vision depth 32, hidden 1280, intermediate 3420, patch 14).
# - Qwen2.5-VL-3B-Instruct: its config.json as mirrored on huggingface.co (hidden 2048, 36 layers, 16/2 heads,
#   intermediate 11008, tied; vocab 151936; the vision block omits depth/intermediate, i.e. transformers' defaults
#   32 / 3420).
# - Qwen2.5-VL-32B / 72B: text as Qwen2.5-32B (huggingface.co/Qwen/Qwen2.5-32B config.json: 5120, 64 layers,
#   40/8 heads, 27648, vocab 152064) and Qwen2-VL-72B (8192, 80 layers, 64/8 heads, 29568); the vision tower is
#   the same ViT, whose MLP the Qwen2.5-VL report lists as 3456 wide (QwenLM/Qwen3-VL#1390 quotes the table;
#   7B's config says 3420: 4 M parameters of difference, 0.01 %).
# - Qwen3-VL 2B/4B/8B/32B: configs quoted in public test fixtures (e.g. TensorRT-LLM's Qwen3-VL-8B scenario,
#   a Qwen3-VL-32B "shipped config" fixture): head_dim 128, 8 KV heads, vocab 151936; 2B 2048 x 28, 16 heads,
#   6144, tied; 4B 2560 x 36, 32 heads, 9728, tied; 8B 4096 x 36, 32 heads, 12288; 32B 5120 x 64, 64 heads,
#   25600; vision 2B/4B depth 24, hidden 1024, 4096; 8B/32B depth 27, hidden 1152, 4304; patch 16, 3 deepstack
#   mergers, 2304 position embeddings.
# Parameter counts from these shapes match transformers' models built on the meta device exactly (tests) and
# the published sizes (7B: 8.29 B) within 1 %.
KNOWN_SHAPES: dict[str, ModelShape] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": _q25("Qwen/Qwen2.5-VL-3B-Instruct", 2048, 36, 16, 2, 11008, 151936, True),
    "Qwen/Qwen2.5-VL-7B-Instruct": _q25("Qwen/Qwen2.5-VL-7B-Instruct", 3584, 28, 28, 4, 18944, 152064, False),
    "Qwen/Qwen2.5-VL-32B-Instruct": _q25("Qwen/Qwen2.5-VL-32B-Instruct", 5120, 64, 40, 8, 27648, 152064, False,
                                         vision_intermediate=3456),
    "Qwen/Qwen2.5-VL-72B-Instruct": _q25("Qwen/Qwen2.5-VL-72B-Instruct", 8192, 80, 64, 8, 29568, 152064, False,
                                         vision_intermediate=3456),
    "Qwen/Qwen3-VL-2B-Instruct": _q3("Qwen/Qwen3-VL-2B-Instruct", 2048, 28, 16, 6144, True, 24, 1024, 4096),
    "Qwen/Qwen3-VL-4B-Instruct": _q3("Qwen/Qwen3-VL-4B-Instruct", 2560, 36, 32, 9728, True, 24, 1024, 4096),
    "Qwen/Qwen3-VL-8B-Instruct": _q3("Qwen/Qwen3-VL-8B-Instruct", 4096, 36, 32, 12288, False, 27, 1152, 4304),
    "Qwen/Qwen3-VL-32B-Instruct": _q3("Qwen/Qwen3-VL-32B-Instruct", 5120, 64, 64, 25600, False, 27, 1152, 4304),
    # spark_vl/models/tiny.py (vocabulary: the in-process tokenizer's 512 entries + Qwen's special tokens, about)
    "builtin:tiny-qwen2.5-vl": ModelShape("qwen2_5_vl", 64, 2, 4, 2, 16, 128, 520, True, 2, 32, 64, 2, 14,
                                          name="builtin:tiny-qwen2.5-vl"),
    "builtin:tiny-qwen3-vl": ModelShape("qwen3_vl", 64, 2, 4, 2, 16, 128, 520, True, 2, 32, 64, 2, 16,
                                        vision_position_embeddings=256, deepstack=1, name="builtin:tiny-qwen3-vl"),
}
# The -Thinking and base variants share the Instruct shapes.
for _name in list(KNOWN_SHAPES):
    if _name.endswith("-Instruct") and "Qwen3-VL" in _name:
        KNOWN_SHAPES[_name.replace("-Instruct", "-Thinking")] = KNOWN_SHAPES[_name]


def shape_from_config(path_or_name: str) -> ModelShape:
    """The shape of a local model folder (its config.json), else of a known hub id or builtin name."""
    folder = Path(path_or_name)
    if (folder / "config.json").is_file():
        return _shape_from_json(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
    for name, shape in KNOWN_SHAPES.items():
        if name.lower() == path_or_name.rstrip("/").lower():
            return shape
    known = ", ".join(n for n in KNOWN_SHAPES if not n.endswith("-Thinking"))
    raise ValueError(f"no config.json in {path_or_name!r} and not a known model; known: {known}")


def _shape_from_json(raw: dict, where: str) -> ModelShape:
    model_type = raw.get("model_type", "")
    if model_type not in ("qwen2_5_vl", "qwen3_vl"):
        raise ValueError(f"{where}: model_type {model_type!r} is not planned (qwen2_5_vl or qwen3_vl)")
    text, vision = raw.get("text_config") or {}, raw.get("vision_config") or {}

    def t(key, default=None):
        value = text.get(key, raw.get(key, default))
        if value is None:
            raise ValueError(f"{where}: missing {key}")
        return value

    hidden, heads = t("hidden_size"), t("num_attention_heads")
    q3 = model_type == "qwen3_vl"
    defaults = (27, 1152, 4304, 16) if q3 else (32, 1280, 3420, 16)  # transformers' vision defaults
    return ModelShape(
        family=model_type, hidden=hidden, layers=t("num_hidden_layers"), heads=heads,
        kv_heads=t("num_key_value_heads", heads),
        head_dim=text.get("head_dim") or raw.get("head_dim") or hidden // heads,
        intermediate=t("intermediate_size"), vocab=t("vocab_size"),
        tied_embeddings=bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        vision_depth=vision.get("depth", defaults[0]), vision_hidden=vision.get("hidden_size", defaults[1]),
        vision_intermediate=vision.get("intermediate_size", defaults[2]),
        vision_heads=vision.get("num_heads", defaults[3]),
        patch=vision.get("patch_size", vision.get("spatial_patch_size", 16 if q3 else 14)),
        merge=vision.get("spatial_merge_size", 2), temporal_patch=vision.get("temporal_patch_size", 2),
        vision_position_embeddings=vision.get("num_position_embeddings", 2304) if q3 else 0,
        deepstack=len(vision.get("deepstack_visual_indexes", [8, 16, 24])) if q3 else 0,
        name=where,
    )


@dataclass(frozen=True)
class ParamCount:
    text_layers: int
    embedding: int  # input embedding (+ untied LM head) + final norm
    vision_tower: int  # patch embedding, position table, blocks
    projector: int  # merger (+ deepstack mergers)

    @property
    def total(self) -> int:
        return self.text_layers + self.embedding + self.vision_tower + self.projector

    def per_layer(self, shape: ModelShape) -> int:
        return self.text_layers // shape.layers


def count_params(s: ModelShape) -> ParamCount:
    """Parameters of transformers' Qwen2_5_VL / Qwen3VL ForConditionalGeneration with this shape."""
    h, q, kv = s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim
    attn = h * q + 2 * h * kv + q * h
    if s.family == "qwen2_5_vl":
        attn += q + 2 * kv  # q/k/v biases
    else:
        attn += 2 * s.head_dim  # q_norm, k_norm
    layer = attn + 3 * h * s.intermediate + 2 * h
    embedding = s.vocab * h * (1 if s.tied_embeddings else 2) + h
    vh, vi, m2 = s.vision_hidden, s.vision_intermediate, s.merge**2
    patch_in = 3 * s.temporal_patch * s.patch**2
    attn_v = vh * 3 * vh + 3 * vh + vh * vh + vh
    if s.family == "qwen2_5_vl":
        block = attn_v + 3 * vh * vi + 2 * vi + vh + 2 * vh  # gated MLP with biases, two RMSNorms
        tower = patch_in * vh + s.vision_depth * block  # Conv3d without bias
        merger = vh + (vh * m2) ** 2 + vh * m2 + vh * m2 * h + h  # RMSNorm, Linear, GELU, Linear
        projector = merger
    else:
        block = attn_v + 2 * vh * vi + vi + vh + 4 * vh  # fc1/fc2 with biases, two LayerNorms
        tower = patch_in * vh + vh + s.vision_position_embeddings * vh + s.vision_depth * block
        mlp = (vh * m2) ** 2 + vh * m2 + vh * m2 * h + h
        projector = (2 * vh + mlp) + s.deepstack * (2 * vh * m2 + mlp)  # LayerNorm over vh, deepstack over vh*m2
    return ParamCount(s.layers * layer, embedding, tower, projector)


def image_tokens(shape: ModelShape, max_pixels: int) -> int:
    """LLM tokens of one image at the full pixel budget: max_pixels / (patch x merge)^2."""
    return max_pixels // (shape.patch * shape.merge) ** 2


def chunk_length(batch: int, vocab: int, max_chunk_elements: int = MAX_CHUNK_ELEMENTS) -> int:
    """Positions per log-prob chunk: the rule of spark_vl.algorithms.logprobs.chunk_length (torch-free copy)."""
    return max(1, max_chunk_elements // max(1, batch * vocab))


# ---------------------------------------------------------------------------------------------------------------
# Hardware and the plan


@dataclass
class Hardware:
    gpus_per_node: int = 8
    nodes: int = 1
    gpu_memory: int = 80 * GiB
    host_memory: int | None = None  # per node; None = not checked

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass
class Term:
    name: str
    bytes: int
    formula: str
    phase: str = "always"  # always | update | rollout
    where: str = "gpu"  # gpu | host


@dataclass
class Plan:
    shape: ModelShape
    params: ParamCount
    trainable: int
    hardware: Hardware
    seq_len: int
    prompt_len: int
    response_len: int
    image_tokens: int
    terms: list[Term] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def gpu(self, phase: str) -> int:
        return sum(t.bytes for t in self.terms if t.where == "gpu" and t.phase in ("always", phase))

    @property
    def gpu_peak(self) -> int:
        return max(self.gpu("update"), self.gpu("rollout"))

    @property
    def peak_phase(self) -> str:
        return "update" if self.gpu("update") >= self.gpu("rollout") else "rollout"

    @property
    def host_per_node(self) -> int:
        return sum(t.bytes for t in self.terms if t.where == "host") * self.hardware.gpus_per_node

    @property
    def gpu_headroom(self) -> int:
        return self.hardware.gpu_memory - self.gpu_peak

    @property
    def fits_gpu(self) -> bool:
        return self.gpu_headroom >= 0

    @property
    def fits_host(self) -> bool:
        return self.hardware.host_memory is None or self.host_per_node <= self.hardware.host_memory

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host and not self.blockers

    @property
    def blockers(self) -> list[str]:
        return [n for n in self.notes if n.startswith("does not fit:")]


def _act_bytes_per_token_layer(h: int, q: int, kv: int, inter: int, heads: int, gated: bool = True) -> int:
    """Saved activation bytes per token of one block (bf16, flash/SDPA attention): see the module docstring."""
    mlp = 4 * inter if gated else 2 * inter
    return 2 * (4 * h + 2 * q + 2 * kv + mlp) + 4 * heads


def make_plan(cfg, hardware: Hardware, shape: ModelShape | None = None, prompt_len: int | None = None,
              response_len: int | None = None, images_per_prompt: int = 1,
              vllm_sleep_level: int | None = None) -> Plan:
    """The memory plan of `cfg` (a spark_vl.config.Config) on `hardware`; `shape` defaults to the model's."""
    vllm_sleep_level = vllm_sleep_level or cfg.rollout.vllm_sleep_level
    shape = shape or shape_from_config(cfg.model.path)
    pc = count_params(shape)
    n_total = pc.total
    frozen = (pc.vision_tower if cfg.model.freeze_vision else 0) + (pc.projector if cfg.model.freeze_projector else 0)
    n_train = n_total - frozen
    D = hardware.world_size
    ds = cfg.deepspeed
    stage = ds.zero_stage
    prompt_len = prompt_len or cfg.data.max_prompt_length
    response_len = response_len if response_len is not None else cfg.rollout.max_new_tokens
    seq = prompt_len + response_len
    # Image tokens sit inside the prompt, so the prompt length caps them (longer prompts are dropped).
    img = min(image_tokens(shape, cfg.model.max_pixels), prompt_len // max(1, images_per_prompt))
    plan = Plan(shape, pc, n_train, hardware, seq, prompt_len, response_len, img)
    add = plan.terms.append
    g = f"{n_train / 1e9:.2f}e9"

    # --- model states -------------------------------------------------------------------------------------
    w_div = D if stage == 3 else 1
    weights = 2 * n_total // w_div
    shard = f" / {D} (ZeRO-3)" if stage == 3 else ""
    if ds.offload_param and stage == 3:
        add(Term("policy weights (bf16, offloaded)", weights, f"2 B x {n_total / 1e9:.2f}e9{shard}", where="host"))
    else:
        add(Term("policy weights (bf16)", weights, f"2 B x {n_total / 1e9:.2f}e9{shard}"))
    g_div = D if stage >= 2 else 1
    if ds.offload_optimizer and stage >= 2:
        add(Term("gradients (fp32 partition, offloaded)", 4 * n_train // D, f"4 B x {g} / {D}", where="host"))
    else:
        g_shard = f" / {D} (ZeRO-{stage})" if g_div > 1 else ""
        add(Term("gradients (bf16)", 2 * n_train // g_div, f"2 B x {g}{g_shard}"))
    o_div = D if stage >= 1 else 1
    opt = 12 * n_train // o_div
    opt_formula = "12 B (fp32 master 4 + Adam m 4 + v 4) x " + g + (f" / {D} (ZeRO-{stage})" if o_div > 1 else "")
    if ds.offload_optimizer:
        add(Term("optimizer states (offloaded)", opt, opt_formula, where="host"))
        if stage == 0:
            plan.notes.append("deepspeed.offload_optimizer needs ZeRO stage >= 1; DeepSpeed ignores it at stage 0")
    else:
        add(Term("optimizer states", opt, opt_formula))
    copies = []
    if cfg.algorithm.kl_coef > 0:
        copies.append("KL reference")
    if cfg.spark.enabled and cfg.spark.recycle_from == "initial":
        copies.append("initial model (spark.recycle_from=initial)")
    for name in copies:
        add(Term(f"{name} (bf16, frozen)", 2 * n_total // w_div, f"2 B x {n_total / 1e9:.2f}e9{shard}"))
    if cfg.reward.judge_model:  # RewardDance: a separate frozen judge checkpoint, partitioned like the policy
        try:
            n_judge = count_params(shape_from_config(cfg.reward.judge_model)).total
        except ValueError as err:
            plan.notes.append(f"reward.judge_model not planned: {err}")
        else:
            add(Term("reward judge (bf16, frozen)", 2 * n_judge // w_div, f"2 B x {n_judge / 1e9:.2f}e9{shard}"))

    # --- update phase ---------------------------------------------------------------------------------------
    b = cfg.trainer.micro_batch_size
    tokens = b * seq
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    per_tl = _act_bytes_per_token_layer(shape.hidden, q, kv, shape.intermediate, shape.heads)
    if cfg.model.gradient_checkpointing:
        text_act = tokens * shape.layers * 2 * shape.hidden + 2 * tokens * per_tl
        text_formula = (f"{b} x {seq} tok x ({shape.layers} layers x 2 B x {shape.hidden} checkpoints "
                        f"+ 2 x {per_tl / 1e3:.1f} kB recomputed layer)")
    else:
        text_act = tokens * shape.layers * per_tl
        text_formula = f"{b} x {seq} tok x {shape.layers} layers x {per_tl / 1e3:.1f} kB"
    text_act += tokens * shape.hidden * 2 * 2  # embeddings + final hidden states handed to the LM head
    add(Term("activations, language model", text_act, text_formula, phase="update"))
    patches = b * images_per_prompt * img * shape.merge**2
    if not cfg.model.freeze_vision and patches:
        vh = shape.vision_hidden
        per_pv = _act_bytes_per_token_layer(vh, vh, vh, shape.vision_intermediate, shape.vision_heads,
                                            gated=shape.family == "qwen2_5_vl")
        if cfg.model.gradient_checkpointing:
            vis = patches * shape.vision_depth * 2 * vh + 2 * patches * per_pv
        else:
            vis = patches * shape.vision_depth * per_pv
        add(Term("activations, vision tower", vis,
                 f"{b * images_per_prompt} images x {img} tokens x {shape.merge**2} patches, "
                 f"depth {shape.vision_depth}",
                 phase="update"))
    chunk = chunk_length(b, shape.vocab)
    elements = b * min(chunk, seq) * shape.vocab
    add(Term("log-prob chunk", elements * LOGITS_BYTES_PER_ELEMENT,
             f"{b} x {min(chunk, seq)} positions x {shape.vocab} vocab x {LOGITS_BYTES_PER_ELEMENT} B",
             phase="update"))
    bucket = _bucket_size(ds)
    if stage >= 1:
        add(Term("ZeRO reduce bucket (bf16)", 2 * bucket, f"2 B x {bucket:.0e} elements", phase="update"))
    if stage == 3:
        largest = max(shape.vocab * shape.hidden, 2 * pc.per_layer(shape))
        add(Term("ZeRO-3 gathered parameters (bf16)", 2 * largest,
                 "2 B x max(embedding, 2 decoder layers) in flight", phase="update"))

    # --- rollout phase ---------------------------------------------------------------------------------------
    r = cfg.rollout
    per_rank_seqs = max(1, cfg.trainer.prompts_per_step * r.samples_per_prompt // D)
    kv_per_token = 2 * shape.layers * kv * 2
    if r.backend == "vllm":
        tp = r.vllm_tensor_parallel_size
        util = r.vllm_gpu_memory_utilization
        claim = int(util * hardware.gpu_memory)
        add(Term("vLLM engine, awake", claim, f"{util} x {hardware.gpu_memory / GiB:.1f} GiB (gpu_memory_utilization)",
                 phase="rollout"))
        vweights = 2 * n_total // tp
        kv_bytes = claim - vweights - 1 * GiB  # ~1 GiB of vLLM's own activation / sampler buffers (assumed)
        kv_tokens = max(0, kv_bytes) // (kv_per_token // tp) if kv_per_token else 0
        plan.notes.append(f"vLLM: weights {vweights / GiB:.1f} GiB per GPU (TP {tp}), KV cache room "
                          f"{max(0, kv_bytes) / GiB:.1f} GiB = {kv_tokens:,} tokens = {kv_tokens // max(seq, 1)} full "
                          f"sequences of {seq} tokens at once")
        if kv_tokens < seq:
            plan.notes.append("does not fit: vLLM has no room for one full sequence's KV cache; raise "
                              "rollout.vllm_gpu_memory_utilization or rollout.vllm_tensor_parallel_size")
        if not r.vllm_enable_sleep:
            add(Term("vLLM engine, not sleeping", claim, "rollout.vllm_enable_sleep=false", phase="update"))
        elif vllm_sleep_level == 1:
            add(Term("vLLM weights while asleep (level 1)", vweights, f"2 B x {n_total / 1e9:.2f}e9 / TP {tp}",
                     where="host"))
    else:
        gen = min(r.generation_batch_size, per_rank_seqs)
        add(Term("HF generate: KV cache", gen * seq * kv_per_token,
                 f"{gen} seq x {seq} tok x {kv_per_token / 1024:.0f} KiB", phase="rollout"))
        add(Term("HF generate: prefill transient", gen * prompt_len * (3 * shape.intermediate + 2 * shape.hidden) * 2,
                 f"{gen} seq x {prompt_len} tok x (3 x {shape.intermediate} + 2 x {shape.hidden}) x 2 B",
                 phase="rollout"))
        if stage == 3:
            add(Term("ZeRO-3 gathered parameters (bf16)", 2 * max(shape.vocab * shape.hidden, 2 * pc.per_layer(shape)),
                     "2 B x max(embedding, 2 decoder layers) in flight", phase="rollout"))

    add(Term("CUDA context, NCCL, allocator slack", RUNTIME_RESERVE, "assumed"))
    add(Term("process, CUDA libraries, data pipeline", HOST_PER_RANK, "assumed", where="host"))
    if stage < 3:
        plan.notes.append(f"loading: every rank reads the whole bf16 model into host RAM once "
                          f"({2 * n_total * hardware.gpus_per_node / GiB:.0f} GiB per node at the same moment)")
    return plan


def _bucket_size(ds) -> int:
    if ds.config_file and Path(ds.config_file).is_file():
        try:
            zero = json.loads(Path(ds.config_file).read_text()).get("zero_optimization", {})
            value = zero.get("reduce_bucket_size", DEFAULT_BUCKET)
            return int(value) if value != "auto" else DEFAULT_BUCKET
        except (OSError, ValueError):
            pass
    return DEFAULT_BUCKET


# ---------------------------------------------------------------------------------------------------------------
# What to change when it does not fit


def suggestions(cfg, hardware: Hardware, **kwargs) -> list[str]:
    """Single changes (config overrides or hardware) that make the plan fit, cheapest first."""
    base = make_plan(cfg, hardware, **kwargs)
    out = []

    def attempt(label: str, edit=None, hw: Hardware | None = None) -> bool:
        c = copy.deepcopy(cfg)
        if edit:
            edit(c)
        try:
            p = make_plan(c, hw or hardware, **kwargs)
        except ValueError:
            return False
        if p.fits:
            out.append(f"{label}: peak {p.gpu_peak / GiB:.1f} GiB per GPU ({p.peak_phase}), "
                       f"headroom {p.gpu_headroom / GiB:.1f} GiB")
            return True
        return False

    r, t, ds = cfg.rollout, cfg.trainer, cfg.deepspeed
    mb = t.micro_batch_size
    while mb > 1:
        mb //= 2
        if attempt(f"trainer.micro_batch_size={mb}", lambda c, mb=mb: setattr(c.trainer, "micro_batch_size", mb)):
            break
    if not cfg.model.gradient_checkpointing:
        attempt("model.gradient_checkpointing=true", lambda c: setattr(c.model, "gradient_checkpointing", True))
    for stage in range(ds.zero_stage + 1, 4):
        if attempt(f"deepspeed.zero_stage={stage}", lambda c, s=stage: setattr(c.deepspeed, "zero_stage", s)):
            break
    if not ds.offload_optimizer:
        attempt("deepspeed.offload_optimizer=true (needs host RAM, slower steps)",
                lambda c: setattr(c.deepspeed, "offload_optimizer", True))
    if ds.zero_stage == 3 and not ds.offload_param:
        attempt("deepspeed.offload_optimizer=true deepspeed.offload_param=true",
                lambda c: (setattr(c.deepspeed, "offload_optimizer", True),
                           setattr(c.deepspeed, "offload_param", True)))
    if r.backend == "vllm":
        for util in (0.5, 0.45, 0.4, 0.35, 0.3, 0.25):
            if util < r.vllm_gpu_memory_utilization and attempt(
                    f"rollout.vllm_gpu_memory_utilization={util}",
                    lambda c, u=util: setattr(c.rollout, "vllm_gpu_memory_utilization", u)):
                break
        for tp in (2, 4, 8):
            if tp > r.vllm_tensor_parallel_size and tp <= hardware.gpus_per_node and attempt(
                    f"rollout.vllm_tensor_parallel_size={tp}",
                    lambda c, tp=tp: setattr(c.rollout, "vllm_tensor_parallel_size", tp)):
                break
    else:
        gen = r.generation_batch_size
        while gen > 1:
            gen //= 2
            if attempt(f"rollout.generation_batch_size={gen}",
                       lambda c, g=gen: setattr(c.rollout, "generation_batch_size", g)):
                break
    for nodes in (hardware.nodes * 2, hardware.nodes * 4):
        hw = Hardware(hardware.gpus_per_node, nodes, hardware.gpu_memory, hardware.host_memory)
        if cfg.trainer.prompts_per_step % hw.world_size == 0 and attempt(f"{nodes} nodes", hw=hw):
            break
    if not out and not base.fits:
        out.append("no single change fits; combine the ones above, or use more or larger GPUs")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def render(plan: Plan, cfg) -> str:
    hw, s, pc = plan.hardware, plan.shape, plan.params
    ds = cfg.deepspeed
    flags = (("optimizer offload", ds.offload_optimizer), ("param offload", ds.offload_param))
    offload = ", ".join(k for k, v in flags if v) or "no offload"
    lines = [
        f"model: {s.name} ({pc.total / 1e9:.2f} B parameters, {plan.trainable / 1e9:.2f} B trainable; "
        f"vision tower {pc.vision_tower / 1e9:.2f} B, projector {pc.projector / 1e9:.3f} B)",
        f"hardware: {hw.nodes} node(s) x {hw.gpus_per_node} GPUs of {hw.gpu_memory / GiB:.1f} GiB = world size "
        f"{hw.world_size}; host {'%.0f GiB per node' % (hw.host_memory / GiB) if hw.host_memory else 'not given'}",
        f"sequence: {plan.prompt_len} prompt tokens (incl. up to {plan.image_tokens} image tokens per image) + "
        f"{plan.response_len} response = {plan.seq_len}; micro-batch {cfg.trainer.micro_batch_size}; "
        f"ZeRO-{ds.zero_stage}, {offload}; "
        f"gradient checkpointing {'on' if cfg.model.gradient_checkpointing else 'off'}; "
        f"rollout backend {cfg.rollout.backend}",
        "",
    ]
    width = max(len(t.name) for t in plan.terms) + 2
    for where, title in (("gpu", "per GPU"), ("host", "per host, per rank")):
        lines.append(f"{title:<{width}} {'GiB':>8}  phase    how")
        for t in plan.terms:
            if t.where == where:
                lines.append(f"  {t.name:<{width - 2}} {_gib(t.bytes):>8}  {t.phase:<8} {t.formula}")
        lines.append("")
    lines.append(f"per GPU: update {_gib(plan.gpu('update'))} GiB, rollout {_gib(plan.gpu('rollout'))} GiB, "
                 f"capacity {_gib(hw.gpu_memory)} GiB")
    capacity = f", capacity {_gib(hw.host_memory)} GiB" if hw.host_memory else " (host memory not given: not checked)"
    lines.append(f"per host: {_gib(plan.host_per_node)} GiB for {hw.gpus_per_node} ranks{capacity}")
    for note in plan.notes:
        lines.append(f"note: {note}")
    lines.append(verdict(plan))
    return "\n".join(lines)


def verdict(plan: Plan) -> str:
    hw = plan.hardware
    pct = 100 * plan.gpu_headroom / hw.gpu_memory
    gpu = (f"peak {plan.gpu_peak / GiB:.1f} of {hw.gpu_memory / GiB:.1f} GiB per GPU ({plan.peak_phase}), "
           f"headroom {plan.gpu_headroom / GiB:.1f} GiB ({pct:.0f} %)")
    host = f"host {plan.host_per_node / GiB:.0f} GiB per node"
    if hw.host_memory:
        host += f" of {hw.host_memory / GiB:.0f}"
    if plan.fits:
        return f"verdict: FITS: {gpu}; {host}"
    why = [b.removeprefix("does not fit: ") for b in plan.blockers]
    if not plan.fits_gpu:
        why.insert(0, "GPU memory")
    if not plan.fits_host:
        why.append("host memory")
    return f"verdict: DOES NOT FIT ({'; '.join(why)}): {gpu}; {host}"


def plan_summary(cfg, world_size: int, gpu_memory: int | None = None, gpus_per_node: int | None = None,
                 host_memory: int | None = None) -> tuple[str, bool]:
    """One line for the start of a training run, and whether it fits. Never raises: an unknown model or any
    other problem gives a line saying the plan was skipped, and True (the run is not blocked on it).

    `gpu_memory` defaults to 80 GiB (pass torch.cuda.get_device_properties(0).total_memory on a GPU);
    `gpus_per_node` defaults to min(world_size, 8)."""
    try:
        per_node = gpus_per_node or min(world_size, 8)
        hw = Hardware(per_node, max(1, math.ceil(world_size / per_node)), gpu_memory or 80 * GiB, host_memory)
        plan = make_plan(cfg, hw)
    except (ValueError, OSError, KeyError) as err:
        return f"memory plan: skipped ({err})", True
    line = verdict(plan).removeprefix("verdict: ")
    if not plan.fits:
        line += " -- run `spark-vl plan --config ...` for what to change"
    return f"memory plan: {line}", plan.fits


# ---------------------------------------------------------------------------------------------------------------
# CLI


def parse_size(text: str) -> int:
    """'80GiB', '80G' (GiB), '80GB' (1e9), '1.5TiB', '512MiB'; a bare number is GiB."""
    units = {"tib": 2**40, "tb": 10**12, "t": 2**40, "gib": GiB, "gb": 10**9, "g": GiB, "mib": 2**20, "mb": 10**6,
             "m": 2**20}
    s = text.strip().lower().replace(" ", "")
    for unit in sorted(units, key=len, reverse=True):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * units[unit])
    return int(float(s) * GiB)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from spark_vl.config import load_config, validate

    parser = argparse.ArgumentParser(
        prog="spark-vl plan",
        description="Estimate GPU and host memory of a training run before launching it. "
                    "Exit code 0 if it fits, 1 if it does not, 2 for a bad config or unknown model.",
    )
    parser.add_argument("--config", required=True, help="YAML preset (configs/*.yaml)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpu-memory", default="80GiB", help="per GPU, e.g. 80GiB, 141GB, 94GiB (default 80GiB)")
    parser.add_argument("--host-memory", default=None, help="per node, e.g. 1TiB, 2000GB (default: not checked)")
    parser.add_argument("--prompt-length", type=int, default=None,
                        help="prompt tokens to plan for (default data.max_prompt_length: the worst case)")
    parser.add_argument("--response-length", type=int, default=None, help="default rollout.max_new_tokens")
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--vllm-sleep-level", type=int, choices=(1, 2), default=None,
                        help="default rollout.vllm_sleep_level")
    parser.add_argument("--model-shape", default=None,
                        help="plan with another model's shape (a folder or a known id) instead of model.path")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    hw = Hardware(args.gpus_per_node, args.nodes, parse_size(args.gpu_memory),
                  parse_size(args.host_memory) if args.host_memory else None)
    validate(cfg, hw.world_size)
    try:
        shape = shape_from_config(args.model_shape or cfg.model.path)
    except ValueError as err:
        print(f"spark-vl plan: {err}")
        return 2
    kwargs = dict(shape=shape, prompt_len=args.prompt_length, response_len=args.response_length,
                  images_per_prompt=args.images_per_prompt, vllm_sleep_level=args.vllm_sleep_level)
    plan = make_plan(cfg, hw, **kwargs)
    print(render(plan, cfg))
    if not plan.fits:
        tips = suggestions(cfg, hw, **kwargs)
        print("what to change (each alone):" if tips else "")
        for tip in tips:
            print(f"  - {tip}")
    return 0 if plan.fits else 1
