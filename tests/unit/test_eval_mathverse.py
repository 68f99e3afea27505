"""MathVerse: every problem version reported, Vision-Only separately, and the phrase fallback of `official`."""

from __future__ import annotations

import pytest

from spark_vl.eval import get_benchmark, load_benchmark
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet


def _row(index, problem, version, answer, qtype="free-form", question="What is x?"):
    return {
        "sample_index": str(index),
        "problem_index": str(problem),
        "problem_version": version,
        "question": question,
        "image": image_struct(f"{index}.png"),
        "answer": answer,
        "question_type": qtype,
        "metadata": {"split": "testmini", "source": "fixture", "subject": "plane geometry", "subfield": "length"},
        "query_wo": "According to the question shown in the image, please directly answer the question.",
        "query_cot": "According to the question shown in the image, please first conduct reasoning.",
        "question_for_eval": question,
    }


@pytest.fixture
def mathverse(tmp_path):
    rows = [
        _row(1, 1, "Text Dominant", "B", "multi-choice", "Which is x?\nChoices:\nA:1\nB:2"),
        _row(2, 1, "Vision Only", "B", "multi-choice", ""),
        _row(3, 2, "Text Lite", "5"),
        _row(4, 2, "Vision Only", "\\frac{1}{2}", question=""),
        _row(5, 2, "Vision Intensive", "12"),
    ]
    # The hub layout puts the config in a folder: <repo>/testmini/...
    write_parquet(tmp_path / "MathVerse" / "testmini", "testmini", rows)
    return tmp_path / "MathVerse"


PREDICTIONS = {
    "1": "\\boxed{B}",
    "2": "\\boxed{(C)}",
    "3": "x = \\boxed{5}",
    "4": "\\boxed{0.5}",  # numerically equal to the gold \frac{1}{2}
    "5": "So x is\n12",  # no box
}


def test_schema_and_vision_only_prompt(mathverse):
    lb = load_benchmark(get_benchmark("mathverse"), str(mathverse))
    assert len(lb.samples) == 5 and lb.samples[0].answer_type == "mcq_letter"
    vision_only = lb.samples[1]
    assert vision_only.meta["version"] == "Vision Only"
    assert vision_only.problem.startswith("According to the question shown in the image")  # empty question
    vo = load_benchmark(get_benchmark("mathverse_vision_only"), str(mathverse))
    assert [s.uid for s in vo.samples] == ["2", "4"]


def test_spark_protocol_every_version(tmp_path, mathverse):
    m = score_only(tmp_path, "mathverse", mathverse, PREDICTIONS, "spark")
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["vision_only"] == pytest.approx(1 / 2)
    assert m["version/text_dominant"] == 1.0 and m["version/vision_intensive"] == 0.0
    assert set(m["by_version"]) == {"Text Dominant", "Text Lite", "Vision Intensive", "Vision Only"}
    assert m["by_subject"]["plane geometry"]["n"] == 5
    assert m["no_answer"] == 1


def test_official_protocol_and_vision_only_benchmark(tmp_path, mathverse):
    m = score_only(tmp_path, "mathverse", mathverse, PREDICTIONS, "official")
    assert m["accuracy"] == pytest.approx(4 / 5)  # item 5 is read from the last line
    vo = score_only(tmp_path, "mathverse_vision_only", mathverse, PREDICTIONS, "spark")
    assert vo["num_items"] == 2 and vo["accuracy"] == pytest.approx(1 / 2)
