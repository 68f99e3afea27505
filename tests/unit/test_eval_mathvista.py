"""MathVista: option-text golds, precision rounding, first box, and the spark vs official protocols."""

from __future__ import annotations

import pytest

from spark_vl.eval import get_benchmark, load_benchmark
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet


def _row(pid, answer, *, choices=None, qtype="free_form", atype="integer", precision=None, task="figure QA"):
    question = f"Question {pid}?"
    hint = "Hint: Please answer the question and provide the final answer at the end."
    return {
        "pid": pid,
        "question": question,
        "image": f"images/{pid}.jpg",
        "decoded_image": image_struct(f"{pid}.jpg"),
        "choices": choices,
        "unit": None,
        "precision": precision,
        "answer": answer,
        "question_type": qtype,
        "answer_type": atype,
        "metadata": {"category": "math-targeted-vqa", "context": "synthetic scene", "grade": "high school",
                     "img_height": 8, "img_width": 8, "language": "english", "skills": ["arithmetic reasoning"],
                     "source": "fixture", "split": "testmini", "task": task},
        "query": f"{hint}\nQuestion: {question}",
    }


@pytest.fixture
def mathvista(tmp_path):
    rows = [
        _row("1", "4", choices=["3", "4", "5"], qtype="multi_choice", atype="text"),
        _row("2", "blue", choices=["red", "blue"], qtype="multi_choice", atype="text",
             task="geometry problem solving"),
        _row("3", "1.45", atype="float", precision=2.0),
        _row("4", "7"),
        _row("5", "2.5", atype="float", precision=1.0),
        _row("6", "A dog", choices=["A cat", "A dog"], qtype="multi_choice", atype="text"),
    ]
    return write_parquet(tmp_path / "MathVista", "testmini", rows)


PREDICTIONS = {
    "1": "Counting gives four, option B. \\boxed{B}",  # letter -> option text "4"
    "2": "The sky is \\boxed{blue}.",  # option text
    "3": "About \\boxed{1.449}",  # rounds to the gold at precision 2
    "4": "The answer is 7.",  # no box: spark reads nothing, official falls back to the phrase
    "5": "First \\boxed{2.4}, on reflection \\boxed{2.5}",  # the FIRST box counts
    "6": "\\boxed{dgo}",  # a typo: only the official nearest-option rule maps it to "A dog"
}


def test_schema_is_read(mathvista):
    lb = load_benchmark(get_benchmark("mathvista"), str(mathvista))
    assert [s.uid for s in lb.samples] == ["1", "2", "3", "4", "5", "6"]
    first = lb.samples[0]
    assert first.choices == ["3", "4", "5"] and first.answer == "4" and first.answer_type == "mcq_letter"
    assert first.problem.startswith("Hint:")  # the official query form SPARK's prompts use
    assert lb.samples[2].precision == 2 and lb.samples[2].answer_type == "float"
    assert isinstance(first.images[0], dict) and first.images[0]["bytes"]


def test_spark_protocol_by_hand(tmp_path, mathvista):
    m = score_only(tmp_path, "mathvista", mathvista, PREDICTIONS, "spark")
    # right: 1 (B -> "4"), 2 (text -> B), 3 (1.449 ~ 1.45 at precision 2); wrong: 4 (no box), 5 (first box), 6
    assert m["num_correct"] == 3 and m["accuracy"] == pytest.approx(3 / 6)
    assert m["no_answer"] == 1
    assert [p["uid"] for p in m["problems"]] == ["4"]
    assert m["by_task"]["geometry problem solving"] == {"accuracy": 1.0, "n": 1}
    assert m["by_task"]["figure QA"]["accuracy"] == pytest.approx(2 / 5)
    assert m["by_skills"]["arithmetic reasoning"]["n"] == 6
    assert m["protocol"] == "spark"


def test_official_protocol_by_hand(tmp_path, mathvista):
    m = score_only(tmp_path, "mathvista", mathvista, PREDICTIONS, "official")
    # official adds 4 (phrase fallback, int) and 6 (nearest option by edit distance); 5 stays wrong (first box)
    assert m["num_correct"] == 5 and m["accuracy"] == pytest.approx(5 / 6)
    assert m["by_question_type"]["multi_choice"]["accuracy"] == 1.0
