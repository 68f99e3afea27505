"""Load a Qwen2.5-VL / Qwen3-VL policy and its processor, or a builtin tiny model.

`load_model(cfg.model, device)` accepts a local folder, a hub id (when online) or `builtin:<name>`.
Precision: `dtype: auto` means bf16 on CUDA and fp32 on CPU. Image bounds (`min_pixels`,
`max_pixels`) are set on the processor. Optional freezing of the vision tower / projector and
gradient checkpointing are applied here so every entry point (train, eval, export) agrees.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections import OrderedDict

import torch

from spark_vl.config import ModelConfig

BUILTIN_PREFIX = "builtin:"


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def load_processor(cfg: ModelConfig):
    if cfg.path.startswith(BUILTIN_PREFIX):
        from spark_vl.models.tiny import build_processor

        return build_processor(cfg.path[len(BUILTIN_PREFIX) :], cfg.min_pixels, cfg.max_pixels)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(cfg.path, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    # Older checkpoints keep the bounds only in `size`; set both spellings so every version honours them.
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    for name, value in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)
    return processor


def load_model(cfg: ModelConfig, device: torch.device | str = "cpu"):
    """(model, processor) on `device`, in the configured precision, with freezing applied."""
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.path.startswith(BUILTIN_PREFIX):
        from spark_vl.models.tiny import build_tiny

        model, processor = build_tiny(cfg.path[len(BUILTIN_PREFIX) :], cfg.seed, cfg.min_pixels, cfg.max_pixels)
        model = model.to(dtype)
    else:
        from transformers import AutoModelForImageTextToText

        processor = load_processor(cfg)
        model = AutoModelForImageTextToText.from_pretrained(
            cfg.path, dtype=dtype, attn_implementation=cfg.attn_implementation
        )
    if not zero3_partitioned(model):  # ZeRO-3 partitions already sit where DeepSpeed put them
        model.to(device)
    apply_freezing(model, cfg)
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24 (the old name is deprecated)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model, processor


def zero3_partitioned(model) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


@functools.cache
def accepts(cls: type, method: str, name: str) -> bool:
    """Whether `cls.method` takes the argument `name` (transformers adds and renames arguments between versions);
    looked up once per class."""
    return name in inspect.signature(getattr(cls, method)).parameters


def cache_arg(model) -> str:
    """The forward keyword of the KV cache: `cache` from transformers 5.24 (`past_key_values` is deprecated there),
    `past_key_values` before."""
    return "cache" if accepts(type(model), "forward", "cache") else "past_key_values"


def model_cache(out):
    """The KV cache of a forward's output (`cache` in transformers >= 5.24, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def no_autograd(model):
    """The context for a forward pass whose outputs never need a gradient: `torch.inference_mode` (cheaper per op than
    no_grad: no version counters or view tracking), except under ZeRO-3, whose hooks gather parameters during the
    pass into tensors that outlive it. Nothing made inside may be kept for a later pass with gradient."""
    return torch.no_grad() if zero3_partitioned(model) else torch.inference_mode()


def has_dropout(model) -> bool:
    """True when some module drops activations in train mode: an `nn.Dropout` with p > 0 or a float `*dropout*`
    attribute > 0 (transformers' attention modules keep `attention_dropout` as a plain float)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            return True
        if any("dropout" in name and isinstance(value, float) and value > 0 for name, value in vars(module).items()):
            return True
    return False


def vision_modules(model):
    """(vision tower, projector) of a Qwen-VL model: `model.model.visual` and its `merger`."""
    visual = getattr(getattr(model, "model", model), "visual", None)
    if visual is None:
        raise ValueError(f"{type(model).__name__} has no vision tower at model.visual")
    return visual, getattr(visual, "merger", None)


def apply_freezing(model, cfg: ModelConfig) -> None:
    if not (cfg.freeze_vision or cfg.freeze_projector):
        return
    visual, merger = vision_modules(model)
    merger_ids = {id(p) for p in merger.parameters()} if merger is not None else set()
    for p in visual.parameters():
        is_projector = id(p) in merger_ids
        if (is_projector and cfg.freeze_projector) or (not is_projector and cfg.freeze_vision):
            p.requires_grad_(False)


def not_plain_sdpa(config) -> str | None:
    """Why a text decoder's `config` is not SDPA attention over full (not sliding-window) layers; None when it is."""
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return f"attention {getattr(config, '_attn_implementation', None)!r}, not 'sdpa'"
    if getattr(config, "use_sliding_window", False) or any(t != "full_attention"
                                                            for t in getattr(config, "layer_types", None) or []):
        return "sliding-window attention layers"
    return None


def image_features(trunk, pixel_values: torch.Tensor, grid_thw: torch.Tensor):
    """The vision tower's features of `pixel_values` (`trunk.get_image_features`, as the model's own forward computes
    them), with Qwen2.5-VL's grid-derived tensors made once per grid (`grid_tensors`); for `mm_encoder_outputs`."""
    return trunk.get_image_features(pixel_values, grid_thw, return_dict=True,
                                    **grid_tensors(getattr(trunk, "visual", None), grid_thw))


_GRID_TENSORS: OrderedDict[tuple, dict] = OrderedDict()
GRID_TENSORS_KEPT = 256


def grid_tensors(visual, grid_thw: torch.Tensor) -> dict:
    """Qwen2.5-VL's vision tower derives its patches' rotary positions, attention spans and window order from the image
    grid alone, on every call (Python loops over the images: about a third of the tower's time on small images).
    transformers accepts them precomputed (`image_position_ids`, ...: its `vision_utils` functions return a value
    given for them). Here they are made by those same functions, once per distinct grid (the rollout's prefill, the
    reference pass and the update see the same distinct images; a run with images of one size sees one grid), and
    kept (the last 256 grids). Empty for other towers and for a transformers that computes them otherwise."""
    utils = sys.modules.get("transformers.vision_utils")
    module = sys.modules.get(type(visual).__module__) if visual is not None else None
    uses_them = utils is not None and getattr(module, "get_vision_window_index", None) is utils.get_vision_window_index
    if not uses_them or not all(hasattr(visual, a) for a in ("spatial_merge_size", "window_size", "patch_size")):
        return {}
    merge, window, patch = visual.spatial_merge_size, visual.window_size, visual.patch_size
    key = (merge, window, patch, str(grid_thw.device), tuple(grid_thw.flatten().tolist()))
    found = _GRID_TENSORS.get(key)
    if found is None:
        with torch.inference_mode(False):  # normal tensors: the update's autograd saves the window index
            index, cu_windows = utils.get_vision_window_index(grid_thw, spatial_merge_size=merge, window_size=window,
                                                              patch_size=patch)
            found = {"image_position_ids": utils.get_vision_position_ids(grid_thw, merge),
                     "image_cu_seqlens": utils.get_vision_cu_seqlens(grid_thw),
                     "image_window_index": index, "image_cu_window_seqlens": cu_windows}
        if len(_GRID_TENSORS) >= GRID_TENSORS_KEPT:
            _GRID_TENSORS.popitem(last=False)
        _GRID_TENSORS[key] = found
    return found
