"""MathVision: test vs testmini splits, letter-or-option-value MCQ, is_equal for free-form answers."""

from __future__ import annotations

import pytest

from spark_vl.eval import get_benchmark, load_benchmark
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet


def _row(uid, answer, options=(), subject="metric geometry - length", level=2):
    return {"id": uid, "question": "<image1>\nWhat is the length?", "options": list(options),
            "image": f"images/{uid}.jpg", "decoded_image": image_struct(f"{uid}.jpg"), "answer": answer,
            "solution": None, "level": level, "subject": subject}


@pytest.fixture
def mathvision(tmp_path):
    five = ["2", "4", "6", "8", "10"]
    mini = [_row("1", "B", five), _row("2", "0.5", subject="algebra", level=1), _row("3", "C", five),
            _row("4", "12", subject="algebra")]
    folder = write_parquet(tmp_path / "MathVision", "testmini", mini)
    write_parquet(folder, "test", mini + [_row(str(i), "1") for i in range(5, 9)])
    return folder


PREDICTIONS = {
    "1": "\\boxed{4}",  # the option's value, not its letter
    "2": "\\boxed{1/2}",
    "3": "\\boxed{D}",
    "4": "The length is 12.",  # no box
}


def test_splits(mathvision):
    assert len(load_benchmark(get_benchmark("mathvision_mini"), str(mathvision)).samples) == 4
    full = load_benchmark(get_benchmark("mathvision"), str(mathvision))
    assert len(full.samples) == 8
    first = full.samples[0]
    assert first.choices == ["2", "4", "6", "8", "10"] and "E. 10" in first.problem
    assert first.problem.startswith("<image1>")  # the placeholder becomes the image part in the prompt


def test_spark_and_official_by_hand(tmp_path, mathvision):
    spark = score_only(tmp_path, "mathvision_mini", mathvision, PREDICTIONS, "spark")
    assert spark["accuracy"] == pytest.approx(2 / 4)
    assert spark["by_subject"]["algebra"] == {"accuracy": 0.5, "n": 2}
    assert spark["by_level"]["1"]["accuracy"] == 1.0
    official = score_only(tmp_path, "mathvision_mini", mathvision, PREDICTIONS, "official")
    assert official["accuracy"] == pytest.approx(3 / 4)
