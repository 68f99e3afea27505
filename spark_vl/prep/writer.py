"""Write the prepared format (`spark_vl.data.prepared` describes it and reads it back).

`PreparedWriter` writes validated samples with their checked images as shards + images + report.json +
manifest.json (last, so a finished folder has one). `write_subset` rewrites chosen rows of a loaded dataset
(decontamination, difficulty filtering) as a new prepared dataset, reusing the recorded image hashes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spark_vl.data.images import ImageInfo
from spark_vl.data.prepared import FORMAT_VERSION, MANIFEST, SCHEMA, LoadResult
from spark_vl.prep.validate import CheckedImage, Report, ValidationConfig, check_image, read_image_bytes
from spark_vl.types import ANSWER_TYPES, Sample


def _json_or_none(value: dict | None) -> str | None:
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else None


class PreparedWriter:
    """Write samples (already validated, with their checked images) as a prepared dataset folder."""

    def __init__(self, out: str | Path, image_mode: str = "files", rows_per_shard: int = 1000):
        if image_mode not in ("files", "embed"):
            raise ValueError(f"image_mode must be 'files' or 'embed', got {image_mode!r}")
        self.out = Path(out)
        self.image_mode = image_mode
        self.rows_per_shard = max(1, rows_per_shard)
        self.shards: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self.answer_types: Counter = Counter()
        self.categories: Counter = Counter()
        self.images_per_row: Counter = Counter()
        self.widths: list[int] = []
        self.heights: list[int] = []
        self.image_bytes = 0
        self.rows = 0
        (self.out / "data").mkdir(parents=True, exist_ok=True)
        if (self.out / MANIFEST).exists():
            (self.out / MANIFEST).unlink()  # a half-rewritten folder must not look finished
        for stale in (self.out / "data").glob("part-*.parquet"):  # shards of an earlier (longer) run
            stale.unlink()

    def _store_image(self, image: CheckedImage) -> dict[str, Any]:
        self.image_bytes += len(image.data)
        if self.image_mode == "embed":
            return {"bytes": image.data, "path": None}
        digest = hashlib.sha1(image.data).hexdigest()
        rel = f"images/{digest[:2]}/{digest}.{image.ext}"
        file = self.out / rel
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(".tmp")
            tmp.write_bytes(image.data)
            tmp.replace(file)
        return {"bytes": None, "path": rel}

    def add(self, sample: Sample, images: list[CheckedImage]) -> None:
        if sample.answer_type not in ANSWER_TYPES:
            raise ValueError(f"row {sample.uid}: answer_type {sample.answer_type!r} is not one of {ANSWER_TYPES}")
        self._rows.append(
            {
                "uid": sample.uid,
                "problem": sample.problem,
                "answer": sample.answer,
                "answer_raw": sample.answer_raw if sample.answer_raw is not None else sample.answer,
                "answer_type": sample.answer_type,
                "choices": sample.choices,
                "precision": sample.precision,
                "tolerance": sample.tolerance,
                "source": sample.source,
                "category": sample.category,
                "solution": sample.solution,
                "difficulty": _json_or_none(sample.difficulty),
                "group_key": sample.group_key,
                "meta": json.dumps(sample.meta, ensure_ascii=False, sort_keys=True, default=str),
                "images": [self._store_image(im) for im in images],
                "image_hashes": [im.info.hash for im in images],
                "image_dhashes": [im.info.dhash for im in images],
                "image_widths": [im.info.width for im in images],
                "image_heights": [im.info.height for im in images],
            }
        )
        self.rows += 1
        self.answer_types[sample.answer_type] += 1
        self.categories[sample.category or "-"] += 1
        self.images_per_row[len(images)] += 1
        self.widths.extend(im.info.width for im in images)
        self.heights.extend(im.info.height for im in images)
        if len(self._rows) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        name = f"data/part-{len(self.shards):05d}.parquet"
        table = pa.Table.from_pylist(self._rows, schema=SCHEMA)
        tmp = self.out / (name + ".tmp")
        pq.write_table(table, tmp, row_group_size=256)
        tmp.replace(self.out / name)
        self.shards.append({"file": name, "rows": len(self._rows)})
        self._rows = []

    def _image_stats(self) -> dict[str, Any]:
        def spread(values: list[int]) -> dict[str, float] | None:
            if not values:
                return None
            return {"min": min(values), "median": statistics.median(values), "max": max(values)}

        pixels = [w * h for w, h in zip(self.widths, self.heights, strict=True)]
        return {
            "storage": self.image_mode,
            "count": len(self.widths),
            "bytes": self.image_bytes,
            "per_row": {str(k): v for k, v in sorted(self.images_per_row.items())},
            "width": spread(self.widths),
            "height": spread(self.heights),
            "pixels": spread(pixels),
        }

    def finish(self, *, name: str, source: str, licence: str, recipe: str, recipe_version: str, command: str,
               report: Report | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flush the last shard, write report.json and manifest.json (last, so a finished folder has one)."""
        self._flush()
        if report is not None:
            report.write(self.out / "report.json")
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "recipe": recipe,
            "recipe_version": recipe_version,
            "source": source,
            "licence": licence,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "counts": {
                "rows": self.rows,
                "rows_seen": report.rows_seen if report else self.rows,
                "rows_not_selected": report.rows_filtered if report else 0,
                "dropped": dict(sorted(report.counts.items())) if report else {},
                "answer_check": report.verifier if report else "skipped",
            },
            "answer_types": dict(self.answer_types.most_common()),
            "categories": dict(self.categories.most_common(50)),
            "images": self._image_stats(),
            "shards": self.shards,
            **(extra or {}),
        }
        (self.out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        return manifest


def checked_images(sample: Sample, root: Path | None, infos: list[ImageInfo] | None) -> list[CheckedImage]:
    """The stored images of a loaded sample as CheckedImage, reusing recorded hashes/sizes when known."""
    if infos is None or len(infos) != len(sample.images):
        return [check_image(ref, root, ValidationConfig()) for ref in sample.images]
    out = []
    for ref, info in zip(sample.images, infos, strict=True):
        data, name = read_image_bytes(ref, root)
        ext = Path(name).suffix.lstrip(".").lower() if name and "." in name else "png"
        out.append(CheckedImage(info, data, ext or "png"))
    return out


def write_subset(result: LoadResult, keep: list[int], out: str | Path, *, recipe: str, command: str,
                 report: Report | None = None, image_mode: str | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write rows `keep` of a loaded dataset as a new prepared dataset (images copied, hashes kept)."""
    manifest = result.manifest or {}
    mode = image_mode or manifest.get("images", {}).get("storage", "files")
    writer = PreparedWriter(out, image_mode=mode)
    for i in keep:
        sample = result.samples[i]
        writer.add(sample, checked_images(sample, result.root, result.image_info[i] if result.image_info else None))
    return writer.finish(
        name=Path(out).name,
        source=manifest.get("source", str(result.root)),
        licence=manifest.get("licence", "unknown"),
        recipe=recipe,
        recipe_version=str(manifest.get("recipe_version", "")),
        command=command,
        report=report,
        extra={"derived_from": {k: manifest.get(k) for k in ("name", "recipe", "source", "created")},
               **(extra or {})},
    )
