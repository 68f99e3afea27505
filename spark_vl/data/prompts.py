"""Sample -> Prompt: chat messages with image parts, a format-instruction template, and the length check.

Templates are text files with a `{problem}` slot (spark_vl/templates/format/*.txt, or any path), so
SPARK's evaluation suffix or EasyR1's think/boxed instruction is a file, not code. `<image>`
placeholders in the problem become image parts at their position; a problem without placeholders gets
its images first. `prompt_length` counts the tokens a prompt will occupy INCLUDING the expanded image
tokens, so over-long prompts are dropped before rollout instead of being truncated through an image.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any

from spark_vl.data.images import load_image
from spark_vl.types import Prompt, Sample

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
IMAGE_PLACEHOLDER = re.compile(r"<image\s*\d*>")  # "<image>" (EasyR1) and "<image 1>" (MMMU)


@functools.lru_cache(maxsize=64)
def load_template(name_or_path: str, kind: str = "format") -> str:
    """Read a template by name (a file in spark_vl/templates/<kind>/) or by path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = TEMPLATE_DIR / kind / f"{name_or_path}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in (TEMPLATE_DIR / kind).glob("*.txt"))
        raise FileNotFoundError(f"template {name_or_path!r} not found; known {kind} templates: {', '.join(known)}")
    text = path.read_text()
    if "{problem}" not in text and kind == "format":
        raise ValueError(f"template {path} has no {{problem}} slot")
    return text.rstrip("\n")


def strip_image_placeholders(text: str) -> str:
    """The question as a person reads it: placeholders removed, whitespace tidied."""
    return re.sub(r"[ \t]+", " ", IMAGE_PLACEHOLDER.sub(" ", text)).strip()


def user_content(text: str, num_images: int) -> list[dict[str, Any]]:
    """Interleave image parts at `<image>` placeholders; with none, put all images first."""
    pieces = IMAGE_PLACEHOLDER.split(text)
    placeholders = len(pieces) - 1
    content: list[dict[str, Any]] = []
    if placeholders == num_images and num_images > 0:
        for i, piece in enumerate(pieces):
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
            if i < num_images:
                content.append({"type": "image"})
        return content
    # Mismatched or missing placeholders: images first, in order, then the text without placeholders.
    content = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": strip_image_placeholders(text)})
    return content


def build_messages(text: str, num_images: int, system_prompt: str | None = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_content(text, num_images)})
    return messages


def build_prompt(
    sample: Sample,
    template: str = "boxed",
    system_prompt: str | None = None,
    image_root: str | Path | None = None,
    images: list[Any] | None = None,
    max_pixels: int | None = None,
) -> Prompt:
    """A policy prompt for `sample`. Images are decoded here, scaled down to at most `max_pixels` each (the model's
    `model.max_pixels`; raises ImageError on a bad one)."""
    body = load_template(template).replace("{problem}", sample.problem.strip())
    decoded = images if images is not None else [load_image(ref, image_root, max_pixels) for ref in sample.images]
    return Prompt(
        uid=sample.uid,
        messages=build_messages(body, len(decoded), system_prompt),
        images=decoded,
        sample=sample,
        kind="policy",
    )


def image_token_counts(prompt: Prompt, processor) -> list[int]:
    """Tokens each image expands to after the processor's resize (min/max pixels) and patch merge."""
    if not prompt.images:
        return []
    sizes = [(img.size[1], img.size[0]) for img in prompt.images]  # (height, width)
    return list(processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"])


def prompt_length(prompt: Prompt, processor) -> int:
    """Prompt tokens including every expanded image token."""
    from spark_vl.models.encode import render  # imported here: data preparation need not import torch

    ids = processor.tokenizer(render(prompt, processor), add_special_tokens=False)["input_ids"]
    # Each image is one <|image_pad|> in the rendered text and becomes `n` pads after processing.
    return len(ids) + sum(n - 1 for n in image_token_counts(prompt, processor))


def prompt_key(prompt: Prompt) -> str:
    """A stable key of a prompt's content: its question text and the pixels of its images (the same question on
    two images is two prompts; the same row drawn again is the same prompt). Cached in `prompt.meta`."""
    if "key" not in prompt.meta:
        digest = hashlib.sha1(prompt.sample.problem.encode("utf-8", "surrogatepass"))
        for img in prompt.images:
            digest.update(f"{img.mode}{img.size}".encode())
            digest.update(img.tobytes())
        prompt.meta["key"] = digest.hexdigest()
    return prompt.meta["key"]
