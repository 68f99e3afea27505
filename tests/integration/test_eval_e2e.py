"""End to end on the builtin tiny model: a small MathVista + VL-RewardBench fixture evaluates, the cache is
written as generations finish, an interrupted run resumes without regenerating, reports exist and parse, and
`--score-only` on the written items reproduces the metrics exactly."""

from __future__ import annotations

import json

import pytest

from spark_vl.eval import GenerationCache, evaluate, get_benchmark, load_benchmark
from spark_vl.eval.cli import main
from tests.unit._eval_fixtures import image_struct, write_parquet

MODEL = "builtin:tiny-qwen2.5-vl"
TOKENS = 6


def _mathvista_rows():
    rows = []
    for i in range(5):
        rows.append({
            "pid": str(i), "question": f"How many circles are there? ({i})", "image": f"images/{i}.png",
            "decoded_image": image_struct(f"{i}.png", (20 * i, 100, 100)), "choices": None, "unit": None,
            "precision": None, "answer": str(i + 1), "question_type": "free_form", "answer_type": "integer",
            "metadata": {"task": "figure QA", "skills": ["counting"], "grade": "elementary school"},
            "query": f"Question: How many circles are there? ({i})",
        })
    rows[3]["decoded_image"] = None  # the image is missing: reported, not generated, the run goes on
    return rows


def _vlrb_rows():
    return [{"id": f"mathverse_{i}", "query": "What is shown?", "response": ["a circle", "two squares"],
             "image": image_struct(f"r{i}.png"), "human_ranking": [0, 1], "query_source": "mathverse"}
            for i in range(2)]


@pytest.fixture
def data(tmp_path):
    return (write_parquet(tmp_path / "MathVista", "testmini", _mathvista_rows()),
            write_parquet(tmp_path / "VLRB", "test", _vlrb_rows()))


class Dies(Exception):
    pass


class CountingEngine:
    """Wraps the real HF engine; counts prompts sent and can die on a given call (like a kill)."""

    def __init__(self, engine, die_at: int | None = None):
        self.engine, self.die_at, self.calls, self.generated = engine, die_at, 0, 0
        self.model, self.processor = engine.model, engine.processor

    def generate(self, prompts, n, sampling):
        self.calls += 1
        if self.calls == self.die_at:
            raise Dies("killed")
        self.generated += len(prompts) * n
        return self.engine.generate(prompts, n, sampling)


def test_evaluate_resume_and_reports(tmp_path, data, tiny_qwen25):
    from spark_vl.config import RolloutConfig
    from spark_vl.rollout import make_engine

    mathvista, vlrb = data
    out = tmp_path / "out"
    model, processor = tiny_qwen25
    loaded = {"mathvista": load_benchmark(get_benchmark("mathvista"), str(mathvista))}

    # First run: dies on its second batch, after the first 2 generations were cached.
    dying = CountingEngine(make_engine(RolloutConfig(), model, processor), die_at=2)
    with pytest.raises(Dies):
        evaluate(dying, loaded, model_id=MODEL, batch_size=2, max_new_tokens=TOKENS,
                 cache=GenerationCache(out / "cache", MODEL))
    cache_file = GenerationCache(out / "cache", MODEL).path(f"spark[max_new_tokens={TOKENS}]", "mathvista", "greedy")
    assert len(cache_file.read_text().splitlines()) == 2

    # Restart through the CLI: only the 2 remaining items with images are generated (+ 2 reward items).
    argv = ["--model", MODEL, "--benchmarks", "mathvista,vl_rewardbench", "--data", f"mathvista={mathvista}",
            "--data", f"vl_rewardbench={vlrb}", "--max-new-tokens", str(TOKENS), "--batch-size", "2",
            "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["generated_items"] == 2 + 2
    assert len(cache_file.read_text().splitlines()) == 4
    mv = metrics["benchmarks"]["mathvista"]["greedy"]
    assert mv["num_items"] == 5 and mv["image_errors"] == 1 and mv["protocol"] == f"spark[max_new_tokens={TOKENS}]"
    assert [p["uid"] for p in mv["problems"] if p["status"] == "image_error"] == ["3"]
    assert metrics["benchmarks"]["vl_rewardbench"]["greedy"]["num_items"] == 2

    # Reports exist and parse.
    table = (out / "results.md").read_text()
    assert "| MathVista | Avg-M | VL-RB | VL-RB-Math | Avg-R | Avg |" in table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    items = [json.loads(line) for line in (out / "items" / "mathvista.greedy.jsonl").read_text().splitlines()]
    assert len(items) == 5 and all({"prompt", "response", "extracted", "correct"} <= set(i) for i in items)
    assert "\\boxed{}" in items[0]["prompt"]  # SPARK's suffix

    # A second full run generates nothing.
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["generated_items"] == 0

    # --score-only on the written items reproduces every number.
    rescored = tmp_path / "rescored"
    assert main(["--score-only", str(out), "--protocol", "spark", "--out", str(rescored), "--no-chart"]) == 0
    again = json.loads((rescored / "metrics.json").read_text())["benchmarks"]
    for name in ("mathvista", "vl_rewardbench"):
        for key in ("accuracy", "num_correct", "no_answer", "image_errors"):
            assert again[name]["greedy"][key] == metrics["benchmarks"][name]["greedy"][key]
