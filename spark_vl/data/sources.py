"""Open a raw dataset source as a stream of plain rows without decoding any image.

A source is one of
  - a local `datasets` folder written by `save_to_disk` (a Dataset, or a DatasetDict: pick `split`);
  - a parquet file, or a folder of parquet files (HF hub layout: data/train-*.parquet);
  - a JSON file (an array of records, or {"data": [...]}) or a JSONL file;
  - a folder of images plus one JSON/JSONL annotation file (image paths relative to the folder);
  - a hub id `owner/name` (needs the network; `datasets.load_dataset(..., split=split)`).
`path@split` selects a split (EasyR1's spelling). Image columns come back as stored: HF image structs
{"bytes", "path"}, raw bytes, or path strings; relative paths resolve against `RowSource.root`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
ID_COLUMNS = ("uid", "id", "qid", "pid", "sample_id", "index")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, unknown layout, missing columns)."""


class MissingSplitError(SourceError):
    """The source exists but holds no rows of the requested split (a benchmark folder with some splits only)."""


@dataclass
class RowSource:
    """Rows of one split of a raw source: `rows()` yields (row id, dict of column values)."""

    description: str  # what was opened, for messages and the manifest
    columns: list[str]
    root: Path | None  # where relative image paths resolve
    num_rows: int | None
    _batches: Any = field(repr=False, default=None)  # () -> iterator of lists of row dicts
    id_column: str | None = None

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        index = 0
        for batch in self._batches():
            for row in batch:
                rid = row.get(self.id_column) if self.id_column else None
                yield (str(rid) if rid not in (None, "") else f"row{index}"), row
                index += 1


def split_spec(spec: str) -> tuple[str, str | None]:
    """"path@split" -> (path, split); a bare path -> (path, None)."""
    if "@" in spec and not Path(spec).exists():
        path, split = spec.rsplit("@", 1)
        return path, split or None
    return spec, None


def is_datasets_folder(path: Path) -> bool:
    markers = ("dataset_dict.json", "state.json", "dataset_info.json")
    return path.is_dir() and any((path / f).is_file() for f in markers)


def _from_arrow_dataset(ds, description: str, root: Path | None) -> RowSource:
    # The arrow format hands back stored values: image structs stay {"bytes", "path"}, nothing is decoded.
    arrow = ds.with_format("arrow")

    def batches():
        for table in arrow.iter(batch_size=256):
            yield table.to_pylist()

    return RowSource(description, list(ds.column_names), root, len(ds), batches)


def _open_datasets_folder(path: Path, split: str | None) -> RowSource:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) != 1:
                raise SourceError(f"{path} holds splits {names}; choose one with {path}@<split>")
            split = names[0]
        if split not in ds:
            raise MissingSplitError(f"{path} has no split {split!r}; found splits {names}")
        ds = ds[split]
    return _from_arrow_dataset(ds, f"datasets folder {path}" + (f" split {split}" if split else ""), path)


def _parquet_files(path: Path, split: str | None) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet"))
    if split is not None:
        picked = [p for p in files if p.name.startswith(f"{split}-") or p.name.startswith(f"{split}.")
                  or p.parent.name == split]
        if not picked:
            found = [p.name for p in files]
            raise MissingSplitError(f"no parquet file of split {split!r} under {path}; found {found}")
        files = picked
    return files


def _open_parquet(path: Path, split: str | None) -> RowSource:
    files = _parquet_files(path, split)
    try:
        schemas = [pq.read_schema(f) for f in files]
        num_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceError(f"cannot read parquet {path}: {err}") from None

    def batches():
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                yield batch.to_pylist()

    root = path if path.is_dir() else path.parent
    return RowSource(f"parquet {path}", list(schemas[0].names), root, num_rows, batches)


def _as_record(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"__error__": f"record is a {type(value).__name__}, not an object"}


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON array / {"data": [...]} / JSON-lines file. Bad lines become {"__error__": ...}.

    Bytes that are not UTF-8 are kept as lone surrogates (errors="surrogateescape") instead of failing the whole
    file; the row holding one is then skipped as `bad_text` by `rows.check_row`, like a "\\ud800" escape."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    stripped = text.lstrip()
    if path.suffix in (".jsonl", ".ndjson") or (stripped and stripped[0] == "{" and "\n{" in stripped):
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                records.append({"__error__": f"line {lineno} is not JSON: {err.msg}"})
        return [_as_record(r) for r in records]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SourceError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise SourceError(f"{path} is a JSON object; expected an array of records or one list inside it")
        data = lists[0]
    if not isinstance(data, list):
        raise SourceError(f"{path} holds a JSON {type(data).__name__}; expected an array of records")
    return [_as_record(r) for r in data]


def _open_json(path: Path, root: Path | None) -> RowSource:
    records = read_json_records(path)
    columns: list[str] = []
    for rec in records[:1000]:
        columns.extend(k for k in rec if k not in columns and k != "__error__")
    return RowSource(f"json {path}", columns, root or path.parent, len(records), lambda: iter([records]))


def _open_hub(hub_id: str, split: str | None) -> RowSource:
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, split=split or "train")
    except Exception as err:  # offline, unknown id, gated: say so in one line
        raise SourceError(
            f"{hub_id} is not a local file or folder, and loading it as a hub dataset (split {split or 'train'}) "
            f"failed: {type(err).__name__}: {err}. Offline? Download it elsewhere and pass the local folder or "
            "parquet files."
        ) from None
    return _from_arrow_dataset(ds, f"hub {hub_id} split {split or 'train'}", None)


def open_source(spec: str, split: str | None = None, image_root: str | Path | None = None) -> RowSource:
    """Open `spec` (see module docstring); `split` overrides an `@split` suffix."""
    path_text, spec_split = split_spec(spec)
    split = split or spec_split
    path = Path(path_text).expanduser()
    root = Path(image_root).expanduser() if image_root else None
    if path.is_dir():
        if is_datasets_folder(path):
            source = _open_datasets_folder(path, split)
        elif any(path.rglob("*.parquet")):
            source = _open_parquet(path, split)
        else:
            notes = sorted(p for p in path.iterdir() if p.suffix in JSON_SUFFIXES)
            if split is not None:
                notes = [p for p in notes if split in p.stem] or notes
            if len(notes) != 1:
                raise SourceError(
                    f"{path} is a folder without parquet files; expected exactly one JSON/JSONL annotation file "
                    f"next to the images, found {[p.name for p in notes]} (pass the file itself to choose)"
                )
            source = _open_json(notes[0], root or path)
    elif path.is_file():
        if path.suffix == ".parquet":
            source = _open_parquet(path, split)
        elif path.suffix in JSON_SUFFIXES:
            source = _open_json(path, root)
        else:
            raise SourceError(f"{path}: unsupported file type {path.suffix!r}; expected .parquet, .json or .jsonl")
    elif HUB_ID.match(path_text) and not path_text.startswith((".", "/")):
        source = _open_hub(path_text, split)
    else:
        raise SourceError(f"source {path_text} does not exist (not a file, folder or hub id owner/name)")
    if root is not None:
        source.root = root
    # Reports name rows by the dataset's own id when it has one, else by position ("row17").
    source.id_column = next((c for c in ID_COLUMNS if c in source.columns), None)
    return source
