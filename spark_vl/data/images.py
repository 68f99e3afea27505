"""Decode the image references a dataset row may hold into RGB PIL images; what is recorded about each image.

A reference is a path (absolute, or relative to the dataset root), encoded bytes, an HF image struct
({"bytes": ..., "path": ...}) or an already decoded PIL image. Failures raise `ImageError` naming the
reference, so callers can skip the row and count it. `ImageInfo` is the size and hashes a prepared dataset
stores per image (computed by `spark_vl.prep.validate.check_image`, read back by `data.prepared`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

MAX_IMAGE_PIXELS = 178_956_970  # PIL's own decompression-bomb threshold (2x its warning limit)


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


def load_image(ref: Any, root: str | Path | None = None) -> Image.Image:
    """Decode `ref` into an RGB image; relative paths resolve against `root`."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
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
                raise ImageError(f"image {describe_ref(ref)} has {img.size[0]}x{img.size[1]} pixels (too large)")
            return img.convert("RGB")
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot decode image {describe_ref(ref)}: {err}") from None
