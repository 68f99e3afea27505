"""Text-only rows end to end: a mixture of an image dataset and a text-only jsonl trains in one step (policy and
SPARK auxiliary prompts built from text-only rows), with the same prompt-length accounting, and evaluates."""

from __future__ import annotations

import json
import math

import pytest

from spark_vl.trainer.loop import train

from ._train_utils import ScriptedEngine, fast_config, read_metrics

SEEN: list[tuple[str, int, str]] = []  # (prompt kind, number of images, sample source) per generated prompt


class RecordingEngine(ScriptedEngine):
    """The scripted backend, recording what each generate call was given."""

    def generate(self, prompts, n, sampling):
        SEEN.extend((p.kind, len(p.images), p.sample.source) for p in prompts)
        return super().generate(prompts, n, sampling)


def _text_rows(path, n: int = 16):
    rows = [{"id": f"t{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i), "source": "arith"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mixture_of_image_and_text_only_rows_trains_with_spark(tmp_path, monkeypatch):
    import importlib

    recycle = importlib.import_module("spark_vl.spark.recycle")  # the module (spark_vl.spark.recycle is a function)
    built: list[tuple[str, int]] = []
    real = recycle.make_aux_prompt

    def recording(origin, template, **kw):
        built.append((origin.sample.source, len(origin.images)))
        return real(origin, template, **kw)

    monkeypatch.setattr(recycle, "make_aux_prompt", recording)
    SEEN.clear()
    data = _text_rows(tmp_path / "arith.jsonl")
    run = train(fast_config(
        tmp_path / "run", "trainer.rollout_steps=2", f"rollout.backend={__name__}:RecordingEngine",
        "spark.enabled=true", "spark.judgment_cap=4", "spark.reflection_cap=4",
        f"data.train=[builtin:synthetic,{data}]", "data.train_weights=[0.5,0.5]",
    ))
    metrics = read_metrics(run)
    assert all(math.isfinite(m["loss/policy"]) for m in metrics[1:])
    assert all("aux/reward/mean" in m for m in metrics[1:]), "no auxiliary phase ran"
    policy = [(k, n, src) for k, n, src in SEEN if k == "policy"]
    assert any(n == 0 and src == "arith" for _, n, src in policy) and any(n > 0 for _, n, _ in policy)
    assert ("arith", 0) in built, "no auxiliary prompt was recycled from a text-only row"
    aux = [(k, n) for k, n, src in SEEN if k in ("judge", "reflect") and src == "arith"]
    assert aux and all(n == 0 for _, n in aux)


@pytest.fixture(scope="module")
def tiny(tiny_qwen25):
    return tiny_qwen25


def test_text_only_prompt_length_judge_and_eval(tiny, tmp_path):
    """Text-only prompts: length counted like any prompt (and over-long ones skipped), the model's own P(yes) and
    benchmark evaluation on the real tiny model."""
    from spark_vl.config import RolloutConfig
    from spark_vl.data.prompts import build_prompt, prompt_length
    from spark_vl.eval import evaluate
    from spark_vl.models.encode import render
    from spark_vl.rollout import make_engine
    from spark_vl.spark import judge_score
    from spark_vl.trainer.data import PromptBuilder
    from spark_vl.types import Sample

    model, processor = tiny
    sample = Sample(uid="t1", problem="What is 2 + 2?", answer="4", images=[])
    prompt = build_prompt(sample, "boxed")
    assert prompt.images == [] and all(part["type"] == "text" for part in prompt.messages[-1]["content"])
    tokens = processor.tokenizer(render(prompt, processor), add_special_tokens=False)["input_ids"]
    assert prompt_length(prompt, processor) == len(tokens)

    cfg = fast_config(tmp_path / "cfg", f"data.max_prompt_length={len(tokens) - 1}")
    builder = PromptBuilder(cfg, processor)
    assert builder(sample, None) is None and builder.skipped["prompt_too_long"] == 1

    p_yes = judge_score(model, processor, [prompt, prompt], ["4", "5"])
    assert len(p_yes) == 2 and all(0.0 < p < 1.0 for p in p_yes)

    engine = make_engine(RolloutConfig(max_new_tokens=4, generation_batch_size=2), model, processor)
    samples = [sample, Sample(uid="t2", problem="What is 3 + 3?", answer="6", images=[])]
    result = evaluate(engine, {"arith": samples}, max_new_tokens=4)
    metrics = result.get("arith").metrics
    assert metrics["num_items"] == 2 and metrics["image_errors"] == 0 and metrics["generation_errors"] == 0
