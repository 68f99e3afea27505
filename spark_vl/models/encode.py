"""Prompt -> model inputs: the one path shared by generation (rollout/hf.py), the update (trainer/batch.py)
and the judge (spark/judge.py).

A prompt is rendered with the processor's chat template (each image one placeholder), run through the
processor once (image tokens expanded, pixel values, image grid, `mm_token_type_ids`), and several encoded
prompts are padded into one batch. Pixel values and grids are concatenated in row order, which is the
order the model scatters image features into image-token positions. Always pass `mm_token_type_ids`:
Qwen3-VL requires it and Qwen2.5-VL silently computes other M-RoPE positions without it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import torch

from spark_vl.models import accepts
from spark_vl.types import Prompt, Sample


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    mm_token_type_ids: list[int]
    pixel_values: torch.Tensor | None  # [patches, patch_dim]
    image_grid_thw: torch.Tensor | None  # [images, 3]
    positions: torch.Tensor | None = None  # [3, tokens] M-RoPE positions (`attach_positions`); None = not computed

    def truncated(self, keep: int) -> EncodedPrompt:
        """The first `keep` tokens (images sit before the cut: their pixels are kept whole)."""
        return EncodedPrompt(self.input_ids[:keep], self.mm_token_type_ids[:keep], self.pixel_values,
                             self.image_grid_thw, None if self.positions is None else self.positions[:, :keep])


def render(prompt: Prompt, processor) -> str:
    """The chat text of a prompt with the generation header, image parts as single placeholders."""
    return processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)


def encode_prompt(prompt: Prompt, processor, text: str | None = None) -> EncodedPrompt:
    """Processor outputs of one prompt (`text` replaces the rendered chat, e.g. with a pre-filled answer)."""
    enc = processor(
        text=[render(prompt, processor) if text is None else text],
        images=prompt.images or None,
        return_tensors="pt",
        return_mm_token_type_ids=True,
    )
    ids = enc["input_ids"][0].tolist()
    mm = enc["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in enc else [0] * len(ids)
    return EncodedPrompt(ids, mm, enc.get("pixel_values"), enc.get("image_grid_thw"))


def encode_prompts(prompts: list[Prompt], processor, texts: list[str] | None = None) -> list[EncodedPrompt]:
    """`encode_prompt` of each prompt (with its text from `texts`, if given), from one processor call on all of them
    (padded, then each row's real tokens and its images' patches taken back out): the same values, a test compares
    them bitwise, without the processor's per-call overhead (merging its keyword arguments, validating, building
    outputs: ~1 ms a call on a small image). The images of a batch are one flat list in prompt order, as the
    processor matches them to image tokens."""
    texts = texts or [render(p, processor) for p in prompts]
    if len(prompts) < 2 or processor.tokenizer.pad_token_id is None:
        return [encode_prompt(p, processor, text=t) for p, t in zip(prompts, texts, strict=True)]
    images = [image for p in prompts for image in p.images]
    enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                    return_mm_token_type_ids=True)
    real = enc["attention_mask"].bool()
    grids = enc.get("image_grid_thw")
    patch_ends = grids.prod(-1).cumsum(0).tolist() if grids is not None else []
    out, image = [], 0  # `image`: the first image of the next prompt
    for i, p in enumerate(prompts):
        ids = enc["input_ids"][i][real[i]].tolist()
        mm = enc["mm_token_type_ids"][i][real[i]].tolist() if "mm_token_type_ids" in enc else [0] * len(ids)
        pixels = grid = None
        if p.images:
            first, last = image, image + len(p.images)
            start = patch_ends[first - 1] if first else 0
            pixels, grid = enc["pixel_values"][start : patch_ends[last - 1]], grids[first:last]
            image = last
        out.append(EncodedPrompt(ids, mm, pixels, grid))
    return out


class PromptEncoder:
    """`encode_prompt` cached per prompt object for as long as that object lives. Every PromptEncoder of one
    processor shares the cache, so the prompts a rollout step encodes for generation are not encoded again for
    the log-prob passes and the update; an entry goes when its prompt is garbage collected."""

    _shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # processor -> {id(prompt): (ref, encoded)}

    def __init__(self, processor):
        self.processor = processor
        self._cache: dict[int, tuple[weakref.ref, EncodedPrompt]] = PromptEncoder._shared.setdefault(processor, {})

    def __call__(self, prompt: Prompt) -> EncodedPrompt:
        return self._cached(prompt) or self._keep(prompt, encode_prompt(prompt, self.processor))

    def many(self, prompts: list[Prompt]) -> list[EncodedPrompt]:
        """`self(p)` for each prompt; the ones not encoded yet are encoded together (`encode_prompts`)."""
        new = list({id(p): p for p in prompts if self._cached(p) is None}.values())
        for prompt, encoded in zip(new, encode_prompts(new, self.processor)):
            self._keep(prompt, encoded)
        return [self(p) for p in prompts]

    def _cached(self, prompt: Prompt) -> EncodedPrompt | None:
        hit = self._cache.get(id(prompt))
        return hit[1] if hit is not None and hit[0]() is prompt else None

    def _keep(self, prompt: Prompt, encoded: EncodedPrompt) -> EncodedPrompt:
        key, cache = id(prompt), self._cache
        cache[key] = (weakref.ref(prompt, lambda _, key=key: cache.pop(key, None)), encoded)
        return encoded


_FILLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # processor -> its encoded vision filler


def vision_filler(processor) -> EncodedPrompt:
    """A one-word prompt with one small blank image (the processor scales it up to its smallest size), encoded once
    per processor. On several ranks every rank must run the vision tower whenever one does (ZeRO-3 gathers each
    module's parameters collectively when it runs; ZeRO-1/2 reduce gradients in buckets filled in the backward's
    order): a batch without any image on this rank (text-only rows, a filler) gets this row added. Its outputs are
    never used; in the update it carries no loss (no response tokens) but stays in the graph, so the vision tower's
    backward (zero gradients) runs on every rank too."""
    if processor not in _FILLERS:
        from PIL import Image

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "."}]}]
        prompt = Prompt("vision-filler", messages, [Image.new("RGB", (28, 28))],
                        Sample("vision-filler", "<image>.", ""))
        _FILLERS[processor] = encode_prompt(prompt, processor)
    return _FILLERS[processor]


def attach_positions(model, prompt: EncodedPrompt) -> None:
    """Store the prompt's M-RoPE positions [3, tokens] (the model's own `get_rope_index`; a text-only prompt counts
    0, 1, ...), once per encoded prompt: the log-prob passes and the update then never recompute them per row.
    A response continues from the prompt's largest position + 1 (text tokens)."""
    if prompt.positions is not None:
        return
    n = len(prompt.input_ids)
    if prompt.image_grid_thw is None:
        prompt.positions = torch.arange(n).expand(3, n)
        return
    trunk = model.model
    ids = torch.tensor([prompt.input_ids])
    inputs = {"image_grid_thw": prompt.image_grid_thw, "attention_mask": torch.ones_like(ids),
              "mm_token_type_ids": torch.tensor([prompt.mm_token_type_ids])}
    accepted = {k: v for k, v in inputs.items() if accepts(type(trunk), "get_rope_index", k)}
    positions, _ = trunk.get_rope_index(ids, **accepted)
    prompt.positions = positions[:, 0].cpu()


def pad_prompts(rows: list[EncodedPrompt], pad_id: int, side: Literal["left", "right"] = "left") -> dict:
    """Model inputs for a batch of encoded prompts: input_ids, attention_mask, mm_token_type_ids [B, T] and the
    concatenated pixel_values / image_grid_thw (absent when no row has an image)."""
    length = max(len(r.input_ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, length), pad_id, dtype=torch.long)
    mask = torch.zeros(B, length, dtype=torch.long)
    types = torch.zeros(B, length, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        cols = slice(length - n, length) if side == "left" else slice(0, n)
        ids[b, cols] = torch.tensor(r.input_ids, dtype=torch.long)
        mask[b, cols] = 1
        types[b, cols] = torch.tensor(r.mm_token_type_ids, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types}
    pixels = [r.pixel_values for r in rows if r.pixel_values is not None]
    if pixels:
        inputs["pixel_values"] = torch.cat(pixels)
        inputs["image_grid_thw"] = torch.cat([r.image_grid_thw for r in rows if r.image_grid_thw is not None])
    return inputs
