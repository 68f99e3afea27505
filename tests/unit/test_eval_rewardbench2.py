"""RewardBench2 (text-only): four-way judging with a seeded shuffle, per-subset and leaderboard scores, position
bias, Ties by its own rule under the pointwise P(yes) protocol; fixtures in the real column layout."""

from __future__ import annotations

import json
import math

import pytest

from spark_vl.eval import evaluate, get_benchmark, load_benchmark
from spark_vl.eval.benchmarks.rewardbench2 import LETTERS, shuffled_positions, ties_score
from tests.unit._eval_fixtures import score_only, write_parquet

# (id, subset, chosen, rejected)
ITEMS = [
    ("f1", "Factuality", ["right f1"], ["wrong f1 a", "wrong f1 b", "wrong f1 c"]),
    ("f2", "Factuality", ["right f2"], ["wrong f2 a", "wrong f2 b", "wrong f2 c"]),
    ("p1", "Precise IF", ["right p1"], ["wrong p1 a", "wrong p1 b", "wrong p1 c"]),
    ("m1", "Math", ["The answer is \\boxed{12}."], ["\\boxed{11}", "\\boxed{13}", "\\boxed{{14}}"]),
    ("m2", "Math", ["right m2"], ["wrong m2 a", "wrong m2 b", "wrong m2 c"]),
    ("s1", "Safety", ["I can't help with that."], ["wrong s1 a", "wrong s1 b", "wrong s1 c"]),
    ("o1", "Focus", ["right o1"], ["wrong o1 a", "wrong o1 b", "wrong o1 c"]),
    ("ref:0", "Ties", ["Paris"], ["Lyon", "Rome"]),
    ("tied:0", "Ties", ["2", "3"], ["dog", "12"]),
    ("ref:1", "Ties", ["blue"], ["red", "green"]),
    ("tied:1", "Ties", ["4", "6"], ["7"]),
]


@pytest.fixture
def rb2(tmp_path):
    rows = [{"id": rid, "prompt": f"User message of {rid}: answer {{carefully}}.", "chosen": chosen,
             "rejected": rejected, "num_correct": len(chosen), "num_incorrect": len(rejected),
             "total_completions": len(chosen) + len(rejected), "models": ["model-x"] * (len(chosen) + len(rejected)),
             "subset": subset, "additional_metadata": {"note": "fixture"}}
            for rid, subset, chosen, rejected in ITEMS]
    return write_parquet(tmp_path / "reward-bench-2", "test", rows)


def test_seeded_shuffle_and_four_way_items(rb2):
    assert shuffled_positions("f1") == [2, 1, 0, 3] and shuffled_positions("f1") == shuffled_positions("f1")
    lb = load_benchmark(get_benchmark("rewardbench2"), str(rb2))
    assert [s.uid for s in lb.samples] == ["f1", "f2", "p1", "m1", "m2", "s1", "o1"]
    assert {s.kind for s in lb.skipped} == {"ties_excluded"} and len(lb.skipped) == 4
    f1 = lb.samples[0]
    assert f1.images == [] and f1.answer == "C" and f1.meta["replies"][2] == "right f1"
    text = get_benchmark("rewardbench2").render(f1, None)
    assert "[Reply C]\nright f1\n[End of reply C]" in text and "answer {carefully}" in text
    assert "[[A]], [[B]], [[C]] or [[D]]" in text


FOUR_WAY = {
    "f1": "C is the most accurate.\n[[C]]",  # gold C
    "f2": "[[A]]",  # gold B: wrong
    "p1": "I cannot decide between them.",  # no verdict: wrong (official: 0.25)
    "m1": "Reply A gives \\boxed{14}, reply D gives \\boxed{12}, which is right.\n[[D]]",  # gold D, boxes quoted
    "m2": "\\boxed{B}",  # gold B, read by the verdict parser
    "s1": "[[C]]",  # gold C
    "o1": "[[A]]",  # gold D: wrong
}


def test_four_way_scores_by_hand(tmp_path, rb2):
    m = score_only(tmp_path, "rewardbench2", rb2, FOUR_WAY)
    assert m["by_subset"] == {"Factuality": {"accuracy": 0.5, "n": 2}, "Precise IF": {"accuracy": 0.0, "n": 1},
                              "Math": {"accuracy": 1.0, "n": 2}, "Safety": {"accuracy": 1.0, "n": 1},
                              "Focus": {"accuracy": 0.0, "n": 1}}
    assert m["score"] == pytest.approx(2.5 / 5)  # the unweighted mean of the subsets, not 4/7
    assert m["accuracy"] == pytest.approx(4 / 7) and m["math_accuracy"] == 1.0
    assert m["score_random_fallback"] == pytest.approx((0.5 + 0.25 + 1 + 1 + 0) / 5)
    assert m["no_answer"] == 1 and m["subsets_missing"] == []
    assert m["position_share"] == pytest.approx({"A": 2 / 6, "B": 1 / 6, "C": 2 / 6, "D": 1 / 6})
    assert m["position_bias"] == pytest.approx(1 / 12)
    assert m["gold_position_share"] == pytest.approx({"A": 0, "B": 2 / 7, "C": 3 / 7, "D": 2 / 7})
    assert m["skipped_rows"] == 4 and {s["kind"] for s in m["skipped"]} == {"ties_excluded"}
    report = (tmp_path / "out-rewardbench2-spark" / "results.md").read_text()
    assert "RB2-Math" in report and "Ties EXCLUDED" in report


def _pyes(*scores: float) -> str:
    return json.dumps({"p_yes": list(scores)})


POINTWISE = {
    "f1": _pyes(0.9, 0.1, 0.2, 0.3),  # correct reply best: 1
    "f2": _pyes(0.5, 0.5, 0.1, 0.1),  # shares the top with a wrong reply: 1/2
    "p1": _pyes(0.2, 0.8, 0.1, 0.1),  # 0
    "m1": _pyes(0.7, 0.6, 0.1, 0.2),  # 1
    "m2": _pyes(0.3, 0.4, 0.1, 0.2),  # 0
    "s1": _pyes(0.6, 0.1, 0.1, 0.1),  # 1
    "o1": _pyes(0.6, 0.7, 0.1, 0.1),  # 0
    "ref:0": _pyes(0.9, 0.3, 0.5),  # accurate, margin 0.4
    "tied:0": _pyes(0.9, 0.8, 0.2, 0.5),  # accurate, spread 0.1, margin 0.3
    "ref:1": _pyes(0.4, 0.6, 0.1),  # not accurate, margin -0.2
    "tied:1": _pyes(0.9, 0.5, 0.3),  # accurate, spread 0.4, margin 0.2
}
TIES_SCORE = 0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(2.0) + math.tanh(-1.5)) / 2


def test_ties_rule_by_hand():
    rows = [("ref", "0", [(True, 0.9), (False, 0.3), (False, 0.5)]),
            ("tied", "0", [(True, 0.9), (True, 0.8), (False, 0.2), (False, 0.5)]),
            ("ref", "1", [(True, 0.4), (False, 0.6), (False, 0.1)]),
            ("tied", "1", [(True, 0.9), (True, 0.5), (False, 0.3)])]
    t = ties_score(rows)
    assert (t["ref_accuracy"], t["tied_accuracy"]) == (0.5, 1.0)
    # question 0: margin_tied 0.3 > spread 0.1 and min(0.4, 0.3) > 0.1; question 1: 0.2 < 0.4, min(-0.2, 0.2) < 0.4
    assert (t["correctness_preferred"], t["correctness_preferred_hard"]) == (0.5, 0.5)
    assert t["score"] == pytest.approx(TIES_SCORE)


def test_pointwise_protocol_by_hand(tmp_path, rb2):
    m = score_only(tmp_path, "rewardbench2_pyes", rb2, POINTWISE)
    subsets = m["by_subset"]
    assert list(subsets) == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]
    assert subsets["Factuality"]["score"] == pytest.approx(0.75) and subsets["Math"]["score"] == 0.5
    assert subsets["Ties"]["score"] == pytest.approx(TIES_SCORE) and subsets["Ties"]["n"] == 4
    assert m["score"] == pytest.approx((0.75 + 0 + 0.5 + 1 + 0 + TIES_SCORE) / 6)  # the leaderboard overall
    assert m["math_accuracy"] == 0.5 and m["subsets_missing"] == []
    report = (tmp_path / "out-rewardbench2_pyes-spark" / "results.md").read_text()
    assert "RB2 (P(yes))" in report and "SECOND PROTOCOL" in report


def test_pointwise_runs_through_the_model_judge(rb2):
    """The runner asks the judge for each reply's P(yes) (text-only prompts) and scores what it returns."""
    calls = []

    def judge(model, processor, prompts, replies, form="pointwise"):
        calls.append((len(prompts), form, [p.images for p in prompts]))
        return [0.9 if r.startswith(("right", "The answer", "I can't", "Paris", "2", "3", "4", "6", "blue")) else 0.1
                for r in replies]

    class NoTextEngine:
        model = processor = None

        def generate(self, prompts, n, sampling):
            raise AssertionError("P(yes) scoring generates no text")

    lb = load_benchmark(get_benchmark("rewardbench2_pyes"), str(rb2))
    result = evaluate(NoTextEngine(), {"rewardbench2_pyes": lb}, judge_fn=judge)
    m = result.get("rewardbench2_pyes").metrics
    assert len(calls) == len(ITEMS) and all(form == "pointwise" and images == [[]] * n for n, form, images in calls)
    assert m["by_subset"]["Factuality"]["score"] == 1.0 and m["by_subset"]["Ties"]["tied_accuracy"] == 1.0
    record = result.get("rewardbench2_pyes").records[0]
    assert json.loads(record.response)["p_yes"] == [0.9, 0.1, 0.1, 0.1]


def test_letters_cover_four_slots():
    assert LETTERS == "ABCD"
    seen = {shuffled_positions(f"x{i}").index(0) for i in range(40)}
    assert seen == {0, 1, 2, 3}
