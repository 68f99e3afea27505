"""Decode the image references a dataset row may hold into RGB PIL images; what is recorded about each image.

A reference is a path (absolute, or relative to the dataset root), encoded bytes, an HF image struct
({"bytes": ..., "path": ...}) or an already decoded PIL image. Failures raise `ImageError` naming the
reference, so callers can skip the row and count it. `ImageInfo` is the size and hashes a prepared dataset
stores per image (computed by `spark_vl.prep.validate.check_image`, read back by `data.prepared`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

# The documented cap (docs/DATA.md, `spark-vl data validate --max-image-pixels`): PIL's bomb-warning threshold.
MAX_IMAGE_PIXELS = 89_478_485


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    hash: str  # sha1 of decoded RGB pixels + size
    dhash: str  # 16 hex digits, perceptual


class ImageError(ValueError):
    """An image reference that cannot be turned into a picture."""


def describe_ref(ref: Any) -> str:
    if isinstance(ref, (bytes, bytearray)):
        return f"<{len(ref)} bytes>"
    if isinstance(ref, dict):
        return f"<image struct path={ref.get('path')!r} bytes={len(ref.get('bytes') or b'')}>"
    if isinstance(ref, Image.Image):
        return f"<PIL {ref.size[0]}x{ref.size[1]}>"
    return repr(ref)


def fit_pixels(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The largest (width, height) of the same aspect ratio with width x height <= max_pixels."""
    w, h = size
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    return max(1, math.floor(w * scale)), max(1, math.floor(h * scale))


def _shrink(img: Image.Image, max_pixels: int) -> Image.Image:
    """Down to at most `max_pixels`: an integer box reduction first (cheap), then one resize to the exact size."""
    target = fit_pixels(img.size, max_pixels)
    if target == img.size:
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert("RGB")  # palette / bilevel images cannot be reduced or filtered as they are
    factor = min(img.size[0] // target[0], img.size[1] // target[1])
    if factor >= 2:
        img = img.reduce(factor)
    return img.resize(target, Image.Resampling.BICUBIC) if img.size != target else img


def load_image(ref: Any, root: str | Path | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode `ref` into an RGB image; relative paths resolve against `root`.

    `max_pixels` (the model's `model.max_pixels`): a larger image is scaled down (same aspect ratio) right after
    decoding, JPEGs already while decoding (`draft`), so a small file of a huge picture (a 21 kB 9000x9000 PNG) costs
    one decoded copy for a moment, and only the reduced image is kept in prompts and queues.
    """
    if isinstance(ref, Image.Image):
        return _shrink(ref, max_pixels).convert("RGB") if max_pixels else ref.convert("RGB")
    data: bytes | None = None
    path: str | None = None
    if isinstance(ref, dict):
        data, path = ref.get("bytes"), ref.get("path")
    elif isinstance(ref, (bytes, bytearray)):
        data = bytes(ref)
    elif isinstance(ref, (str, Path)):
        path = str(ref)
    else:
        raise ImageError(f"unsupported image reference of type {type(ref).__name__}: {describe_ref(ref)}")
    source: Any
    if data:
        source = io.BytesIO(data)
    elif path:
        file = Path(path)
        if not file.is_absolute() and root is not None:
            file = Path(root) / file
        if not file.is_file():
            raise ImageError(f"image file {file} does not exist")
        source = file
    else:
        raise ImageError(f"empty image reference {describe_ref(ref)}")
    try:
        with Image.open(source) as img:
            if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                raise ImageError(f"image {describe_ref(ref)} has {img.size[0]}x{img.size[1]} pixels, more than "
                                 f"{MAX_IMAGE_PIXELS} (too large)")
            if max_pixels:
                img.draft("RGB", fit_pixels(img.size, max_pixels))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                return _shrink(img, max_pixels).convert("RGB")
            return img.convert("RGB")
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot decode image {describe_ref(ref)}: {err}") from None
