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

from spark_vl.rewards.normalize import MAX_ANSWER_CHARS
from spark_vl.rewards.verify import MAX_CHOICES, comparison_problem
from spark_vl.types import Sample

MALFORMED = "malformed_row"  # the converter could not turn the row into a sample (reason in the record)
OUT_OF_RANGE = "out_of_range"  # a value the verifier or the prompt builder must not be handed (check_row)
BAD_TEXT = "bad_text"  # a string that is not valid Unicode text (a lone surrogate, an undecodable byte)

# Sizes a row may have; beyond them a row is skipped at load rather than costing time or memory later.
MAX_PROBLEM_CHARS = 200_000
MAX_CHOICE_CHARS = 2_000
MAX_IMAGES_PER_ROW = 64


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

    def __post_init__(self) -> None:
        # Reports print and write these: a row id or reason holding a lone surrogate must not crash them.
        for name in ("row", "reason"):
            value = str(getattr(self, name))
            object.__setattr__(self, name, value.encode("utf-8", "backslashreplace").decode("utf-8"))

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


def unencodable(value: Any, where: str = "") -> str | None:
    """The first string inside `value` (str, list, tuple or dict, keys included) that is not valid UTF-8 text,
    as "<where>: <position>", or None. A lone surrogate ("\\ud800" is valid JSON) or a byte a file could not
    decode (read with errors="surrogateescape") would crash the tokenizer, pyarrow or a JSON writer later."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            code = ord(value[err.start])
            what = (f"byte 0x{code - 0xDC00:02X} that is not UTF-8" if 0xDC80 <= code <= 0xDCFF
                    else f"lone surrogate U+{code:04X}")
            return f"{where or 'text'}: a {what} at character {err.start}"
        return None
    if isinstance(value, dict):
        items = [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
        items += [(f"{where or 'row'} key", k) for k in value]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for name, item in items:
        found = unencodable(item, name)
        if found is not None:
            return found
    return None


def check_row(sample: Sample) -> None:
    """Raise SkipRow when a sample holds text that does not encode or a value outside what the verifier and the
    prompt builder accept (precision, tolerance, number of choices, sizes). Every loader calls this, so a bad value
    costs one skipped row at load instead of a hang or a crash when the row is drawn."""
    texts = {"uid": sample.uid, "problem": sample.problem, "answer": sample.answer, "choices": sample.choices,
             "solution": sample.solution, "answer_raw": sample.answer_raw, "category": sample.category,
             "source": sample.source, "meta": sample.meta, "images": sample.images}
    bad = unencodable(texts)
    if bad is not None:
        raise SkipRow(f"text is not valid UTF-8: {bad}", BAD_TEXT)
    problem = comparison_problem(sample.precision, sample.tolerance)
    if problem is not None:
        raise SkipRow(problem, OUT_OF_RANGE)
    if isinstance(sample.answer, str) and len(sample.answer) > MAX_ANSWER_CHARS:
        raise SkipRow(f"the gold answer has {len(sample.answer)} characters (at most {MAX_ANSWER_CHARS})",
                      OUT_OF_RANGE)
    if isinstance(sample.problem, str) and len(sample.problem) > MAX_PROBLEM_CHARS:
        raise SkipRow(f"the question has {len(sample.problem)} characters (at most {MAX_PROBLEM_CHARS})", OUT_OF_RANGE)
    if sample.choices is not None:
        if len(sample.choices) > MAX_CHOICES:
            raise SkipRow(f"{len(sample.choices)} choices (at most {MAX_CHOICES}, A-Z)", OUT_OF_RANGE)
        longest = max((len(c) for c in sample.choices if isinstance(c, str)), default=0)
        if longest > MAX_CHOICE_CHARS:
            raise SkipRow(f"a choice has {longest} characters (at most {MAX_CHOICE_CHARS})", OUT_OF_RANGE)
    if len(sample.images) > MAX_IMAGES_PER_ROW:
        raise SkipRow(f"{len(sample.images)} images (at most {MAX_IMAGES_PER_ROW})", OUT_OF_RANGE)
