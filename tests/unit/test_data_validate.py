"""Validation: bad images, bad text, unparseable golds and duplicates are caught and counted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from spark_vl.data.rows import Skipped, SkipRow
from spark_vl.prep.validate import (
    Report,
    ValidationConfig,
    Validator,
    check_image,
    read_image_bytes,
)
from spark_vl.types import Sample

_spec = importlib.util.spec_from_file_location(
    "data_builders", Path(__file__).resolve().parents[1] / "assets/data/builders.py"
)
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)
CFG = ValidationConfig()


def sample(uid: str, images, problem: str = "<image>What is x?", answer: str = "3") -> Sample:
    return Sample(uid=uid, problem=problem, answer=answer, images=images, answer_type=None)


def kind_of(ref, root=None, cfg=CFG) -> str:
    with pytest.raises(SkipRow) as err:
        check_image(ref, root, cfg)
    return err.value.kind


def test_good_image_forms_agree(tmp_path):
    data = builders.png("red", (30, 20), mark=4)
    (tmp_path / "a.png").write_bytes(data)
    pil = Image.open(tmp_path / "a.png")
    checked = [check_image(r, tmp_path, CFG) for r in (data, {"bytes": data, "path": "x.png"}, "a.png", pil)]
    assert {c.info.hash for c in checked} == {checked[0].info.hash}  # pixel hash ignores the container
    assert checked[0].info.width == 30 and checked[0].info.height == 20 and checked[0].ext == "png"


def test_bad_images_are_classified(tmp_path):
    assert kind_of("missing.png", tmp_path) == "missing_image"
    assert kind_of({"bytes": None, "path": None}) == "missing_image"
    assert kind_of(b"this is not an image") == "undecodable_image"
    assert kind_of(builders.truncated_png()) == "truncated_image"
    assert kind_of(builders.png("red", (4, 30))) == "tiny_image"
    assert kind_of(builders.png("red", (400, 1))) == "tiny_image"
    assert kind_of(builders.png("red", (2100, 10))) == "extreme_aspect_ratio"
    assert kind_of(builders.png("red", (64, 64)), cfg=ValidationConfig(max_image_pixels=1000)) == "gigantic_image"
    assert kind_of(12345) == "undecodable_image"


def test_decompression_bomb_is_rejected_from_its_header():
    # 10^10 declared pixels: decoding would need 30 GB; the header check refuses before any decode.
    assert kind_of(builders.bomb_png()) == "gigantic_image"


def test_read_image_bytes_strips_file_scheme(tmp_path):
    (tmp_path / "a.png").write_bytes(builders.png())
    data, name = read_image_bytes(f"file://{tmp_path / 'a.png'}", None)
    assert data.startswith(b"\x89PNG") and name == "a.png"


def test_validator_counts_and_lists_every_kind(tmp_path):
    good = builders.png("green", mark=1)
    rows = [
        sample("ok", [good]),
        sample("dup", [good]),  # same image and question as "ok"
        sample("dup-other-question", [good], problem="<image>What is y?"),  # not a duplicate
        sample("corrupt", [b"garbage"]),
        sample("missing", ["nope.png"]),
        sample("oversized", [builders.bomb_png()]),
        sample("truncated", [builders.truncated_png()]),
        sample("empty-question", [builders.png("red", mark=2)], problem="<image>  "),
        sample("no-answer", [builders.png("red", mark=3)], answer=" "),
        sample("placeholders", [builders.png("red", mark=5)], problem="<image><image>Compare."),
        sample("text-only", [], problem="What is 2+2?", answer="4"),
    ]
    validator = Validator(ValidationConfig())
    kept = [s.uid for s in rows if validator.check(s, tmp_path) is not None]
    report: Report = validator.report
    assert kept == ["ok", "dup-other-question", "text-only"]
    assert dict(report.counts) == {
        "duplicate": 1, "undecodable_image": 1, "missing_image": 1, "gigantic_image": 1, "truncated_image": 1,
        "empty_question": 1, "missing_answer": 1, "placeholder_mismatch": 1,
    }
    assert report.rows_seen == len(rows) and report.rows_kept == 3
    listed = {i.row: i for i in report.issues}
    assert "same images and question as row ok" in listed["dup"].reason
    assert "nope.png" in listed["missing"].reason
    assert "dup" in report.summary()


def test_unparseable_gold_is_reported():
    validator = Validator(ValidationConfig())
    if validator.report.verifier != "spark_vl.rewards":
        pytest.skip("verifier not importable")
    assert validator.check(sample("bad-gold", [], problem="Simplify.", answer="\\frac{1}{"), None) is None
    assert validator.report.counts == {"unparseable_answer": 1}
    assert validator.check(sample("good-gold", [], problem="Simplify it.", answer="\\frac{1}{2}"), None) is not None


def test_report_roundtrip(tmp_path):
    validator = Validator(ValidationConfig(check_answers=False))
    validator.skip(Skipped("row7", "malformed_row", "message is not JSON"))
    validator.report.write(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert '"malformed_row": 1' in text and "row7" in text
