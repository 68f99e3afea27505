"""The evaluation runner with a fake engine: batching, the cache and resume, bad items, TTS rows, the trainer hook."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from spark_vl.eval import GenerationCache, evaluate
from spark_vl.types import Sample
from tests.unit._eval_fixtures import FakeEngine, png


def _samples(n: int, tmp_path=None) -> list[Sample]:
    return [Sample(uid=f"q{i}", problem=f"What is {i} + 1?", answer=str(i + 1), images=[png()], category="add")
            for i in range(n)]


def _right(text: str, k: int) -> str:
    i = int(text.split("What is ")[1].split(" ")[0])
    return f"\\boxed{{{i + 1}}}"


class Interrupt(Exception):
    pass


class DyingEngine(FakeEngine):
    """Dies (like a kill) on its `die_at`-th generate call."""

    def __init__(self, answer, die_at: int):
        super().__init__(answer)
        self.die_at = die_at

    def generate(self, prompts, n, sampling):
        if self.calls + 1 == self.die_at:
            raise Interrupt("killed")
        return super().generate(prompts, n, sampling)


def test_cache_resume_counts_generations(tmp_path):
    samples = _samples(10)
    cache = GenerationCache(tmp_path / "cache", "fake-model")
    with pytest.raises(Interrupt):
        evaluate(DyingEngine(_right, die_at=3), {"val": samples}, batch_size=4, cache=cache)
    path = cache.path("spark", "val", "greedy")
    assert len(path.read_text().splitlines()) == 8  # two batches written before the "kill"
    engine = FakeEngine(_right)
    result = evaluate(engine, {"val": samples}, batch_size=4, cache=GenerationCache(tmp_path / "cache", "fake-model"))
    assert engine.generated == 2 and result.generated == 2  # only the missing items
    assert result.get("val").metrics["accuracy"] == 1.0
    again = FakeEngine(_right)
    evaluate(again, {"val": samples}, batch_size=4, cache=GenerationCache(tmp_path / "cache", "fake-model"))
    assert again.generated == 0


def test_torn_cache_line_is_ignored(tmp_path):
    samples = _samples(3)
    cache = GenerationCache(tmp_path, "m")
    evaluate(FakeEngine(_right), {"val": samples}, cache=cache)
    path = cache.path("spark", "val", "greedy")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # killed mid-write
    engine = FakeEngine(_right)
    fresh = GenerationCache(tmp_path, "m")
    result = evaluate(engine, {"val": samples}, cache=fresh)
    assert engine.generated == 1 and fresh.torn_lines == 1 and result.get("val").metrics["accuracy"] == 1.0
    assert all(json.loads(line) for line in path.read_text().splitlines()[-1:])


def test_changed_decoding_is_not_served_from_cache(tmp_path):
    samples = _samples(2)
    evaluate(FakeEngine(_right), {"val": samples}, cache=GenerationCache(tmp_path, "m"))
    engine = FakeEngine(_right)
    result = evaluate(engine, {"val": samples}, cache=GenerationCache(tmp_path, "m"), max_new_tokens=64)
    assert engine.generated == 2 and result.protocol["name"] == "spark[max_new_tokens=64]"


def test_bad_items_are_counted_not_fatal(tmp_path):
    samples = _samples(4)
    samples[1].images = ["missing.png"]  # image file absent
    samples[2].problem = "What is 2 + 1? BOOM"  # the engine fails on this prompt (like an OOM)
    engine = FakeEngine(_right, fail_on="BOOM")
    result = evaluate(engine, {"val": samples}, batch_size=4)
    m = result.get("val").metrics
    assert m["num_items"] == 4 and m["num_correct"] == 2 and m["accuracy"] == 0.5
    assert m["image_errors"] == 1 and m["generation_errors"] == 1
    assert {p["uid"]: p["status"] for p in m["problems"]} == {"q1": "image_error", "q2": "generation_error"}
    assert "missing.png" in next(p["error"] for p in m["problems"] if p["uid"] == "q1")


@dataclass
class FakeRound:
    response: str
    answer: str | None
    judged: bool = False
    verdict: str | None = None


@dataclass
class FakeTrace:
    uid: str
    rounds: list = field(default_factory=list)

    @property
    def final_text(self) -> str:
        return self.rounds[-1].response


def test_self_reflect_and_best_of_n_are_separate_rows(tmp_path):
    samples = _samples(4)
    calls = {}

    def reflect_fn(engine, prompts, sampling, *, max_rounds, judge_input, extract_mode):
        calls.update(max_rounds=max_rounds, judge_input=judge_input, extract_mode=extract_mode)
        traces = []
        for p in prompts:  # first answer wrong, the reflection fixes it for q0 and q1 only
            fixed = p.uid in ("q0", "q1")
            rounds = [FakeRound("\\boxed{0}", "0", True, "No"),
                      FakeRound(f"\\boxed{{{p.sample.answer if fixed else 0}}}", "")]
            traces.append(FakeTrace(p.uid, rounds))
        return traces

    def judge_fn(model, processor, prompts, responses, form):
        assert form == "pointwise"
        return [0.9 if r == p.sample.answer else 0.1 for p, r in zip(prompts, responses, strict=True)]

    def sampled(text, k):  # candidate 0: no box, 1: wrong, 2: right
        return ["no idea", "\\boxed{0}", _right(text, k)][k]

    result = evaluate(FakeEngine(sampled), {"val": samples}, self_reflect=True, max_rounds=2, best_of_n=3,
                      reflect_fn=reflect_fn, judge_fn=judge_fn, cache=GenerationCache(tmp_path, "m"))
    assert result.modes == ["greedy", "self_reflect", "best_of_3"]
    assert calls == {"max_rounds": 2, "judge_input": "answer", "extract_mode": "first"}
    assert result.get("val", "greedy").metrics["accuracy"] == 0.0  # candidate 0 of greedy has no box
    sr = result.get("val", "self_reflect").metrics
    assert sr["accuracy"] == 0.5 and sr["mean_rounds"] == 2.0
    assert sr["accept_rate_by_round"] == {"1": 0.0}
    assert (sr["first_answer_accuracy"], sr["fixed"], sr["broken"]) == (0.0, 2, 0)
    bon = result.get("val", "best_of_3")
    assert bon.metrics["accuracy"] == 1.0 and bon.metrics["pass_at_n"] == 1.0
    assert bon.metrics["mean_candidate_accuracy"] == pytest.approx(1 / 3)
    assert bon.records[0].extra["judge_scores"] == [-1.0, 0.1, 0.9]  # no answer -> never picked
    flat = result.flat_metrics()
    assert flat["eval/val/accuracy"] == 0.0 and flat["eval/val@self_reflect/accuracy"] == 0.5


def test_spark_self_reflect_call_site(tmp_path):
    """The real spark_vl.spark.self_reflect runs through the same call site (fake engine: judge says Yes)."""
    pytest.importorskip("spark_vl.spark")
    def answer(text, k):
        return "\\boxed{Yes}" if "Yes" in text or "correct" in text.lower() else _right(text, k)

    engine = FakeEngine(answer)
    result = evaluate(engine, {"val": _samples(2)}, self_reflect=True)
    sr = result.get("val", "self_reflect")
    assert sr.metrics["accuracy"] == 1.0
    assert sr.records[0].extra["rounds"][0]["answer"] == "1"


def test_trainer_hook_without_files():
    result = evaluate(FakeEngine(_right), {"val": _samples(3)}, "spark", max_new_tokens=32, batch_size=2)
    flat = result.flat_metrics()
    assert flat["eval/val/accuracy"] == 1.0 and flat["eval/val/num_items"] == 3.0
    assert result.get("val").metrics["by_category"] == {"add": {"accuracy": 1.0, "n": 3}}


def test_llm_judge_hook_renames_protocol_and_keeps_cache(tmp_path):
    class Lenient:
        name = "lenient"

        def __call__(self, sample, response, extracted):
            return True if extracted is None else None  # only decides items the rules could not read

    samples = _samples(2)
    plain = evaluate(FakeEngine(lambda text, k: "no box"), {"val": samples}, cache=GenerationCache(tmp_path, "m"))
    assert plain.get("val").metrics["accuracy"] == 0.0
    engine = FakeEngine(_right)
    result = evaluate(engine, {"val": samples}, cache=GenerationCache(tmp_path, "m"), llm_judge=Lenient())
    assert engine.generated == 0  # the same generations, served from the cache
    assert result.protocol["name"] == "spark+judge:lenient"
    record = result.get("val").records[0]
    assert record.correct and record.decided_by == "llm_judge:lenient" and record.extra["rule_correct"] is False


def test_missing_data_path_is_reported_as_a_path(tmp_path, capsys):
    """`--data mathvista=<typo>`: a missing local path, not a failed hub download."""
    from spark_vl.eval.cli import main

    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"uid": "1", "response": "x"}\n')
    missing = tmp_path / "data" / "MathVsta"
    code = main(["--score-only", str(preds), "--benchmarks", "mathvista", "--data", f"mathvista={missing}",
                 "--out", str(tmp_path / "out"), "--no-chart"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"data path {missing} does not exist" in err and "hub" not in err.split("does not exist")[0]
