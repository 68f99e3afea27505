import subprocess
import sys

import pytest

from spark_vl.config import ConfigError, derived, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key trainer.leraning_rate.*did you mean trainer.lr"):
        load_config(write(tmp_path, "trainer:\n  leraning_rate: 1\n"))
    with pytest.raises(ConfigError, match=r"did you mean algorithm.kl_coef"):
        load_config(None, ["algorithm.kl_coeff=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key trainr.*did you mean trainer"):
        load_config(None, ["trainr.lr=0.1"])


def test_wrong_types_name_key_and_value():
    with pytest.raises(ConfigError, match=r"trainer.prompts_per_step='eight' must be an integer"):
        load_config(None, ["trainer.prompts_per_step=eight"])
    with pytest.raises(ConfigError, match=r"algorithm.loss_agg='mean' is not allowed"):
        load_config(None, ["algorithm.loss_agg=mean"])
    with pytest.raises(ConfigError, match=r"model.gradient_checkpointing=1 must be true or false"):
        load_config(None, ["model.gradient_checkpointing=1"])


def test_batch_sizes_must_divide():
    with pytest.raises(ConfigError, match=r"sequences_per_optimizer_step=12 must divide .* = 32"):
        load_config(None, ["trainer.prompts_per_step=8", "rollout.samples_per_prompt=4",
                           "trainer.sequences_per_optimizer_step=12", "trainer.micro_batch_size=4"])
    with pytest.raises(ConfigError, match=r"multiple of trainer.micro_batch_size x world size"):
        load_config(None, ["trainer.sequences_per_optimizer_step=16", "trainer.micro_batch_size=3"])


def test_impossible_values():
    with pytest.raises(ConfigError, match=r"trainer.lr=-1.0 must be positive"):
        load_config(None, ["trainer.lr=-1"])
    with pytest.raises(ConfigError, match=r"spark.pointwise_prob=1.5 must lie in \[0, 1\]"):
        load_config(None, ["spark.pointwise_prob=1.5"])


def test_overrides_and_derived_quantities():
    cfg = load_config("configs/demo_cpu.yaml", ["trainer.rollout_steps=10", "algorithm.kl_coef=0.001",
                                                 "data.train=builtin:synthetic"])
    assert cfg.trainer.rollout_steps == 10 and cfg.algorithm.kl_coef == 0.001
    assert cfg.data.train == ["builtin:synthetic"]
    d = derived(cfg, world_size=1)
    # 8 prompts x 4 samples = 32 sequences; 16 per optimizer step -> 2 optimizer steps; micro 8 -> accum 2
    assert (d.sequences_per_rollout_step, d.optimizer_steps_per_rollout_step, d.grad_accum_steps) == (32, 2, 2)
    assert d.total_optimizer_steps == 20
    assert derived(cfg, world_size=2).grad_accum_steps == 1


@pytest.mark.parametrize("overrides, policy, aux", [
    ([], True, True),  # 8 x 2 = 16 sequences, one optimizer step per phase, one epoch
    (["trainer.sequences_per_optimizer_step=8"], False, False),  # two optimizer steps: the second is off-policy
    (["algorithm.ppo_epochs=2"], False, False),  # the second epoch is off-policy
    (["algorithm.reuse_old_logprobs=false"], False, False),
    (["spark.samples_per_prompt=4"], True, False),  # the auxiliary phase: 32 sequences, two steps
])
def test_old_logprobs_are_reused_only_for_a_single_on_policy_step(overrides, policy, aux):
    cfg = load_config(None, ["trainer.prompts_per_step=8", "rollout.samples_per_prompt=2",
                             "trainer.sequences_per_optimizer_step=16", "trainer.micro_batch_size=4",
                             "spark.enabled=true", *overrides])
    d = derived(cfg)
    assert (d.reuse_old_logprobs, d.aux_reuse_old_logprobs) == (policy, aux)


def test_every_preset_loads():
    from pathlib import Path

    presets = sorted(Path("configs").rglob("*.yaml"))
    assert presets
    for path in presets:
        load_config(path)


def test_cli_bad_config_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu.yaml",
                           "trainer.leraning_rate=3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "did you mean trainer.lr" in proc.stderr
    assert "Traceback" not in proc.stderr
