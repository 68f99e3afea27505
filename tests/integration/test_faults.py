"""Fault tests on the real trainer (issue 16, docs/RELIABILITY.md): kills, doctored and used run folders.

One short run (2 steps, a checkpoint each) is trained once per module and copied for each test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spark_vl.cli import main as spark_vl
from spark_vl.config import ConfigError
from spark_vl.models.export import list_checkpoints, resolve_checkpoint
from spark_vl.trainer.loop import train

from ._train_utils import clean_env, fast_config, read_metrics

STEPS = ["trainer.rollout_steps=2", "trainer.save_every=1", "trainer.keep_last=3"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return train(fast_config(tmp_path_factory.mktemp("faults") / "run", *STEPS))


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


# ------------------------------------------------------------------------ 2. a run never loses its checkpoints


def test_fresh_start_in_a_used_folder_refuses_naming_the_flags(run):
    with pytest.raises(ConfigError, match=r"--resume latest.*trainer\.overwrite=true"):
        train(fast_config(run, "trainer.rollout_steps=1", "trainer.save_every=1"))
    assert [c.name for c in list_checkpoints(run)] == ["step-000001", "step-000002"]


def test_overwrite_starts_clean_and_keeps_its_own_checkpoints(run):
    train(fast_config(run, "trainer.rollout_steps=1", "trainer.save_every=1", "trainer.overwrite=true"))
    assert [c.name for c in list_checkpoints(run)] == ["step-000001"]  # the old step-000002 is gone, not resumed
    assert [m["step"] for m in read_metrics(run)] == [0, 1]
    assert resolve_checkpoint("latest", run).name == "step-000001"


def test_incomplete_step_folders_are_never_chosen(run):
    torn = run / "checkpoints" / "step-000003"
    shutil.copytree(run / "checkpoints" / "step-000002", torn)
    (torn / "COMPLETE").unlink(missing_ok=True)
    (torn / "engine" / "state" / "mp_rank_00_model_states.pt").write_bytes(b"torn")
    assert resolve_checkpoint("latest", run).name == "step-000002"
    assert [c.name for c in list_checkpoints(run)] == ["step-000001", "step-000002"]
    with pytest.raises(FileNotFoundError, match="incomplete"):
        resolve_checkpoint(str(torn), run)
    assert spark_vl(["export", str(run), str(run / "exported")]) == 0  # the newest complete one


def test_replacing_a_checkpoint_of_the_same_step_is_atomic(run, monkeypatch):
    """A crash between 'old out' and 'new in' leaves the old checkpoint aside, never no checkpoint at all."""
    from spark_vl.trainer import checkpoint as ckpt

    new = run / "checkpoints" / ".tmp-step-000002"
    shutil.copytree(run / "checkpoints" / "step-000001", new)
    renames = []
    real_rename = Path.rename

    def rename(self, target):
        renames.append((Path(self).name, Path(target).name))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: renames.append(("rmtree", Path(a[0]).name)))
    ckpt.replace_dir(new, run / "checkpoints" / "step-000002")
    assert renames == [("step-000002", ".old-step-000002"), (".tmp-step-000002", "step-000002"),
                       ("rmtree", ".old-step-000002")]


def test_torn_metrics_line_and_samples_are_cut_to_the_resume_point(run):
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward/mean": 0.')  # killed mid-write
    (run / "samples.jsonl").write_text("".join(json.dumps({"step": s, "uid": "x"}) + "\n" for s in (1, 2, 3)))
    shutil.rmtree(run / "checkpoints" / "step-000002")
    train(fast_config(run, "trainer.rollout_steps=2", "trainer.save_every=1", "trainer.keep_last=3"),
          resume="latest")
    assert [m["step"] for m in read_metrics(run)] == [0, 1, 2]
    samples = [json.loads(line)["step"] for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples == [1, 2] or samples == [1]  # the old lines after step 1 are gone (step 2 rewrote its own)
    assert 3 not in samples


def test_kill_then_resume_latest_gives_the_uninterrupted_metrics(finished, tmp_path):
    """SIGKILL a 4-step run right after its second checkpoint, then resume: metrics equal a run never killed."""
    out = tmp_path / "killed"
    overrides = ["trainer.rollout_steps=4", "trainer.save_every=1", "trainer.keep_last=3"]
    cmd = [sys.executable, "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu.yaml",
           *fast_overrides(), f"trainer.output_dir={out}", *overrides]
    proc = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "checkpoints" / "step-000002" / "COMPLETE").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    train(fast_config(out, *overrides), resume="latest")
    full = train(fast_config(tmp_path / "full", *overrides))
    a = {m["step"]: m for m in read_metrics(full)}
    b = {m["step"]: m for m in read_metrics(out)}
    assert sorted(a) == sorted(b) == [0, 1, 2, 3, 4]
    for step in a:
        for k in a[step]:
            if not k.startswith("time/"):
                assert a[step][k] == pytest.approx(b[step][k], rel=1e-6, abs=1e-7, nan_ok=True), (step, k)


def fast_overrides() -> list[str]:
    from ._train_utils import FAST

    return list(FAST)


# ------------------------------------------------------------------------------ 4. loading a checkpoint runs no code


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _doctor(file: Path, marker: Path) -> None:
    state = torch.load(file, weights_only=False)
    state["payload"] = _Payload(marker)
    torch.save(state, file)


def test_doctored_trainer_state_is_refused_on_resume(run, tmp_path):
    marker = tmp_path / "pwned"
    _doctor(run / "checkpoints" / "step-000002" / "trainer_state_rank0.pt", marker)
    with pytest.raises(Exception, match="trainer_state_rank0.pt"):
        train(fast_config(run, "trainer.rollout_steps=3", "trainer.save_every=1"), resume="latest")
    assert not marker.exists()


def test_doctored_engine_state_is_refused_on_resume_and_export(run, tmp_path):
    marker = tmp_path / "pwned"
    _doctor(run / "checkpoints" / "step-000002" / "engine" / "state" / "mp_rank_00_model_states.pt", marker)
    with pytest.raises(Exception, match="mp_rank_00_model_states.pt"):
        train(fast_config(run, "trainer.rollout_steps=3", "trainer.save_every=1"), resume="latest")
    assert not marker.exists()
    assert spark_vl(["export", str(run), str(tmp_path / "exported")]) == 1
    assert not marker.exists()


def test_doctored_zero_optimizer_state_is_refused_on_export(tmp_path):
    run = train(fast_config(tmp_path / "z2", "trainer.rollout_steps=1", "deepspeed.zero_stage=2"))
    marker = tmp_path / "pwned"
    (optim,) = (list_checkpoints(run)[-1] / "engine" / "state").glob("*optim_states.pt")
    _doctor(optim, marker)
    assert spark_vl(["export", str(run), str(tmp_path / "exported")]) == 1
    assert not marker.exists()


# ------------------------------------------------------------------ 6. every user mistake: one line, exit 2, no load


def _train_cli(tmp_path, capsys, *overrides: str, resume: str | None = None) -> tuple[int, str, float]:
    argv = ["train", "--config", "configs/demo_cpu.yaml", f"trainer.output_dir={tmp_path / 'out'}", *overrides]
    start = time.monotonic()
    code = spark_vl(argv + (["--resume", resume] if resume else []))
    return code, capsys.readouterr().err.strip(), time.monotonic() - start


@pytest.mark.parametrize(("overrides", "resume", "message"), [
    (["data.train=[missing/rows.jsonl]"], None, "data.train entry 'missing/rows.jsonl' does not exist"),
    (["data.val=[./nope.parquet]"], None, "data.val entry './nope.parquet' does not exist"),
    (["model.path=./checkpoints/qwen"], None, "model.path='./checkpoints/qwen' is neither"),
    (["model.path=tests/no-such-model"], None, "model.path='tests/no-such-model' is neither"),
    (["model.path=builtin:tiny-llama"], None, "not a builtin model"),
    (["data.format_template=boxxed"], None, "data.format_template='boxxed'"),
    (["reward.name=maths"], None, "maths"),
    (["deepspeed.config_file=missing_ds.json"], None, "deepspeed.config_file='missing_ds.json'"),
    (["trainer.device=cuda"], None, "trainer.device=cuda"),
    ([], "latest", "--resume latest: no complete checkpoint"),
    (["trainer.lr=1e-5", "trainer.output_dir=/proc/forbidden"], None, "not writable"),
])
def test_user_mistakes_exit_2_with_one_line_before_any_load(tmp_path, capsys, monkeypatch, overrides, resume,
                                                            message):
    from spark_vl.trainer import loop

    if "trainer.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    monkeypatch.setattr(loop, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, err, _ = _train_cli(tmp_path, capsys, *overrides, resume=resume)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert message in err, err


# --------------------------------------------------------------------- 8. a one-process run compiles nothing


def test_one_process_run_builds_no_communication_extension(tmp_path):
    """DeepSpeed's CPU comm backend JIT-builds its shared-memory op on first use; one process must not need it."""
    extensions = tmp_path / "torch_extensions"
    extensions.mkdir()
    cmd = [sys.executable, "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu.yaml", *fast_overrides(),
           "trainer.rollout_steps=1", "trainer.save_every=0", f"trainer.output_dir={tmp_path / 'run'}"]
    done = subprocess.run(cmd, env=clean_env(TORCH_EXTENSIONS_DIR=str(extensions)), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built successfully" not in done.stdout + done.stderr
    assert not any(extensions.iterdir()), sorted(p.name for p in extensions.rglob("*"))


# --------------------------------------------------------------------- 7. divergence is caught, never applied


class _NanGrad(torch.autograd.Function):
    """Zero in the forward pass (the loss stays finite), NaN in the backward pass: what a blown-up lr produces."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


def _nan_gradients(monkeypatch, when):
    from spark_vl.trainer import loop

    real = loop.Trainer.micro_loss

    def micro_loss(self, batch, *args):
        loss, logp = real(self, batch, *args)
        return (loss + _NanGrad.apply(loss) if when(self.state.step) else loss), logp

    monkeypatch.setattr(loop.Trainer, "micro_loss", micro_loss)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_non_finite_gradient_is_skipped_not_applied(tmp_path, monkeypatch, stage):
    from spark_vl.models.export import consolidated_state_dict

    _nan_gradients(monkeypatch, when=lambda step: step == 0)
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=2", f"deepspeed.zero_stage={stage}"))
    metrics = read_metrics(run)
    assert metrics[1]["actor/skipped_updates"] == 1.0  # every optimizer step of step 1 was skipped
    assert metrics[1]["actor/nonfinite_grad_steps"] == 2.0
    assert "actor/skipped_updates" not in metrics[2] and metrics[2]["actor/grad_norm"] > 0
    weights = consolidated_state_dict(list_checkpoints(run)[-1])
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_persistent_non_finite_gradients_abort_with_a_message(tmp_path, monkeypatch):
    from spark_vl.trainer.loop import TrainingAborted

    _nan_gradients(monkeypatch, when=lambda step: True)
    with pytest.raises(TrainingAborted, match="gradient"):
        train(fast_config(tmp_path / "run", "trainer.rollout_steps=5"))


def test_huge_learning_rate_ends_with_a_message_not_a_traceback(tmp_path):
    """lr 1e8: the first update is finite but blows the weights up; the next gradient is NaN (skipped), and the
    next rollout's probabilities are NaN: the run stops with what to change, not inside torch.multinomial."""
    from spark_vl.trainer.loop import TrainingAborted

    with pytest.raises(TrainingAborted, match="trainer.lr"):
        train(fast_config(tmp_path / "run", "trainer.rollout_steps=3", "trainer.lr=1e8"))
