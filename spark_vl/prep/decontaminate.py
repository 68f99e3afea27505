"""Drop training rows that overlap an evaluation benchmark (same image, or same normalised question).

    spark-vl data decontaminate --data data/virl39k --against ~/bench/mmk12_test.parquet \\
        ~/bench/mathvista_testmini --out data/virl39k-clean

Reference sets are anything `open_source` reads (parquet, json/jsonl, `datasets` folders, prepared
dirs); their question is read from the first present column of `QUESTION_COLUMNS` and their images
from every column of `IMAGE_COLUMNS` (MMMU's image_1..image_7 included), so benchmark files need no
conversion. Matching:
  - image: identical decoded pixels (`ImageInfo.hash`); with `perceptual=True` also an identical 64-bit
    dHash (catches re-encoded or resized copies; blank-ish images are never matched this way);
  - question: identical `question_key` (placeholders, "Hint/Question:" prefixes, options, case and
    punctuation removed), only for keys of at least `min_question_chars` characters: short generic
    questions ("Find x.") appear in many unrelated items and would drop innocent rows.
The report lists every dropped row with the benchmark row it matched and why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spark_vl.data.answers import question_key
from spark_vl.data.prepared import LoadResult, is_prepared, load_samples
from spark_vl.data.rows import Skipped, SkipRow
from spark_vl.data.sources import open_source, split_spec
from spark_vl.prep.validate import Report, ValidationConfig, check_image
from spark_vl.prep.writer import checked_images, write_subset

QUESTION_COLUMNS = ("problem", "question", "query", "question_for_eval", "prompt")
IMAGE_COLUMNS = ("images", "image", "decoded_image", "image_path", "image_paths",
                 *(f"image_{k}" for k in range(1, 8)))


@dataclass
class DecontaminationConfig:
    match_images: bool = True
    match_questions: bool = True
    perceptual: bool = False
    min_question_chars: int = 40


@dataclass
class ReferenceIndex:
    """Hashes and question keys of the evaluation sets, each mapped to "benchmark:row" of its first owner."""

    images: dict[str, str] = field(default_factory=dict)
    dhashes: dict[str, str] = field(default_factory=dict)
    questions: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    unreadable_images: int = 0
    sets: list[str] = field(default_factory=list)


def _informative(dhash: str) -> bool:
    bits = bin(int(dhash, 16)).count("1")
    return 8 <= bits <= 56  # near-blank pictures hash to (almost) all zeros or ones


def _add(index: ReferenceIndex, owner: str, question: str | None, infos: list[Any]) -> None:
    index.rows += 1
    if question:
        index.questions.setdefault(question_key(question), owner)
    for info in infos:
        index.images.setdefault(info.hash, owner)
        if _informative(info.dhash):
            index.dhashes.setdefault(info.dhash, owner)


def build_index(specs: list[str]) -> ReferenceIndex:
    """Read every reference set once (images decoded and hashed, unless a prepared dir recorded them)."""
    index = ReferenceIndex()
    cfg = ValidationConfig(max_image_pixels=10**9, min_image_side=1, max_aspect_ratio=10**6)
    for spec in specs:
        name = Path(split_spec(spec)[0]).stem
        index.sets.append(spec)
        if is_prepared(split_spec(spec)[0]):
            result = load_samples(spec)
            for sample, infos in zip(result.samples, result.image_info or [], strict=True):
                _add(index, f"{name}:{sample.uid}", sample.problem, infos)
            continue
        source = open_source(spec)
        for row_id, row in source.rows():
            question = next((row[c] for c in QUESTION_COLUMNS if isinstance(row.get(c), str)), None)
            infos = []
            for column in IMAGE_COLUMNS:
                value = row.get(column)
                for ref in value if isinstance(value, list) else [value]:
                    if ref is None or ref == "":
                        continue
                    try:
                        infos.append(check_image(ref, source.root, cfg).info)
                    except SkipRow:
                        index.unreadable_images += 1
            _add(index, f"{name}:{row_id}", question, infos)
    return index


def find_overlap(problem: str, infos: list[Any], index: ReferenceIndex, cfg: DecontaminationConfig) -> str | None:
    """Why this row overlaps the references ("image ... matches ..."), or None."""
    if cfg.match_images:
        for k, info in enumerate(infos):
            if info.hash in index.images:
                return f"image {k} identical to {index.images[info.hash]}"
            if cfg.perceptual and _informative(info.dhash) and info.dhash in index.dhashes:
                return f"image {k} perceptually identical (dHash) to {index.dhashes[info.dhash]}"
    if cfg.match_questions:
        key = question_key(problem)
        if len(key) >= cfg.min_question_chars and key in index.questions:
            return f"question identical to {index.questions[key]}"
    return None


@dataclass
class DecontaminationResult:
    kept: list[int]
    dropped: list[Skipped]
    index: ReferenceIndex

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self.kept) + len(self.dropped),
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "dropped_by_image": sum(1 for i in self.dropped if i.reason.startswith("image")),
            "dropped_by_question": sum(1 for i in self.dropped if i.reason.startswith("question")),
            "reference_sets": self.index.sets,
            "reference_rows": self.index.rows,
            "reference_unreadable_images": self.index.unreadable_images,
        }


def decontaminate(result: LoadResult, index: ReferenceIndex, cfg: DecontaminationConfig) -> DecontaminationResult:
    kept, dropped = [], []
    for i, sample in enumerate(result.samples):
        if result.image_info is not None:
            infos = result.image_info[i]
        else:
            try:
                infos = [im.info for im in checked_images(sample, result.root, None)]
            except SkipRow as err:
                dropped.append(Skipped(sample.uid, "unreadable_image", str(err)))
                continue
        reason = find_overlap(sample.problem, infos, index, cfg)
        if reason:
            dropped.append(Skipped(sample.uid, "contaminated", reason))
        else:
            kept.append(i)
    return DecontaminationResult(kept, dropped, index)


def run_decontamination(data: str, against: list[str], out: str, cfg: DecontaminationConfig,
                        command: str) -> DecontaminationResult:
    """Load `data`, index `against`, write the clean rows to `out` with report.json and the manifest."""
    result = load_samples(data)
    index = build_index(against)
    outcome = decontaminate(result, index, cfg)
    report = Report(rows_seen=len(result.samples), rows_kept=len(outcome.kept), verifier="skipped")
    for issue in outcome.dropped:
        report.add(issue)
    write_subset(result, outcome.kept, out, recipe="decontaminate", command=command, report=report,
                 extra={"decontamination": {**outcome.summary(), "config": asdict(cfg)}})
    (Path(out) / "decontamination.json").write_text(
        json.dumps({**outcome.summary(), "config": asdict(cfg), "dropped": [i.to_dict() for i in outcome.dropped]},
                   indent=1, ensure_ascii=False) + "\n"
    )
    return outcome
