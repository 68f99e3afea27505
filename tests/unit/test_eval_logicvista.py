"""LogicVista: multi-letter golds compared as letter SETS; malformed rows are skipped and counted."""

from __future__ import annotations

import pytest

from spark_vl.eval import get_benchmark, load_benchmark
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet


@pytest.fixture
def logicvista(tmp_path):
    rows = [{"question_id": str(i), "question": f"Q{i}? A. x B. y C. z D. w", "image": image_struct(f"{i}.png"),
             "answer": answer, "skill": skill, "capability": "diagram"}
            for i, (answer, skill) in enumerate([("A, C", "deductive"), ("A, C", "inductive"), ("B, D", "spatial"),
                                                 ("D", "numerical"), ("A", "numerical"), ("none", "numerical")], 1)]
    return write_parquet(tmp_path / "LogicVista", "test", rows)


PREDICTIONS = {
    "1": "\\boxed{A, C}",
    "2": "\\boxed{C, A}",  # same set, other order
    "3": "\\boxed{B}",  # a subset is wrong
    "4": "\\boxed{D}",
    "5": "The answer is A",  # no box
}


def test_gold_sets_and_skipped_row(logicvista):
    lb = load_benchmark(get_benchmark("logicvista"), str(logicvista))
    assert [s.answer for s in lb.samples] == ["A, C", "A, C", "B, D", "D", "A"]
    assert lb.samples[0].answer_type == "mcq_multi"
    assert len(lb.skipped) == 1 and "names no option letter" in lb.skipped[0].reason


def test_letter_sets_by_hand(tmp_path, logicvista):
    m = score_only(tmp_path, "logicvista", logicvista, PREDICTIONS, "spark")
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["multi_letter_items"] == 3 and m["multi_letter_accuracy"] == pytest.approx(2 / 3)
    assert m["by_skill"]["numerical"] == {"accuracy": 0.5, "n": 2}
    official = score_only(tmp_path, "logicvista", logicvista, PREDICTIONS, "official")
    assert official["accuracy"] == pytest.approx(4 / 5)


def test_hub_capability_columns(tmp_path):
    """lscpku/LogicVista labels items with broad_capability / specific_capability: those are the breakdowns."""
    rows = [{"question_id": str(i), "question": f"Q{i}? A. x B. y C. z D. w", "image": image_struct(f"{i}.png"),
             "answer": answer, "broad_capability": broad, "specific_capability": specific}
            for i, (answer, broad, specific) in enumerate([("A", "deductive", "diagram"), ("B", "deductive", "ocr"),
                                                           ("C, D", "spatial", "diagram")], 1)]
    folder = write_parquet(tmp_path / "LogicVistaHub", "test", rows)
    m = score_only(tmp_path, "logicvista", folder, {"1": "\\boxed{A}", "2": "\\boxed{C}", "3": "\\boxed{C, D}"})
    assert m["by_broad_capability"] == {"deductive": {"accuracy": 0.5, "n": 2}, "spatial": {"accuracy": 1.0, "n": 1}}
    assert m["by_specific_capability"]["diagram"] == {"accuracy": 1.0, "n": 2}
    assert "by_skill" not in m and "by_capability" not in m
