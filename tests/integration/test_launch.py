"""Launchers: scripts/launch/slurm.sh's per-node torchrun commands for 2 simulated nodes (DRY_RUN and through a
fake srun), and a 2-process training run through the `deepspeed` launcher on CPU."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ._train_utils import clean_env
from .test_distributed import COMMON, free_port

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "scripts" / "launch" / "slurm.sh"
CONFIG = "configs/qwen2_5_vl/32b_grpo.yaml"


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # scontrol show hostnames node[01-02] -> one host per line
    executable(bin_dir / "scontrol", "#!/bin/sh\necho node01\necho node02\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[01-02]",
            "SLURM_GPUS_ON_NODE": "8", **extra}


def parse_torchrun(words: list[str]) -> dict[str, str]:
    i = words.index("torch.distributed.run")
    opts, j = {}, i + 1
    while words[j] != "-m":
        opts[words[j]] = words[j + 1]
        j += 2
    opts["module"], opts["args"] = words[j + 1], words[j + 2 :]
    return opts


def test_slurm_dry_run_two_nodes(tmp_path):
    proc = subprocess.run(["bash", str(SLURM), CONFIG, "trainer.save_every=10", "--resume", "latest"], cwd=ROOT,
                          env=slurm_env(tmp_path, DRY_RUN="1"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["node 0", "node 1"]
    runs = [parse_torchrun(shlex.split(line.split(": ", 1)[1])) for line in lines]
    for rank, opts in enumerate(runs):
        assert opts["--node_rank"] == str(rank)
        assert (opts["--nnodes"], opts["--nproc_per_node"]) == ("2", "8")
        assert opts["--rdzv_endpoint"] == "node01:29500"  # the first node of the allocation, same for both
        assert opts["module"] == "spark_vl.cli"
        assert opts["args"] == ["train", "--config", CONFIG, "trainer.save_every=10", "--resume", "latest"]


def test_slurm_srun_path_runs_one_torchrun_per_node(tmp_path):
    """The real (non-dry) path: a fake srun runs the task once per node with SLURM_NODEID set, and a fake python
    records its argv, so the quoting of the generated command is checked as bash executes it."""
    record = tmp_path / "calls.jsonl"
    fake_python = executable(tmp_path / "python", f"#!{sys.executable}\nimport json, os, sys\n"
                             f"open({str(record)!r}, 'a').write(json.dumps([os.environ['SLURM_NODEID'], sys.argv[1:]])"
                             " + '\\n')\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "srun", "#!/bin/bash\nshift 2\nfor id in $(seq 0 $((SLURM_NNODES - 1))); do "
               "SLURM_NODEID=$id \"$@\" || exit 1; done\n")
    env = slurm_env(tmp_path, PYTHON=str(fake_python), MASTER_PORT="29555")
    proc = subprocess.run(["bash", str(SLURM), CONFIG, "data.train=[a b]"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c[0] for c in calls] == ["0", "1"]
    for node_id, argv in calls:
        opts = parse_torchrun(["python", *argv])
        assert opts["--node_rank"] == node_id and opts["--rdzv_endpoint"] == "node01:29555"
        assert opts["args"][-1] == "data.train=[a b]"  # an argument with a space survives both shells


@pytest.mark.slow
def test_deepspeed_launcher_two_processes_on_cpu(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_nodes", "1", "--num_gpus", "2",
           "--master_port", str(free_port()), "--module", "spark_vl.cli", "train", "--config",
           "configs/demo_cpu.yaml", *COMMON, "trainer.rollout_steps=1", "deepspeed.zero_stage=2",
           f"trainer.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=clean_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "world_size: 2" in proc.stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]
