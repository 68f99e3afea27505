"""Train, then evaluate the run directly: `spark-vl eval --model <run dir>` exports its latest checkpoint."""

import json

from spark_vl.cli import main as cli_main
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.trainer.loop import train

from ._train_utils import fast_config


def test_eval_a_training_run_with_self_reflection(tmp_path):
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=1"))
    rows = []
    for i, s in enumerate(synthetic_samples(3, seed=21)):
        s.images[0].save(tmp_path / f"i{i}.png")
        rows.append({"id": s.uid, "problem": s.problem, "answer": s.answer, "images": [f"i{i}.png"]})
    data = tmp_path / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    code = cli_main(["eval", "--model", str(run), "--benchmarks", f"prepared:{data}", "--out", str(out),
                     "--max-new-tokens", "8", "--self-reflect", "--device", "cpu"])
    assert code == 0
    assert (out / "model" / "model.safetensors").exists()  # exported once from the run's latest checkpoint
    metrics = json.loads((out / "metrics.json").read_text())
    text = json.dumps(metrics)
    assert "self_reflect" in text and "greedy" in text
