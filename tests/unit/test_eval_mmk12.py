"""MMK12, SPARK's merged file and prepared datasets: verifier accuracy with per-subject / per-dataset breakdowns."""

from __future__ import annotations

import json

import pytest

from spark_vl.eval import get_benchmark
from tests.unit._eval_fixtures import image_struct, png, score_only, write_parquet


@pytest.fixture
def mmk12(tmp_path):
    rows = [{"id": str(i), "subject": subject, "image": image_struct(f"{i}.png"), "question": f"Q{i}?", "answer": a}
            for i, (subject, a) in enumerate([("math", "\\frac{3}{4}"), ("physics", "9.8"), ("chemistry", "H_2O"),
                                              ("biology", "mitochondria")], 1)]
    return write_parquet(tmp_path / "MMK12", "test", rows)


def test_mmk12_by_hand(tmp_path, mmk12):
    preds = {"1": "\\boxed{0.75}", "2": "g = \\boxed{9.8}", "3": "\\boxed{H_2O}", "4": "\\boxed{nucleus}"}
    m = score_only(tmp_path, "mmk12", mmk12, preds, "spark")
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["by_subject"]["biology"] == {"accuracy": 0.0, "n": 1}


def test_prepared_dataset_is_a_benchmark(tmp_path):
    (tmp_path / "img.png").write_bytes(png())
    rows = [{"uid": "a", "problem": "<image>How many?", "answer": "3", "images": ["img.png"], "category": "count"},
            {"uid": "b", "problem": "<image>Colour?", "answer": "red", "images": ["img.png"], "category": "color"}]
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = get_benchmark(f"prepared:{path}")
    assert bench.label == "held_out.jsonl" and bench.group == "other"
    from spark_vl.eval.cli import main

    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"uid": "a", "response": "\\boxed{3}"}) + "\n")  # b has no prediction
    out = tmp_path / "out"
    assert main(["--score-only", str(preds), "--benchmarks", f"prepared:{path}", "--out", str(out), "--no-chart"]) == 0
    m = json.loads((out / "metrics.json").read_text())["benchmarks"][f"prepared:{path}"]["greedy"]
    assert m["accuracy"] == 0.5 and m["generation_errors"] == 1
    assert m["by_category"] == {"color": {"accuracy": 0.0, "n": 1}, "count": {"accuracy": 1.0, "n": 1}}


def test_spark_merged_file_mean_of_datasets(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    records = [{"dataset": "MathVista", "problem": "Q1", "answer": "1", "image_path": "a.png"},
               {"dataset": "MathVista", "problem": "Q2", "answer": "2", "image_path": "a.png"},
               {"dataset": "MMK12", "problem": "Q3", "answer": "3", "image_path": "a.png"}]
    path = tmp_path / "benchmark_combine.json"
    path.write_text(json.dumps(records))
    preds = {"MathVista-0": "\\boxed{1}", "MathVista-1": "\\boxed{5}", "MMK12-2": "\\boxed{3}"}
    m = score_only(tmp_path, "spark_merged", path, preds)
    assert m["accuracy"] == pytest.approx(2 / 3)  # micro
    assert m["mean_of_datasets"] == pytest.approx((0.5 + 1.0) / 2)  # SPARK's headline: unweighted over datasets
