"""Raw row -> Sample: the vocabulary shared by dataset recipes, benchmark adapters and the loaders.

A converter is a plain function `convert(row: dict, ctx: RowContext) -> Sample`. Dataset recipes
(`spark_vl.prep.recipes`, files in data_recipes/) and benchmark adapters (`spark_vl.eval.benchmarks`) both
write them with the helpers here, and raise `SkipRow(reason, kind)` for a row that cannot become a sample.

Whatever reads rows reports what it dropped as `Skipped(row, kind, reason)`: which row (its id, or
"<file>:<id>"), a short kind that groups it in the counts ("malformed_row", "missing_image", "duplicate_uid",
...) and the reason, naming the column or value that was wrong. The loaders (`LoadResult.skipped`,
`LoadedBenchmark.skipped`) and the validation report (`prep.validate.Report.issues`) all hold this record.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MALFORMED = "malformed_row"  # the converter could not turn the row into a sample (reason in the record)


class SkipRow(ValueError):
    """Raised by a converter for a row that cannot become a sample; `kind` groups it in counts and reports."""

    def __init__(self, reason: str, kind: str = MALFORMED):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class Skipped:
    """A row that was dropped: which one, what kind of problem, and why."""

    row: str  # the source's row id (a uid, a row number, "split#index"), prefixed "<spec>:" where sources mix
    kind: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class RowContext:
    """Where a raw row came from, and what its converter may need besides the row."""

    row_id: str  # the source's id for the row
    index: int  # position in the source (or in the split)
    root: Path | None = None  # where the source's relative image paths resolve
    split: str | None = None  # the split it was read from (benchmarks)
    layout: str = ""  # which of a recipe's column layouts the source matched
    args: argparse.Namespace | None = None  # a recipe's command-line options
    state: dict[str, Any] = field(default_factory=dict)  # whatever a recipe's `setup` prepared (an image index)


def require(row: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` present in `row` with a value; SkipRow naming them (and the columns) otherwise."""
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    raise SkipRow(f"row has no {' / '.join(repr(k) for k in keys)} (columns: {', '.join(sorted(row))})")


def image_list(value: Any) -> list[Any]:
    """A column value as a list of image refs (one struct/path/bytes, a list of them, or nothing)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


def image_refs(row: dict[str, Any], *keys: str) -> list[Any]:
    """The first present image column among `keys` (decoded struct first, then a path), as a list of refs.

    Unlike `image_list`, a None inside a list is kept: a benchmark item with a missing image is reported when
    its prompt is built rather than silently evaluated without it.
    """
    for key in keys:
        value = row.get(key)
        if value not in (None, "", b""):
            return list(value) if isinstance(value, list) else [value]
    return []
