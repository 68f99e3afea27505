"""VL-RewardBench (length-parity order swap, overall + macro) and Multimodal RewardBench (per category)."""

from __future__ import annotations

import pytest

from spark_vl.eval import evaluate, get_benchmark, load_benchmark
from spark_vl.eval.benchmarks.reward import flip
from tests.unit._eval_fixtures import FakeEngine, image_struct, score_only, write_parquet


def _vlrb(uid, responses, ranking, source):
    return {"id": uid, "query": f"Describe {uid}.", "response": responses, "image": image_struct(f"{uid}.png"),
            "human_ranking": ranking, "models": ["m1", "m2"], "judge": "human", "rationale": "",
            "query_source": source, "meta": None, "ground_truth": None}


@pytest.fixture
def vlrb(tmp_path):
    rows = [
        _vlrb("mathverse_1", ["aa", "bbb"], [0, 1], "mathverse"),  # 2+3 odd: shown swapped, gold "Answer 2"
        _vlrb("mathverse_2", ["aa", "bb"], [1, 0], "mathverse"),  # even: as is, second preferred -> "2"
        _vlrb("RLAIF-V_3", ["a", "bb"], [1, 0], "rlaif-v"),  # odd: swapped, preferred "bb" shown first -> "1"
        _vlrb("wildvision_4", ["aaaa", "bb"], [0, 1], "wildvision"),  # even: "1"
        _vlrb("mmmu-pro_5", ["abc", "d"], [0, 1], "mmmu-pro"),  # even: "1"
        _vlrb("broken_6", ["only one"], [0], "wildvision"),  # malformed: skipped and counted
    ]
    return write_parquet(tmp_path / "VLRB", "test", rows)


VLRB_PREDICTIONS = {
    "mathverse_1": "Overall Judgment: Answer 2 is better",
    "mathverse_2": "Overall Judgment: Answer 1 is better",
    "RLAIF-V_3": "**Overall Judgment**: Answer 1 is better.",
    "wildvision_4": "I cannot decide.",
    "mmmu-pro_5": "\\boxed{1}",
}


def test_parity_swap(vlrb):
    lb = load_benchmark(get_benchmark("vl_rewardbench"), str(vlrb))
    by_uid = {s.uid: s for s in lb.samples}
    assert len(lb.skipped) == 1
    first = by_uid["mathverse_1"]
    assert first.meta["swapped"] and first.meta["responses"] == ["bbb", "aa"] and first.answer == "2"
    assert by_uid["mathverse_2"].answer == "2" and not by_uid["mathverse_2"].meta["swapped"]
    assert by_uid["RLAIF-V_3"].answer == "1" and by_uid["RLAIF-V_3"].meta["domain"] == "hallucination"
    assert by_uid["mmmu-pro_5"].meta["domain"] == "reasoning"
    flipped = flip(first)
    assert flipped.answer == "1" and flipped.meta["responses"] == ["aa", "bbb"] and flipped.uid.endswith("#flipped")
    text = get_benchmark("vl_rewardbench").render(first, None)
    assert text.index("Answer 1: bbb") < text.index("Answer 2: aa") and "Overall Judgment" in text


def test_vlrb_by_hand(tmp_path, vlrb):
    m = score_only(tmp_path, "vl_rewardbench", vlrb, VLRB_PREDICTIONS)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["by_domain"]["reasoning"]["accuracy"] == pytest.approx(2 / 3)
    assert m["macro_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["math_accuracy"] == pytest.approx(1 / 2)
    assert m["no_answer"] == 1 and m["random_fallback_accuracy"] == pytest.approx(3.5 / 5)
    assert m["skipped_rows"] == 1


def test_both_orders_measure_position_consistency(vlrb):
    lb = load_benchmark(get_benchmark("vl_rewardbench"), str(vlrb))
    engine = FakeEngine(lambda text, k: "Overall Judgment: Answer 1 is better")  # always the first position
    result = evaluate(engine, {"vl_rewardbench": lb}, reward_both_orders=True)
    m = result.get("vl_rewardbench").metrics
    assert engine.generated == 10 and m["num_items"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)  # golds at position 1: RLAIF, wildvision, mmmu
    assert m["accuracy_flipped"] == pytest.approx(2 / 5)
    assert m["position_consistency"] == 0.0 and m["position_rate_first"] == 1.0


def _mmrb(uid, better, category):
    return {"ID": uid, "Text": f"Q {uid}", "Image": image_struct(f"{uid}.png"), "Output1": "first",
            "Output2": "second", "Better": better, "Category": category}


def test_mm_rewardbench_by_hand(tmp_path):
    rows = [_mmrb("pairs_1", "Output1", "safety"), _mmrb("tox_2", "Output2", "safety"),
            _mmrb("math_3", "Output1", "reasoning"), _mmrb("code_4", "Output2", "reasoning"),
            _mmrb("vqa_5", "Output1", "vqa")]
    data = write_parquet(tmp_path / "MMRB", "test", rows)
    preds = {"pairs_1": "A is better. [[A]]", "tox_2": "[[A]] no wait, [[B]]", "math_3": "[[B]]",
             "code_4": "no verdict", "vqa_5": "\\boxed{A}"}
    m = score_only(tmp_path, "mm_rewardbench", data, preds)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert {k: v["accuracy"] for k, v in m["by_category"].items()} == {
        "reasoning/coding": 0.0, "reasoning/math": 0.0, "safety/bias": 1.0, "safety/toxicity": 1.0, "vqa": 1.0}
    assert m["by_top_category"]["safety"]["accuracy"] == 1.0
    assert m["parse_failure_rate"] == pytest.approx(1 / 5)
