"""The README's first command, shortened: the demo configs run through the CLI and leave every output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._train_utils import clean_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("config", ["configs/demo_cpu.yaml", "configs/demo_cpu_spark.yaml"])
def test_demo_config_runs_through_cli(tmp_path, config):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spark_vl.cli", "train", "--config", config, "trainer.rollout_steps=3",
           "trainer.eval_every=0", "data.val_size=8", "trainer.save_every=0", f"trainer.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# derived" in proc.stdout and "grad_accum_steps: 2" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for key in ("reward/mean", "reward/accuracy", "reward/format", "response/length_mean", "actor/entropy",
                "actor/clipfrac", "actor/grad_norm", "actor/lr", "loss/sft", "time/rollout", "time/update"):
        assert key in rows[1], key
    if "spark" in config:
        assert any(k.startswith("spark/recycle/") for k in rows[1])
    for name in ("config.yaml", "summary.md", "curves.png"):
        assert (out / name).exists(), name
    assert list((out / "tensorboard").glob("events.*"))
    assert "Before training" in (out / "summary.md").read_text()
    assert (out / "checkpoints" / "step-000003" / "engine").is_dir()


def test_spark_demo_judge_learns(tmp_path):
    """The whole SPARK CPU demo (about 9 minutes): the policy masters the colour task and its own judge, scored on
    held-out questions shown with the gold and with a wrong answer, rises from chance (docs/SPARK.md §11)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu_spark.yaml",
           "trainer.eval_every=100", "trainer.save_every=0", "logging.progress=false", f"trainer.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=2400, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "eval/judge_auc" in r]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == 300
    assert abs(first["eval/judge_auc"] - 0.5) < 0.1 and first["eval/judge_accuracy"] == pytest.approx(0.5, abs=0.1)
    assert last["eval/accuracy"] >= 0.9  # the policy
    assert last["eval/judge_auc"] >= 0.8 and last["eval/judge_accuracy"] >= 0.7
    assert last["eval/judge_p_yes_correct"] - last["eval/judge_p_yes_wrong"] >= 0.3
    summary = (out / "summary.md").read_text()
    assert f"accuracy **{first['eval/judge_accuracy']:.3f}** -> **{last['eval/judge_accuracy']:.3f}**" in summary
