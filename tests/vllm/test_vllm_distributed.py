"""A 2-rank ZeRO-3 weight push under torchrun (gloo, vLLM's external_launcher, TP 1 per rank), real vLLM on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._train_utils import clean_env
from tests.integration.test_distributed import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_two_rank_zero3_sync(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "tests/vllm/_zero3_sync.py", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=clean_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert ranks[0]["prompt_uids"] != ranks[1]["prompt_uids"]  # each rank generated its own prompts
    for r in ranks:
        print(r)
        assert r["partitioned"]  # the trainer's parameters really were ZeRO-3 partitions
        assert r["tensors"] == r["hf_params"] and r["buckets"] > 5  # every parameter, layer by layer
        assert r["gap_initial"] < 1e-4
        assert r["gap_stale"] > 1e-2  # the optimizer step changed the trainer, not yet vLLM
        assert r["gap_after_sync"] < 1e-4
