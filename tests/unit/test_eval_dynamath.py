"""DynaMath: ten variant splits, average vs worst case over variants, the 1e-3 tolerance, substring rule."""

from __future__ import annotations

import pytest

from spark_vl.eval import get_benchmark, load_benchmark
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet

SEEDS = [("1", "B", "multiple choice"), ("2", "3.142", "float"), ("3", "left", "free form")]


@pytest.fixture
def dynamath(tmp_path):
    folder = tmp_path / "DynaMath"
    for v in range(1, 11):
        rows = [{"id": seed, "question": f"Seed {seed} variant {v}?", "image": f"{seed}-{v}.png",
                 "decoded_image": image_struct(f"{seed}-{v}.png"), "ground_truth": gold, "answer_type": atype,
                 "subject": "algebra" if seed != "3" else "graph theory", "knowledge_level": "high school"}
                for seed, gold, atype in SEEDS]
        write_parquet(folder, f"sample_variant{v}", rows)
    return folder


def _predictions():
    preds = {}
    for v in range(1, 11):
        preds[f"1-v{v}"] = "\\boxed{B}"
        preds[f"2-v{v}"] = "\\boxed{3.1416}" if v < 10 else "\\boxed{3.15}"  # |3.15 - 3.142| > 1e-3
        preds[f"3-v{v}"] = "\\boxed{left}" if v != 5 else "\\boxed{the left one}"
    return preds


def test_variants_are_grouped_seed_major(dynamath):
    lb = load_benchmark(get_benchmark("dynamath"), str(dynamath))
    assert len(lb.samples) == 30
    assert [s.uid for s in lb.samples[:3]] == ["1-v1", "1-v2", "1-v3"]
    assert lb.samples[10].group_key == "2" and lb.samples[10].tolerance == 1e-3
    assert [s.uid for s in load_benchmark(get_benchmark("dynamath"), str(dynamath), limit=10).samples][-1] == "1-v10"


def test_spark_average_and_worst(tmp_path, dynamath):
    m = score_only(tmp_path, "dynamath", dynamath, _predictions(), "spark")
    assert m["average"] == pytest.approx(28 / 30)  # seed 3 variant 5 fails the verifier's text match
    assert m["worst"] == pytest.approx(1 / 3)  # only seed 1 is right in all ten variants
    assert m["robustness"] == pytest.approx((1 / 3) / (28 / 30))
    assert m["seeds"] == 3 and m["variants_per_seed"] == {"min": 10, "max": 10}


def test_official_substring_rule(tmp_path, dynamath):
    m = score_only(tmp_path, "dynamath", dynamath, _predictions(), "official")
    assert m["average"] == pytest.approx(29 / 30)  # "the left one" contains the gold "left"
    assert m["worst"] == pytest.approx(2 / 3)
    assert m["by_subject"]["graph theory"]["accuracy"] == 1.0


def test_some_variant_splits_evaluate_and_name_the_rest(tmp_path):
    """A folder with 3 of the 10 variant splits: the 3 are evaluated, the 7 others named (not an exit)."""
    folder = tmp_path / "DynaMath3"
    for v in (1, 2, 3):
        rows = [{"id": seed, "question": f"Seed {seed} variant {v}?", "image": f"{seed}-{v}.png",
                 "decoded_image": image_struct(f"{seed}-{v}.png"), "ground_truth": gold, "answer_type": atype,
                 "subject": "algebra", "knowledge_level": "high school"} for seed, gold, atype in SEEDS]
        write_parquet(folder, f"sample_variant{v}", rows)
    lb = load_benchmark(get_benchmark("dynamath"), str(folder))
    assert len(lb.samples) == 9
    assert lb.missing_splits == [f"sample_variant{v}" for v in range(4, 11)]
    preds = {uid: pred for uid, pred in _predictions().items() if uid.endswith(("-v1", "-v2", "-v3"))}
    m = score_only(tmp_path, "dynamath", folder, preds, "spark")
    assert m["num_items"] == 9 and m["variants_per_seed"] == {"min": 3, "max": 3}
    assert m["missing_splits"] == [f"sample_variant{v}" for v in range(4, 11)]
    report = (tmp_path / "out-dynamath-spark" / "results.md").read_text()
    assert "`dynamath` is PARTIAL" in report and "sample_variant10" in report


def test_no_variant_split_at_all_is_an_error(tmp_path):
    from spark_vl.eval.loading import BenchmarkSourceError

    folder = write_parquet(tmp_path / "Other", "test", [{"id": "1", "question": "q", "ground_truth": "1"}])
    with pytest.raises(BenchmarkSourceError, match="holds none of the splits"):
        load_benchmark(get_benchmark("dynamath"), str(folder))
