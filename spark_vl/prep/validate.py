"""Row validation for preparation and `spark-vl data validate`: images, text, answers, duplicates.

Every check produces a `Skipped(row, kind, reason)` (`spark_vl.data.rows`); a row with any issue is dropped
and the report counts it by kind and lists it. Image checks raise `SkipRow(reason, kind)`; they read the
header first, so a decompression bomb is rejected from its declared size before a single pixel is decoded;
only then are pixels decoded (which catches truncated files) and hashed. Two hashes per image:
  - `hash`: sha1 of the decoded RGB pixels and size (the same picture saved as PNG or with other
    metadata matches; a lossy re-encode does not);
  - `dhash`: a 64-bit difference hash of a 9x8 grey thumbnail (survives resizing and re-encoding;
    used only when decontamination is asked for perceptual matching).
Duplicates are rows whose image hashes and normalised question (`answers.question_key`) both match an
earlier row. The answer check asks the project's verifier whether a response that boxes exactly the
gold answer would be scored correct; if the verifier cannot parse the gold, no rollout ever can.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from spark_vl.data.answers import question_key
from spark_vl.data.images import MAX_IMAGE_PIXELS, ImageInfo, describe_ref
from spark_vl.data.prompts import IMAGE_PLACEHOLDER, strip_image_placeholders
from spark_vl.data.rows import Skipped, SkipRow, check_row
from spark_vl.types import Sample

LISTED_PER_KIND = 2000  # rows listed per kind in report.json; the counts are always complete


@dataclass
class ValidationConfig:
    min_image_side: int = 10  # pixels; smaller images carry no information (and break some processors)
    max_image_pixels: int = MAX_IMAGE_PIXELS  # width*height; PIL's bomb-warning threshold (1/2 of its hard limit)
    max_aspect_ratio: float = 200.0  # Qwen's smart_resize refuses more extreme images
    check_answers: bool = True  # ask the verifier whether the gold answer is parseable
    dedupe: bool = True


@dataclass
class CheckedImage:
    info: ImageInfo
    data: bytes  # the encoded file, as stored (PIL inputs are encoded to PNG)
    ext: str  # "png", "jpg", ...


@dataclass
class Report:
    """Counts per issue kind plus the listed rows; `rows_seen` counts every source row."""

    rows_seen: int = 0
    rows_kept: int = 0
    rows_filtered: int = 0  # rows a recipe deliberately did not select (e.g. another MathV360K subset)
    counts: Counter = field(default_factory=Counter)
    issues: list[Skipped] = field(default_factory=list)
    verifier: str = "spark_vl.rewards"  # or "unavailable" when the answer check could not run

    def add(self, issue: Skipped) -> None:
        self.counts[issue.kind] += 1
        if self.counts[issue.kind] <= LISTED_PER_KIND:
            self.issues.append(issue)

    @property
    def rows_dropped(self) -> int:
        return self.rows_seen - self.rows_kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_seen": self.rows_seen,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "rows_filtered": self.rows_filtered,
            "counts": {k: self.counts[k] for k in sorted(self.counts)},
            "verifier": self.verifier,
            "listed_per_kind": LISTED_PER_KIND,
            "issues": [i.to_dict() for i in self.issues],
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    def summary(self) -> str:
        lines = [f"{self.rows_kept}/{self.rows_seen} rows kept, {self.rows_dropped} dropped"]
        if self.rows_filtered:
            lines[0] += f" ({self.rows_filtered} more rows not selected)"
        for kind in sorted(self.counts, key=lambda k: -self.counts[k]):
            example = next((i for i in self.issues if i.kind == kind), None)
            hint = f"  e.g. row {example.row}: {example.reason}" if example else ""
            lines.append(f"  {kind:22s} {self.counts[kind]:7d}{hint[:160]}")
        return "\n".join(lines)


def read_image_bytes(ref: Any, root: str | Path | None) -> tuple[bytes, str | None]:
    """(encoded bytes, file-name hint) of an image reference without decoding it."""
    if isinstance(ref, Image.Image):
        buf = io.BytesIO()
        ref.save(buf, format="PNG")
        return buf.getvalue(), "png"
    path: str | None = None
    if isinstance(ref, dict):
        data, path = ref.get("bytes"), ref.get("path")
        if data:
            return bytes(data), path
    elif isinstance(ref, (bytes, bytearray)):
        return bytes(ref), None
    elif isinstance(ref, (str, Path)):
        path = str(ref)
    elif ref is not None:
        raise SkipRow(f"unsupported image reference of type {type(ref).__name__}", "undecodable_image")
    if not path:
        raise SkipRow(f"empty image reference {describe_ref(ref)}", "missing_image")
    if path.startswith("file://"):
        path = path[len("file://") :]
    file = Path(path)
    if not file.is_absolute() and root is not None:
        file = Path(root) / file
    if not file.is_file():
        raise SkipRow(f"image file {file} does not exist", "missing_image")
    return file.read_bytes(), file.name


def dhash(img: Image.Image) -> str:
    grey = img.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = grey.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
    return f"{bits:016x}"


def check_image(ref: Any, root: str | Path | None, cfg: ValidationConfig) -> CheckedImage:
    """Read, size-check, decode and hash one image; raises SkipRow(reason, kind)."""
    data, name = read_image_bytes(ref, root)
    label = name or describe_ref(ref)
    if not data:
        raise SkipRow(f"image {label} is empty (0 bytes)", "missing_image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise SkipRow(f"image {label}: {err}", "gigantic_image") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise SkipRow(f"image {label} cannot be read: {err}", "undecodable_image") from None
        w, h = img.size
        if w * h > cfg.max_image_pixels:
            raise SkipRow(f"image {label} is {w}x{h} = {w * h} pixels > {cfg.max_image_pixels}", "gigantic_image")
        if min(w, h) < cfg.min_image_side:
            raise SkipRow(f"image {label} is {w}x{h}, smaller than {cfg.min_image_side} px", "tiny_image")
        if max(w, h) / min(w, h) > cfg.max_aspect_ratio:
            raise SkipRow(f"image {label} is {w}x{h} (ratio > {cfg.max_aspect_ratio:g})", "extreme_aspect_ratio")
        ext = (img.format or "png").lower().replace("jpeg", "jpg")
        try:
            img.load()
            rgb = img.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise SkipRow(f"image {label}: {err}", "gigantic_image") from None
        except (OSError, ValueError, SyntaxError) as err:
            kind = "truncated_image" if "truncat" in str(err).lower() else "undecodable_image"
            raise SkipRow(f"image {label} cannot be decoded: {err}", kind) from None
    digest = hashlib.sha1(f"{w}x{h}:".encode() + rgb.tobytes()).hexdigest()
    return CheckedImage(ImageInfo(w, h, digest, dhash(rgb)), data, ext)


def check_images(
    refs: list[Any], root: str | Path | None, cfg: ValidationConfig
) -> list[CheckedImage | tuple[str, str]]:
    """Per image: the checked image, or (issue kind, detail). Picklable, for a worker pool."""
    out: list[CheckedImage | tuple[str, str]] = []
    for ref in refs:
        try:
            out.append(check_image(ref, root, cfg))
        except SkipRow as err:
            out.append((err.kind, str(err)))
    return out


class AnswerCheck:
    """Would a response boxing exactly the gold be scored correct by the project's verifier?"""

    def __init__(self) -> None:
        try:
            from spark_vl.rewards import check, extract_answer
        except ImportError:
            self.available = False
        else:
            self.available = True
            self._extract, self._check = extract_answer, check

    def __call__(self, sample: Sample) -> str | None:
        """None when fine (or when the verifier is unavailable), else the reason."""
        if not self.available:
            return None
        pred = self._extract(f"\\boxed{{{sample.answer}}}", mode="last")
        if pred is None:
            return f"the verifier extracts nothing from \\boxed{{{sample.answer[:80]}}}"
        result = self._check(
            pred, sample.answer, answer_type=sample.answer_type, choices=sample.choices,
            precision=sample.precision, tolerance=sample.tolerance,
        )
        if result.correct:
            return None
        why = f": {result.gold_error}" if result.gold_error else f" (decided by the {result.layer} layer)"
        return f"the verifier does not accept the gold {sample.answer[:80]!r} against itself{why}"


def check_text(sample: Sample) -> list[tuple[str, str]]:
    """(kind, detail) for the text problems of a sample."""
    try:
        check_row(sample)  # text that does not encode, values out of range: nothing else can be checked
    except SkipRow as err:
        return [(err.kind, str(err))]
    problems = []
    if not strip_image_placeholders(sample.problem or ""):
        problems.append(("empty_question", "the question is empty"))
    if not str(sample.answer or "").strip():
        problems.append(("missing_answer", "the gold answer is empty"))
    placeholders = len(IMAGE_PLACEHOLDER.findall(sample.problem or ""))
    if placeholders and placeholders != len(sample.images):
        problems.append(
            ("placeholder_mismatch", f"{placeholders} <image> placeholders but {len(sample.images)} images")
        )
    return problems


@dataclass
class Validator:
    """Stateful row checker (it remembers rows for duplicate detection)."""

    cfg: ValidationConfig = field(default_factory=ValidationConfig)
    report: Report = field(default_factory=Report)
    _seen: dict[tuple, str] = field(default_factory=dict)
    _answers: AnswerCheck | None = None

    def __post_init__(self) -> None:
        if self.cfg.check_answers:
            self._answers = AnswerCheck()
            if not self._answers.available:
                self.report.verifier = "unavailable"
        else:
            self.report.verifier = "skipped"

    def skip(self, skipped: Skipped) -> None:
        """Count a source row the recipe (or the loader) could not convert."""
        self.report.rows_seen += 1
        self.report.add(skipped)

    def check(
        self, sample: Sample, root: str | Path | None, checked: list[CheckedImage | tuple[str, str]] | None = None
    ) -> list[CheckedImage] | None:
        """The checked images of an acceptable sample, or None (issues recorded) for a rejected one.

        `checked` holds the per-image results of `check_images` when they were computed elsewhere
        (a worker pool); otherwise the images are checked here.
        """
        self.report.rows_seen += 1
        issues = [Skipped(sample.uid, k, d) for k, d in check_text(sample)]
        if checked is None:
            checked = check_images(sample.images, root, self.cfg)
        images: list[CheckedImage] = []
        for k, result in enumerate(checked):
            if isinstance(result, CheckedImage):
                images.append(result)
            else:
                issues.append(Skipped(sample.uid, result[0], f"image {k}: {result[1]}"))
        if not issues and self._answers is not None:
            reason = self._answers(sample)
            if reason:
                issues.append(Skipped(sample.uid, "unparseable_answer", reason))
        if not issues and self.cfg.dedupe:
            key = (tuple(im.info.hash for im in images), question_key(sample.problem))
            first = self._seen.get(key)
            if first is not None:
                issues.append(Skipped(sample.uid, "duplicate", f"same images and question as row {first}"))
            else:
                self._seen[key] = sample.uid
        if issues:
            kinds: set[str] = set()
            for issue in issues:  # one entry per kind and row: three bad images count once
                if issue.kind not in kinds:
                    kinds.add(issue.kind)
                    self.report.add(issue)
            return None
        self.report.rows_kept += 1
        return images
