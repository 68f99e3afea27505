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
