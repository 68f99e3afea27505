"""A short tiny-model training run with rollout.backend=vllm learns on the synthetic colour task like the hf backend.

Both runs (subprocesses of the CLI, same seed and config) start from a random model that never writes a boxed
answer; the supervised warm start teaches the format, and the rollouts must show it: with a broken weight push
vLLM would keep sampling from the initial model and the format rate of its rollouts would stay at 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest

from tests.integration._train_utils import clean_env

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ARGS = ["model.path=builtin:tiny-qwen2.5-vl-hd64", "data.synthetic_tasks=[color]", "data.val_size=16",
        "rollout.max_new_tokens=24", "trainer.rollout_steps=30", "trainer.eval_every=0", "trainer.save_every=0",
        "logging.progress=false", "logging.tensorboard=false", "rollout.vllm_max_model_len=512"]


def run(tmp_path: Path, backend: str) -> list[dict]:
    out = tmp_path / backend
    cmd = [sys.executable, "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu.yaml", *ARGS,
           f"rollout.backend={backend}", f"trainer.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]


def test_vllm_training_learns_like_hf(tmp_path):
    runs = {backend: run(tmp_path, backend) for backend in ("hf", "vllm")}
    summary = {}
    for backend, steps in runs.items():
        fmt = [m["reward/format"] for m in steps]
        summary[backend] = {"sft_first": steps[0]["loss/sft"], "sft_last": steps[-1]["loss/sft"],
                            "format_first5": mean(fmt[:5]), "format_last10": mean(fmt[-10:]),
                            "reward_last10": mean(m["reward/mean"] for m in steps[-10:])}
    print(json.dumps(summary, indent=1))
    for backend, s in summary.items():
        assert s["sft_last"] < 0.3 * s["sft_first"], backend
        assert s["format_first5"] < 0.05 and s["format_last10"] > 0.2, backend  # the rollouts follow the training
    assert summary["vllm"]["format_last10"] > 0.5 * summary["hf"]["format_last10"] - 0.05
    for m in runs["vllm"]:  # the sampler gap stays small; nothing leaves the IS band
        assert m["rollout/logprob_abs_diff"] < 0.02 and m["rollout/is_outside_frac"] == 0.0
        assert "rollout/is_ratio_max" in m
