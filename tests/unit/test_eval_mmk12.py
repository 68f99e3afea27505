"""MMK12 and prepared datasets: verifier accuracy with a per-subject / per-category breakdown."""

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
