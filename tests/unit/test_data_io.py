"""The prepared format: the universal reader (spark_vl.data.prepared) and the writer (spark_vl.prep.writer)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_vl.data.images import load_image
from spark_vl.data.prepared import SCHEMA, LoadResult, load_samples
from spark_vl.data.sources import SourceError, open_source
from spark_vl.prep.validate import ValidationConfig, Validator
from spark_vl.prep.writer import PreparedWriter, write_subset
from spark_vl.types import Sample

_spec = importlib.util.spec_from_file_location(
    "data_builders", Path(__file__).resolve().parents[1] / "assets/data/builders.py"
)
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def write_prepared(out: Path, samples: list[Sample], mode: str, rows_per_shard: int = 2) -> dict:
    validator = Validator(ValidationConfig(check_answers=False))
    writer = PreparedWriter(out, image_mode=mode, rows_per_shard=rows_per_shard)
    for s in samples:
        writer.add(s, validator.check(s, None))
    return writer.finish(name="t", source="unit", licence="MIT", recipe="unit", recipe_version="1",
                         command="pytest", report=validator.report)


def samples(n: int = 5) -> list[Sample]:
    return [
        Sample(uid=f"u{i}", problem=f"<image>Question {i}?", answer=str(i), images=[builders.png(mark=i)],
               answer_type="integer", source="unit", category="c", answer_raw=f"\\boxed{{{i}}}",
               difficulty={"passrate": i / 10} if i % 2 else None, meta={"k": i}, choices=None,
               solution=f"so \\boxed{{{i}}}")
        for i in range(n)
    ]


@pytest.mark.parametrize("mode", ["files", "embed"])
def test_roundtrip(tmp_path, mode):
    original = samples()
    manifest = write_prepared(tmp_path / "ds", original, mode)
    assert [s["rows"] for s in manifest["shards"]] == [2, 2, 1]
    assert manifest["counts"]["rows"] == 5 and manifest["answer_types"] == {"integer": 5}
    assert manifest["images"]["width"]["max"] == 24 and manifest["images"]["per_row"] == {"1": 5}
    result = load_samples(str(tmp_path / "ds"))
    assert isinstance(result, LoadResult) and result.root == tmp_path / "ds" and not result.skipped
    for a, b in zip(original, result.samples, strict=True):
        assert (a.uid, a.problem, a.answer, a.answer_raw, a.difficulty, a.meta, a.solution) == (
            b.uid, b.problem, b.answer, b.answer_raw, b.difficulty, b.meta, b.solution)
        stored = b.images[0]
        assert isinstance(stored, dict) and (stored["bytes"] is None) == (mode == "files")
        assert load_image(stored, result.root).getpixel((a.images and int(a.uid[1:]) % 24, 0))[0] == int(a.uid[1:])
    assert result.image_info[0][0].width == 24 and len(result.image_info[0][0].hash) == 40
    # The shards are plain parquet with an HF-compatible image column.
    table = pq.read_table(tmp_path / "ds" / manifest["shards"][0]["file"])
    assert table.schema.equals(SCHEMA)


def test_write_subset_keeps_rows_and_provenance(tmp_path):
    write_prepared(tmp_path / "ds", samples(), "files")
    result = load_samples(str(tmp_path / "ds"))
    manifest = write_subset(result, [1, 3], tmp_path / "sub", recipe="unit-subset", command="pytest")
    sub = load_samples(str(tmp_path / "sub"))
    assert [s.uid for s in sub.samples] == ["u1", "u3"]
    assert manifest["derived_from"]["recipe"] == "unit" and manifest["recipe"] == "unit-subset"
    assert sub.image_info[0][0].hash == result.image_info[1][0].hash


def test_plain_files_with_aliases(tmp_path):
    (tmp_path / "img.png").write_bytes(builders.png())
    rows = [
        {"id": "a", "question": "<image>Find x.\n(A) 1\n(B) 2", "ground_truth": "(B)", "image": "img.png"},
        {"id": "b", "problem": "What is 1+1?", "answer": "\\boxed{2}", "PassRate_7BUntrained": 0.5,
         "PassRate_32BTrained": -1},  # -1 = not annotated: unknown, never a rate
        {"id": "c", "problem": "No answer here"},
        "not an object",
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    result = load_samples(str(path))
    by_uid = {s.uid: s for s in result.samples}
    assert by_uid["a"].answer == "B" and by_uid["a"].choices == ["1", "2"] and by_uid["a"].images == ["img.png"]
    assert load_image(by_uid["a"].images[0], result.root).size == (24, 20)
    assert by_uid["b"].answer == "2" and by_uid["b"].difficulty == {"passrate_7b": 0.5}
    assert [s.row for s in result.skipped] == ["c", "row3", "row4"]
    assert {s.kind for s in result.skipped} == {"malformed_row"} and "not JSON" in result.skipped[2].reason

    pq.write_table(pa.Table.from_pylist([rows[1]]), tmp_path / "rows.parquet")
    assert load_samples(str(tmp_path / "rows.parquet")).samples[0].answer == "2"


def test_datasets_folder_with_split(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_dict({"problem": ["What is 2+2?"], "answer": ["4"]})
    DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    assert load_samples(f"{tmp_path / 'dd'}@test").samples[0].answer == "4"
    with pytest.raises(SourceError, match="choose one with"):
        load_samples(str(tmp_path / "dd"))
    with pytest.raises(SourceError, match="no split 'val'"):
        load_samples(f"{tmp_path / 'dd'}@val")


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_samples(str(tmp_path / "missing"))
    path = tmp_path / "wrong.jsonl"
    path.write_text(json.dumps({"text": "hi", "target": "1"}) + "\n")
    with pytest.raises(SourceError, match=r"columns \['text', 'target'\].*problem: one of"):
        load_samples(str(path))
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(SourceError, match="not valid JSON"):
        open_source(str(tmp_path / "bad.json"))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "nothing.parquet"))


def test_builtin_synthetic():
    result = load_samples("builtin:synthetic")
    assert len(result.samples) == 2000 and result.samples[0].uid == "synthetic-0-0"
