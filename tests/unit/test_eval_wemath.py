"""We-Math: plain accuracy, step accuracies and the strict/loose four-dimensional score on constructed groups."""

from __future__ import annotations

import pytest

from spark_vl.eval import get_benchmark, load_benchmark
from spark_vl.eval.benchmarks.wemath import parse_option_string
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet

OPTION = "A. 1; B. 2; C. 3; D. 4"

# (group, steps, [sub-problem correct..., composite correct])
GROUPS = [
    ("g1", 2, [True, True, True]),  # CM strict and loose
    ("g2", 2, [True, False, True]),  # RM strict, CM loose
    ("g3", 2, [False, False, True]),  # RM strict and loose
    ("g4", 2, [True, True, False]),  # IG
    ("h1", 3, [True, False, False, False]),  # IK
]


def _rows():
    rows, number = [], 0
    for group, steps, pattern in GROUPS + [("g5", 2, None)]:
        keys = [f"{steps}steps_{i}" for i in range(1, steps + 1)] + [f"{steps}steps_multi"]
        if pattern is None:
            keys = [f"{steps}steps_multi"]  # an incomplete group: only its composite
        for key in keys:
            number += 1
            rows.append({"ID": group, "split": "testmini", "knowledge concept": "Angles" if steps == 2 else "Area",
                         "question": f"{group} {key}?", "option": OPTION, "answer": "B", "key": key,
                         "question number": number, "knowledge concept description": "fixture",
                         "image_path": image_struct(f"{number}.png")})
    return rows


def _predictions():
    preds = {}
    for group, steps, pattern in GROUPS + [("g5", 2, [True])]:
        keys = [f"{steps}steps_{i}" for i in range(1, steps + 1)] + [f"{steps}steps_multi"]
        keys = keys[-len(pattern):]
        for key, ok in zip(keys, pattern, strict=True):
            preds[f"{group}:{key}"] = "\\boxed{2}" if ok else "\\boxed{C}"  # option text "2" is letter B
    return preds


@pytest.fixture
def wemath(tmp_path):
    return write_parquet(tmp_path / "WeMath", "testmini", _rows())


def test_option_string():
    assert parse_option_string(OPTION) == ["1", "2", "3", "4"]
    assert parse_option_string("B. 1; A. 2") is None


def test_schema(wemath):
    lb = load_benchmark(get_benchmark("wemath"), str(wemath))
    assert len(lb.samples) == 17
    s = lb.samples[0]
    assert s.uid == "g1:2steps_1" and s.choices == ["1", "2", "3", "4"] and "Options: A. 1" in s.problem


@pytest.mark.parametrize("protocol", ["spark", "official"])
def test_four_dimensional_by_hand(tmp_path, wemath, protocol):
    m = score_only(tmp_path, "wemath", wemath, _predictions(), protocol)
    assert m["accuracy"] == pytest.approx(10 / 17)
    assert m["composites"] == 5 and m["incomplete_groups"] == 1
    assert (m["IK"], m["IG"], m["CM_strict"], m["RM_strict"], m["CM_loose"], m["RM_loose"]) == (1, 1, 1, 2, 2, 1)
    assert m["score_strict"] == pytest.approx((5 - 0.5 * 1 - 2 - 1) / 5)  # 0.3
    assert m["score_loose"] == pytest.approx((5 - 0.5 * 1 - 1 - 1) / 5)  # 0.5
    assert m["one_step_accuracy"] == pytest.approx(6 / 11)
    assert m["two_step_accuracy"] == pytest.approx(4 / 5)
    assert m["three_step_accuracy"] == 0.0
    assert m["by_knowledge_concept"]["Area"]["n"] == 4


def test_headline_column_depends_on_protocol():
    from spark_vl.eval.protocols import get_protocol

    bench = get_benchmark("wemath")
    assert bench.table_columns(get_protocol("spark")) == [("WeMath", "accuracy")]
    assert bench.table_columns(get_protocol("official")) == [("WeMath", "score_strict")]
