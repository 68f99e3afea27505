"""Reports: SPARK column order, averages, files that parse, compare with deltas that never mix modes."""

from __future__ import annotations

import json

import pytest

from spark_vl.eval import compare_runs, write_report
from spark_vl.eval.cli import main
from spark_vl.eval.records import BenchmarkResult, EvalResult


def _result(model: str, values: dict[str, float], modes=("greedy",)) -> EvalResult:
    res = EvalResult(model=model, protocol={"name": "spark", "description": "fixture"})
    for mode in modes:
        bump = 0.1 if mode != "greedy" else 0.0
        res.results += [
            BenchmarkResult("mmstar", mode, "spark", {"accuracy": values["mmstar"] + bump}, [("MMStar", "accuracy")],
                            "general"),
            BenchmarkResult("vl_rewardbench", mode, "spark",
                            {"accuracy": values["vlrb"], "math_accuracy": values["vlrb_math"]},
                            [("VL-RB", "accuracy"), ("VL-RB-Math", "math_accuracy")], "reward"),
            BenchmarkResult("wemath", mode, "spark", {"accuracy": values["wemath"] + bump}, [("WeMath", "accuracy")],
                            "math"),
            BenchmarkResult("mathvista", mode, "spark", {"accuracy": values["mathvista"] + bump},
                            [("MathVista", "accuracy")], "math"),
            BenchmarkResult("dynamath", mode, "spark", {"average": 0.5, "worst": 0.2},
                            [("DynaMath", "average"), ("DynaMath-worst", "worst", False)], "math"),
        ]
    return res


BASE = {"mathvista": 0.60, "wemath": 0.40, "vlrb": 0.50, "vlrb_math": 0.30, "mmstar": 0.70}


def test_table_order_and_averages(tmp_path):
    paths = write_report(_result("base", BASE, modes=("greedy", "self_reflect")), tmp_path)
    table = paths["table"].read_text().splitlines()
    header = next(line for line in table if line.startswith("| model"))
    assert header == ("| model | mode | protocol | MathVista | WeMath | DynaMath | DynaMath-worst | Avg-M | VL-RB | "
                      "VL-RB-Math | Avg-R | MMStar | Avg |")
    greedy = next(line for line in table if "| greedy |" in line)
    # Avg-M = mean(60, 40, 50) = 50 (worst-case not averaged); Avg-R = 40; Avg = mean(60,40,50,50,30,70) = 50
    assert "| 60.0 | 40.0 | 50.0 | 20.0 | 50.0 | 50.0 | 30.0 | 40.0 | 70.0 | 50.0 |" in greedy
    data = json.loads(paths["metrics"].read_text())
    assert [r["mode"] for r in data["rows"]] == ["greedy", "self_reflect"]
    assert data["rows"][1]["averages"]["Avg-M"] == pytest.approx((0.7 + 0.5 + 0.5) / 3)
    assert data["benchmarks"]["mathvista"]["greedy"]["notes"]
    assert paths["chart"].stat().st_size > 1000


def test_compare_deltas_same_mode_only(tmp_path):
    write_report(_result("base", BASE), tmp_path / "base", chart=False)
    better = dict(BASE, mathvista=0.65, vlrb=0.55)
    write_report(_result("step-400", better, modes=("greedy", "self_reflect")), tmp_path / "step-400", chart=False)
    text, summary = compare_runs([tmp_path / "base", tmp_path / "step-400"], tmp_path / "cmp")
    assert len(summary["deltas"]) == 1  # the self_reflect row has no same-mode baseline
    delta = summary["deltas"][0]
    assert delta["mode"] == "greedy" and delta["values"]["MathVista"] == pytest.approx(0.05)
    assert delta["values"]["WeMath"] == pytest.approx(0.0)
    assert "+5.0" in text and "no delta" in text
    assert (tmp_path / "cmp" / "compare.png").is_file() and (tmp_path / "cmp" / "compare.md").is_file()
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "step-400")]) == 0


def test_cli_errors(tmp_path, capsys):
    assert main(["--model", "builtin:tiny-qwen2.5-vl", "--benchmarks", "mathvista,nosuchbench"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nosuchbench'" in err and "mathvista" in err and "vl_rewardbench" in err
    assert main(["--benchmarks", "mathvista", "--protocol", "nope", "--model", "x"]) == 2
    assert "known protocols: spark, official" in capsys.readouterr().err
    assert main(["--model", "builtin:tiny-qwen2.5-vl", "--benchmarks", "mmstar", "--data",
                 f"mmstar={tmp_path / 'absent'}"]) == 2
    assert "absent" in capsys.readouterr().err
    assert main(["list"]) == 0 and "mathverse_vision_only" in capsys.readouterr().out
