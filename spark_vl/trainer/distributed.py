"""Process setup and the DeepSpeed engine: distributed init, device, optimizer, LR schedule, collectives.

The same code runs as one plain process (CPU or one GPU) or under torchrun / the deepspeed launcher.
DeepSpeed is driven directly (no accelerate): ZeRO stage, precision, clipping and accumulation come
from the typed config, a JSON preset (`deepspeed.config_file`) may override entries. On CPU the
communication backend is gloo and the optimizer is torch's AdamW (DeepSpeed's CPU Adam would need a
JIT compile).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
from dataclasses import dataclass

import torch

from spark_vl.config import Config, ConfigError, Derived
from spark_vl.models import load_model
from spark_vl.spark.aux_queue import waterfill


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed():
    """Import deepspeed. In a one-process run its CPU comm backend would still JIT-compile the shared-memory
    all-reduce op (about a minute on first use, into ~/.cache/torch_extensions) although one process exchanges
    nothing: mark that op unavailable, which is DeepSpeed's own fallback to plain torch.distributed. Must run
    before DeepSpeed creates its comm backend (deepspeed.initialize, zero.Init)."""
    import deepspeed

    if torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # ShareMemCommBuilder.NAME
    return deepspeed


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Initialise torch.distributed (through DeepSpeed when there are several processes); a plain process becomes
    rank 0 of 1 and imports no DeepSpeed yet, so a config error is reported before DeepSpeed's start-up noise."""
    if "RANK" not in os.environ:  # plain `python`/`spark-vl` run: no launcher, no MPI discovery
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if os.environ.get("WORLD_SIZE", "1") == "1":
            torch.distributed.init_process_group(backend, rank=0, world_size=1)
        else:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
    return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device)


def deepspeed_config(cfg: Config, derived: Derived, dtype: torch.dtype) -> dict:
    ds = {
        "train_micro_batch_size_per_gpu": cfg.trainer.micro_batch_size,
        "gradient_accumulation_steps": derived.grad_accum_steps,
        "train_batch_size": cfg.trainer.micro_batch_size * derived.grad_accum_steps * derived.world_size,
        "gradient_clipping": cfg.trainer.grad_clip,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    zero = ds["zero_optimization"]
    if cfg.deepspeed.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if cfg.deepspeed.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if cfg.deepspeed.config_file:
        with open(cfg.deepspeed.config_file) as f:
            _deep_update(ds, json.load(f))
    return ds


def _deep_update(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        elif value != "auto":
            base[key] = value


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine down to `min_ratio`; progress is clamped, so the lr never climbs back."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_engine(model, cfg: Config, derived: Derived, dist: DistInfo, dtype: torch.dtype):
    """Wrap `model` in a DeepSpeed engine with AdamW and the warm-up + cosine schedule."""
    deepspeed = _deepspeed()

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check model.freeze_vision / model.freeze_projector")
    t = cfg.trainer
    cuda = dist.device.type == "cuda"  # fused kernels on GPU; elsewhere multi-tensor ops, not one op per tensor
    optimizer = torch.optim.AdamW(
        params, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay, fused=cuda, foreach=not cuda
    )
    optimizer.register_step_pre_hook(_finite_grads_when_skipping)
    total, warmup, min_ratio = derived.total_optimizer_steps, derived.warmup_steps, t.min_lr_ratio
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, total, warmup, min_ratio))
    ds = deepspeed_config(cfg, derived, dtype)
    if trainer_clip(cfg, derived, dtype):
        ds["gradient_clipping"] = 0.0  # the trainer clips (`clip_like_deepspeed`)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds)
    if dist.world_size == 1 and cfg.deepspeed.zero_stage == 0:
        # One process: DeepSpeed's gradient all-reduce after each backward is the identity (flatten every gradient,
        # reduce over one rank, divide by 1, copy back), ~1.5 ms a micro-step on the tiny model; skip it.
        engine.enable_backward_allreduce = False
    return engine


def _finite_grads_when_skipping(optimizer, args, kwargs) -> None:
    """Pre-step hook of the base optimizer (it sees the fp32 partitions under ZeRO): a skipped step (lr 0,
    `Trainer._optimizer_step`) must not feed NaN/inf gradients into Adam's moments, from where 0 x NaN would still
    reach the weights; those entries become 0, finite gradients are kept (as for a non-finite loss)."""
    if all(group["lr"] == 0.0 for group in optimizer.param_groups):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)


def zero3_loading(cfg: Config, derived: Derived, dtype: torch.dtype):
    """Under ZeRO-3, a live HfDeepSpeedConfig makes `from_pretrained` load each rank's partition directly
    (deepspeed.zero.Init) instead of the whole checkpoint per rank (8 x 64 GB of host memory for a 32B model).
    Keep the returned object alive while models are loaded; None when not needed (builtin models are built
    whole: they are tiny, and identical initialisation across world sizes is tested)."""
    if cfg.deepspeed.zero_stage != 3 or cfg.model.path.startswith("builtin:"):
        return None
    _deepspeed()  # before zero.Init creates DeepSpeed's comm backend
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(deepspeed_config(cfg, derived, dtype))


def build_frozen_copy(cfg: Config, derived: Derived, dist: DistInfo, dtype: torch.dtype):
    """A frozen copy of the initial policy: the KL reference and SPARK's `recycle_from: initial` model (one copy
    serves both). ZeRO-3 partitions it like the policy."""
    ref, _ = load_model(cfg.model, dist.device)
    return _frozen(ref, cfg, derived, dtype)


def build_judge(cfg: Config, derived: Derived, dist: DistInfo, dtype: torch.dtype):
    """(model, processor) of the separate frozen reward judge `reward.judge_model`, in the policy's dtype and
    partitioned like the policy under ZeRO-3. A builtin judge is built with `model.seed + 1`, so it is not a copy
    of the initial policy."""
    judge_cfg = dataclasses.replace(cfg.model, path=cfg.reward.judge_model, seed=cfg.model.seed + 1,
                                    gradient_checkpointing=False, freeze_vision=False, freeze_projector=False)
    model, processor = load_model(judge_cfg, dist.device)
    return _frozen(model, cfg, derived, dtype), processor


def _frozen(ref, cfg: Config, derived: Derived, dtype: torch.dtype):
    deepspeed = _deepspeed()

    ref.eval().requires_grad_(False)
    if cfg.deepspeed.zero_stage == 3:
        ds = deepspeed_config(cfg, derived, dtype)
        ds["zero_optimization"] = {"stage": 3}
        ref, *_ = deepspeed.initialize(model=ref, config=ds)
        ref = ref.module
    return ref


def lockstep(cfg: Config, dist: DistInfo) -> bool:
    """ZeRO-3 on several ranks: every forward pass gathers parameters collectively, so all ranks must run the same
    number of forwards through the same modules."""
    return cfg.deepspeed.zero_stage == 3 and dist.world_size > 1


def spare_core(device: torch.device) -> bool:
    """Whether the model's passes leave a CPU core free for work beside them: they run on an accelerator, or torch's
    CPU threads are fewer than this process's cores. (Where the passes' threads fill every core, work beside them
    only takes turns with them: on 2 cores, scoring beside the reference pass gave 0.96-0.99 of the step time of
    scoring first, and 1.14 in its favour with one torch thread: docs/BENCHMARKS.md.)"""
    if device.type != "cpu":
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return torch.get_num_threads() < cores


def all_gather_objects(value) -> list:
    """`value` from every rank, in rank order (picklable values; a plain process gets [value])."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return [value]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def gather_rows(rows: list) -> list:
    """Every rank's `rows`, concatenated in rank order (a plain process gets its own)."""
    return [row for part in all_gather_objects(rows) for row in part]


def share_of(count: int, budget: int, rank: int) -> int:
    """This rank's share of a per-step `budget` given every rank's `count` (`waterfill`: what one process holding
    everything would take, split over the ranks). A collective: every rank calls it."""
    return waterfill([int(c) for c in all_gather_objects(count)], budget)[rank]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def zero_loss(model) -> torch.Tensor:
    return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)


def grad_norm(model) -> float:
    """The global 2-norm of the gradients (non-finite when any entry is), in multi-tensor ops."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def trainer_clip(cfg: Config, derived: Derived, dtype: torch.dtype) -> float:
    """The gradient-norm bound the trainer applies itself (`clip_like_deepspeed`); 0 where DeepSpeed clips (or
    nothing is clipped). ZeRO-0 in fp32 only: there DeepSpeed takes one norm per parameter in a Python loop
    (~2 ms a step for the tiny model's 56 tensors) beside the trainer's own norm of the same gradients."""
    ds = deepspeed_config(cfg, derived, dtype)
    fp32 = not ds["bf16"].get("enabled") and not ds["fp16"].get("enabled")
    return float(ds.get("gradient_clipping") or 0.0) if ds["zero_optimization"]["stage"] == 0 and fp32 else 0.0


def clip_like_deepspeed(model, max_norm: float, world_size: int) -> float:
    """Clip the gradients as DeepSpeed's ZeRO-0 fp32 step does (`deepspeed.runtime.utils.clip_grad_norm_`, the same
    operations in the same order, so the same bits: the norm of every gradient, their squares summed, the square
    root, averaged over the data-parallel ranks, then every gradient times min(1, max_norm / (norm + 1e-6))), with
    the per-gradient norms in one multi-tensor call. Returns `grad_norm(model)`, from the same per-gradient norms
    where that is the same computation (every gradient on one device in one dtype)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch._foreach_norm([g.detach().float() for g in grads], 2.0)
    total = torch.stack(norms).pow(2.0).sum().float().pow(1.0 / 2.0)
    scaled = total * 1.0 / float(world_size)
    if world_size > 1:
        torch.distributed.all_reduce(scaled)
    total = scaled.to(grads[0].device)
    coef = torch.min(torch.tensor([1.0], device=total.device),
                     torch.tensor([float(max_norm)], device=total.device) / (total + 1e-6))
    one_group = len({(g.device, g.dtype) for g in grads}) == 1
    own = float(torch.linalg.vector_norm(torch.stack(norms), 2.0)) if one_group else grad_norm(model)
    for g in grads:
        g.mul_(coef)
    return own
