"""Read any dataset spec into `Sample`s; the prepared format (written by `spark_vl.prep.writer`).

    result = load_samples("data/geometry3k")            # prepared dir (manifest.json + parquet shards)
    result = load_samples("rows.jsonl")                  # plain parquet / json / jsonl with canonical-ish columns
    result = load_samples("hf_saved_dataset@train")      # a datasets save_to_disk folder (a split of it)
    load_image(result.samples[0].images[0], result.root) # image refs resolve against result.root

Prepared format (one folder per split; see docs/DATA.md):
    manifest.json                 what was prepared, from what, how (counts, histograms, command)
    report.json                   the validation report (every dropped row with its reason)
    data/part-00000.parquet ...   rows in the canonical schema (`SCHEMA`), `rows_per_shard` each
    images/ab/abcdef....png       images when stored alongside (content-addressed, shared across rows)
Images are either embedded (struct {"bytes": <file>, "path": null}) or alongside (struct {"bytes": null,
"path": "images/..."}): the same column type as an HF image feature, so `datasets` reads the shards too.

Loading never decodes an image: a row's refs are the stored structs. Raw files are mapped onto the
canonical record through column aliases (`ALIASES`) and the gold is normalised as a recipe would;
rows that cannot be mapped are skipped and listed in `LoadResult.skipped` (`rows.Skipped` records).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spark_vl.data.answers import normalize_gold, parse_options
from spark_vl.data.images import ImageInfo
from spark_vl.data.rows import MALFORMED, Skipped, SkipRow, check_row, image_list
from spark_vl.data.sources import SourceError, open_source, split_spec
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.types import ANSWER_TYPES, Sample

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("answer_raw", pa.string()),
        ("answer_type", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("precision", pa.int64()),
        ("tolerance", pa.float64()),
        ("source", pa.string()),
        ("category", pa.string()),
        ("solution", pa.string()),
        ("difficulty", pa.string()),  # JSON object, e.g. {"passrate_7b": 0.5}; null when unknown
        ("group_key", pa.string()),
        ("meta", pa.string()),  # JSON object
        ("images", pa.list_(IMAGE_STRUCT)),
        ("image_hashes", pa.list_(pa.string())),
        ("image_dhashes", pa.list_(pa.string())),
        ("image_widths", pa.list_(pa.int32())),
        ("image_heights", pa.list_(pa.int32())),
    ]
)
# Raw-file columns accepted for each canonical field, in order of preference.
ALIASES = {
    "uid": ("uid", "id", "qid", "pid", "index", "sample_id"),
    "problem": ("problem", "question", "prompt", "query"),
    "answer": ("answer", "ground_truth", "gt_answer", "label", "solution"),
    "images": ("images", "image", "image_path", "image_paths", "decoded_image"),
    "choices": ("choices", "options"),
}


@dataclass
class LoadResult:
    """Samples of one spec plus what could not be read and where relative image paths resolve."""

    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    root: Path | None = None
    manifest: dict[str, Any] | None = None  # prepared datasets only
    image_info: list[list[ImageInfo]] | None = None  # prepared datasets only: per sample, per image

    def __len__(self) -> int:
        return len(self.samples)


# --------------------------------------------------------------------------------------------- reading


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())


def _load_prepared(path: Path) -> LoadResult:
    manifest = read_manifest(path)
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise SourceError(f"{path} has format_version {manifest['format_version']}; this spark-vl reads "
                          f"<= {FORMAT_VERSION}: upgrade spark-vl")
    samples: list[Sample] = []
    infos: list[list[ImageInfo]] = []
    skipped: list[Skipped] = []
    for shard in manifest["shards"]:
        file = path / shard["file"]
        if not file.is_file():
            raise SourceError(f"{path}: shard {shard['file']} listed in manifest.json is missing")
        table = pq.read_table(file)
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        n = table.num_rows
        for i in range(n):
            difficulty = cols["difficulty"][i]
            sample = Sample(
                uid=cols["uid"][i],
                problem=cols["problem"][i],
                answer=cols["answer"][i],
                images=cols["images"][i] or [],
                choices=cols["choices"][i],
                answer_type=cols["answer_type"][i],
                precision=cols["precision"][i],
                tolerance=cols["tolerance"][i],
                source=cols["source"][i] or "",
                category=cols["category"][i] or "",
                answer_raw=cols["answer_raw"][i],
                solution=cols["solution"][i],
                difficulty=json.loads(difficulty) if difficulty else None,
                group_key=cols["group_key"][i],
                meta=json.loads(cols["meta"][i]) if cols["meta"][i] else {},
            )
            try:  # written by an older or another tool: the same bounds as any other source
                check_row(sample)
            except SkipRow as err:
                skipped.append(Skipped(sample.uid, err.kind, str(err)))
                continue
            samples.append(sample)
            infos.append(
                [
                    ImageInfo(w, h, hh, dh)
                    for w, h, hh, dh in zip(
                        cols["image_widths"][i] or [], cols["image_heights"][i] or [],
                        cols["image_hashes"][i] or [], cols["image_dhashes"][i] or [],
                        strict=True,
                    )
                ]
            )
    return LoadResult(samples, skipped, path, manifest, infos)


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


# Raw pass-rate columns (ViRL39K's release and conversions) -> the canonical `difficulty` keys.
PASSRATE_KEYS = {"passrate_32btrained": "passrate_32b", "passrate_7bbase": "passrate_7b",
                 "passrate_7buntrained": "passrate_7b"}


def _passrates(row: dict[str, Any]) -> dict[str, float] | None:
    """Pass-rate columns as {key: rate}; -1 ("not annotated"), NaN, empty or out-of-range values are unknown."""
    rates: dict[str, float] = {}
    for column, value in row.items():
        low = column.lower()
        if not low.startswith("passrate") or value in (None, ""):
            continue
        try:
            rate = float(value)
        except (TypeError, ValueError):
            continue
        key = PASSRATE_KEYS.get(low, low)
        if 0.0 <= rate <= 1.0 and key not in rates:  # NaN fails the comparison too
            rates[key] = rate
    return rates or None


def _whole(value: Any) -> Any:
    """2.0 -> 2 (a column with nulls reads back as floats); anything else unchanged, for `check_row` to judge."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value


def row_to_sample(row: dict[str, Any], row_id: str, source: str) -> Sample:
    """Map a raw row with canonical or aliased columns onto a Sample; raises ValueError with the reason."""
    if "__error__" in row:
        raise ValueError(row["__error__"])
    problem = _pick(row, ALIASES["problem"])
    raw_answer = _pick(row, ALIASES["answer"])
    if not isinstance(problem, str):
        raise ValueError(f"no question text (looked for {', '.join(ALIASES['problem'])})")
    if raw_answer is None or isinstance(raw_answer, (list, dict)):
        raise ValueError(f"no scalar gold answer (looked for {', '.join(ALIASES['answer'])})")
    choices = _pick(row, ALIASES["choices"])
    if isinstance(choices, str):
        choices = None
    choices = [str(c) for c in choices] if choices else parse_options(problem)
    answer_type = row.get("answer_type")
    if answer_type in ANSWER_TYPES:
        answer = str(raw_answer)
    else:
        gold = normalize_gold(raw_answer, choices)
        answer, answer_type = gold.answer, gold.answer_type
    difficulty = row.get("difficulty")
    if isinstance(difficulty, str):
        difficulty = json.loads(difficulty) if difficulty else None
    if difficulty is None:
        difficulty = _passrates(row)
    meta = row.get("meta")
    if isinstance(meta, str):
        meta = json.loads(meta) if meta else {}
    uid = _pick(row, ALIASES["uid"])
    sample = Sample(
        uid=str(uid) if uid not in (None, "") else f"{source}-{row_id}",
        problem=problem,
        answer=answer,
        images=image_list(_pick(row, ALIASES["images"])),
        choices=choices,
        answer_type=answer_type,
        precision=_whole(row.get("precision")),
        tolerance=row.get("tolerance"),
        source=str(row.get("source") or source),
        category=str(row.get("category") or ""),
        answer_raw=str(row["answer_raw"]) if row.get("answer_raw") is not None else str(raw_answer),
        solution=row.get("solution") if "answer" in row else None,
        difficulty=difficulty,
        group_key=row.get("group_key"),
        meta=meta if isinstance(meta, dict) else {},
    )
    check_row(sample)
    return sample


def load_samples(spec: str) -> LoadResult:
    """Samples of a prepared dir, a parquet/json/jsonl file or a save_to_disk folder (`path@split`).

    `builtin:synthetic` gives the 2,000-row built-in synthetic set (the trainer builds its own from config).
    Raises SourceError for a spec that cannot be read at all or lacks question/answer columns.
    """
    if spec == "builtin:synthetic":
        return LoadResult(synthetic_samples(2000), [], None)
    path_text, _ = split_spec(spec)
    path = Path(path_text).expanduser()
    if path.is_dir() and is_prepared(path):
        return _load_prepared(path)
    if not path.exists():
        raise SourceError(f"dataset {spec} does not exist (expected a prepared dir, a parquet/json/jsonl file "
                          "or a datasets folder)")
    source = open_source(spec)
    missing = [f for f in ("problem", "answer") if not any(a in source.columns for a in ALIASES[f])]
    if missing:
        expected = "; ".join(f"{f}: one of {', '.join(ALIASES[f])}" for f in missing)
        raise SourceError(f"{source.description} has columns {source.columns}; expected {expected}. "
                          "For other layouts use `spark-vl data prepare generic` with column flags.")
    name = path.stem if path.is_file() else path.name
    samples, skipped = [], []
    for row_id, row in source.rows():
        try:
            samples.append(row_to_sample(row, row_id, name))
        except SkipRow as err:
            skipped.append(Skipped(row_id, err.kind, str(err)))
        except (ValueError, TypeError, json.JSONDecodeError) as err:
            skipped.append(Skipped(row_id, MALFORMED, str(err)))
    return LoadResult(samples, skipped, source.root)
