"""scripts/gpu_check.py in its CPU dry mode: the tiny shape through the same phase code (model from the shape,
the project's DeepSpeed config, chunked log-probs, one step) and the markdown table with the plan's estimate."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from ._train_utils import clean_env

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run", "--phases", "tiny:3",
                           "--out", str(out)], cwd=ROOT, env=clean_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "3" and cells[3] == "2 x 64"
    assert float(cells[6]) > 0 and float(cells[8].replace(",", "")) > 0  # plan GiB, tokens/s


def test_gpu_check_phase_configs_validate_and_fit_an_h100():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    for size, stage, offload in gpu_check.PHASES:
        cfg = gpu_check.phase_config(size, stage, offload, steps=3)
        assert cfg.trainer.micro_batch_size * (cfg.data.max_prompt_length + cfg.rollout.max_new_tokens) > 0
        _, fits = gpu_check.plan_estimate(cfg, 80 * 2**30)
        assert fits or (size, stage) == ("7b", 0)  # 7B with fp32 Adam on one 80 GB GPU: 16 B/param = 124 GiB
