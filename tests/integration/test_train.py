"""The real trainer end to end on the builtin tiny models (CPU, single process)."""

import json
import math

import pytest
import torch

from spark_vl.models.export import consolidated_state_dict, list_checkpoints
from spark_vl.models.tiny import build_tiny
from spark_vl.trainer.loop import TrainingAborted, train

from ._train_utils import fast_config, read_metrics


@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_two_steps_change_every_parameter(tmp_path, model):
    run = train(fast_config(tmp_path / "run", f"model.path=builtin:{model}", "trainer.rollout_steps=2"))
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for m in metrics[1:]:
        assert math.isfinite(m["loss/policy"]) and math.isfinite(m["loss/sft"])
        assert math.isfinite(m["actor/grad_norm"]) and m["actor/grad_norm"] > 0
        for key in ("reward/mean", "reward/accuracy", "response/length_mean", "actor/entropy", "actor/clipfrac",
                    "actor/lr", "time/rollout", "time/reward", "time/logprobs", "time/update"):
            assert key in m, key
    before, _ = build_tiny(model, seed=0)
    after = consolidated_state_dict(list_checkpoints(run)[-1])
    unchanged = [name for name, p in before.named_parameters() if torch.equal(p.detach(), after[name].to(p.dtype))]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    assert (run / "summary.md").exists() and (run / "curves.png").exists()
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[0]["step"] == 1 and "<image>" in samples[0]["prompt"]
    assert {"response", "label", "reward", "extracted"} <= set(samples[0])
    assert any((run / "tensorboard").iterdir())


@pytest.mark.parametrize("part", ["vision", "projector"])
def test_frozen_vision_parts_stay_fixed(tmp_path, part):
    run = train(fast_config(tmp_path / "run", f"model.freeze_{part}=true", "trainer.rollout_steps=1"))
    before, _ = build_tiny("tiny-qwen2.5-vl", seed=0)
    after = consolidated_state_dict(list_checkpoints(run)[-1])
    for name, p in before.named_parameters():
        in_vision = ".visual." in f".{name}"
        in_merger = ".merger." in name
        frozen = in_vision and (in_merger if part == "projector" else not in_merger)
        assert torch.equal(p.detach(), after[name]) == frozen, name


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = train(fast_config(tmp_path / "full", "trainer.rollout_steps=4", "trainer.save_every=2",
                             "trainer.keep_last=3", "trainer.eval_every=2"))
    step2 = [c for c in list_checkpoints(full) if c.name.endswith("000002")][0]
    resumed_cfg = fast_config(tmp_path / "resumed", "trainer.rollout_steps=4", "trainer.save_every=2",
                              "trainer.eval_every=2")
    resumed = train(resumed_cfg, resume=str(step2))
    a = {m["step"]: m for m in read_metrics(full)}
    b = {m["step"]: m for m in read_metrics(resumed)}
    assert sorted(b) == [3, 4]
    for step in (3, 4):
        keys = sorted(k for k in a[step] if not k.startswith("time/"))
        assert keys == sorted(k for k in b[step] if not k.startswith("time/"))
        for k in keys:
            assert a[step][k] == pytest.approx(b[step][k], rel=1e-6, abs=1e-7, nan_ok=True), (step, k)


def test_resume_latest_continues_in_place(tmp_path):
    out = tmp_path / "run"
    train(fast_config(out, "trainer.rollout_steps=2", "trainer.save_every=1"))
    train(fast_config(out, "trainer.rollout_steps=3", "trainer.save_every=1"), resume="latest")
    assert [m["step"] for m in read_metrics(out)] == [0, 1, 2, 3]
    assert [c.name for c in list_checkpoints(out)] == ["step-000002", "step-000003"]  # keep_last=2


def test_unwritable_output_dir_fails_at_start(tmp_path):
    from spark_vl.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        train(fast_config(blocker / "run", "trainer.rollout_steps=1"))


def test_non_finite_loss_skips_update_then_aborts(tmp_path, monkeypatch):
    from spark_vl.trainer import loop

    real = loop.Trainer.micro_loss
    calls = {"n": 0}

    def nan_on_first_step(self, batch, *args):
        loss, logp = real(self, batch, *args)
        calls["n"] += 1
        return (loss * float("nan") if self.state.step == 0 else loss), logp

    monkeypatch.setattr(loop.Trainer, "micro_loss", nan_on_first_step)
    run = train(fast_config(tmp_path / "one", "trainer.rollout_steps=2"))
    assert read_metrics(run)[1]["actor/skipped_updates"] == 1.0
    assert "actor/skipped_updates" not in read_metrics(run)[2]

    def always_nan(self, batch, *args):
        loss, logp = real(self, batch, *args)
        return loss * float("nan"), logp

    monkeypatch.setattr(loop.Trainer, "micro_loss", always_nan)
    with pytest.raises(TrainingAborted, match="non-finite loss or gradient norm in 3 consecutive steps"):
        train(fast_config(tmp_path / "always", "trainer.rollout_steps=5"))


@pytest.mark.parametrize("schedule", ["alternate", "mixed"])
def test_spark_schedules_run_and_resume_keeps_queue(tmp_path, schedule, monkeypatch):
    from ._train_utils import SCRIPTED

    overrides = [SCRIPTED, "spark.enabled=true", f"spark.schedule={schedule}", "spark.judgment_cap=4",
                 "spark.reflection_cap=4", "spark.mixed_share=0.5", "trainer.save_every=1", "trainer.keep_last=3"]
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=3", *overrides))
    metrics = read_metrics(run)
    assert all(math.isfinite(m["loss/policy"]) for m in metrics[1:])
    built = ("pointwise", "pairwise", "reflect_cot", "reflect_answer")
    assert all(sum(m[f"spark/recycle/{k}"] for k in built) > 0 for m in metrics[1:])
    assert all(m["spark/recycle/pointwise"] + m["spark/recycle/pairwise"] <= 4 for m in metrics[1:])
    for m in (metrics[0], metrics[-1]):  # held-out judge evaluation before and after training
        assert 0.0 <= m["eval/judge_accuracy"] <= 1.0 and 0.0 <= m["eval/judge_auc"] <= 1.0
        assert 0.0 <= m["eval/judge_pairwise_accuracy"] <= 1.0
    summary = (run / "summary.md").read_text()
    assert "judge AUC" in summary and f"**{metrics[-1]['eval/judge_auc']:.3f}**." in summary
    if schedule == "alternate":
        assert all("aux/reward/mean" in m for m in metrics[1:]), "no auxiliary phase ran"
        assert any(k.startswith("spark/judge/") for k in metrics[-1])
    step2 = [c for c in list_checkpoints(run) if c.name.endswith("000002")][0]
    saved = torch.load(step2 / "trainer_state_rank0.pt", weights_only=True)
    queue = saved["state"]["algorithm"]["spark"]["queue"]
    resumed = train(fast_config(tmp_path / "resumed", "trainer.rollout_steps=3", *overrides), resume=str(step2))
    a, b = read_metrics(run)[-1], read_metrics(resumed)[-1]
    assert queue is not None
    for k in a:
        if not k.startswith("time/"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7, nan_ok=True), k


def test_gradient_checkpointing_gives_the_same_step(tmp_path):
    """Activation checkpointing recomputes the forward: same losses and gradient norm, less memory."""
    plain = read_metrics(train(fast_config(tmp_path / "plain", "trainer.rollout_steps=1")))
    ckpt = read_metrics(train(fast_config(tmp_path / "ckpt", "trainer.rollout_steps=1",
                                          "model.gradient_checkpointing=true")))
    for key in ("loss/sft", "loss/policy", "actor/grad_norm", "reward/mean"):
        assert ckpt[1][key] == pytest.approx(plain[1][key], rel=1e-5, abs=1e-7), key


def test_shared_prompts_give_the_same_steps(tmp_path):
    """trainer.share_prompts (each prompt once per micro-batch in the old, reference and update passes): the same
    run up to float rounding: losses, KL, ratios, gradient norm, the sampler gap and the rewards of later steps."""
    common = ("trainer.rollout_steps=2", "algorithm.kl_coef=0.04", "algorithm.reuse_old_logprobs=false")
    plain = read_metrics(train(fast_config(tmp_path / "plain", *common)))
    shared = read_metrics(train(fast_config(tmp_path / "shared", *common, "trainer.share_prompts=true")))
    for a, b in zip(plain[1:], shared[1:], strict=True):
        for key in ("loss/sft", "loss/policy", "actor/kl", "actor/ratio_mean", "actor/grad_norm", "reward/mean",
                    "rollout/logprob_abs_diff"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    assert plain[2]["actor/kl"] > 1e-9  # after an update the reference differs: the KL term is compared, not 0 = 0


def test_shared_prompts_need_a_separate_text_decoder(tmp_path, monkeypatch):
    """A model without `model.language_model` (the decoder the responses run through alone) is refused at start,
    naming the key to turn off."""
    from types import SimpleNamespace

    from spark_vl.config import ConfigError
    from spark_vl.trainer import loop

    monkeypatch.setattr(loop, "load_model", lambda cfg, device: (SimpleNamespace(model=SimpleNamespace()), None))
    with pytest.raises(ConfigError, match="trainer.share_prompts=false"):
        train(fast_config(tmp_path / "run", "trainer.rollout_steps=1", "trainer.share_prompts=true"))


def test_spark_reward_only_ablation_trains_only_auxiliary_phases(tmp_path, monkeypatch):
    """GRPO reward-only: policy prompts are rolled out (and logged) but never trained on; the auxiliary data
    come from the frozen initial model; label warm-start experts ride along."""
    from ._train_utils import SCRIPTED

    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=2", SCRIPTED, "spark.enabled=true",
                            "spark.train_on_policy=false", "spark.recycle_from=initial", "spark.judgment_cap=4",
                            "spark.reflection_cap=4", "spark.aux_sft_prompts=2", "algorithm.sft_prompts_per_step=0"))
    for m in read_metrics(run)[1:]:
        assert "reward/mean" in m and "aux/reward/mean" in m
        assert "time/update" not in m and "time/aux/update" in m
        assert m["loss/sft"] > 0  # the label warm-start of auxiliary prompts
    summary = (run / "summary.md").read_text()
    # 4 auxiliary prompts x 2 samples / 4 per optimizer step = 2 optimizer steps per auxiliary phase, 2 phases
    assert "4 optimizer steps" in summary


def test_benchmark_validation_during_training(tmp_path):
    """trainer.eval_benchmarks: a prepared dataset scored by spark_vl.eval on the held-out schedule."""
    import json

    from spark_vl.data.synthetic import synthetic_samples

    rows = []
    for i, s in enumerate(synthetic_samples(6, seed=9)):
        s.images[0].save(tmp_path / f"img{i}.png")
        rows.append({"id": s.uid, "problem": s.problem, "answer": s.answer, "images": [f"img{i}.png"],
                     "category": s.category})
    data = tmp_path / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=2", "trainer.eval_every=1",
                            f"trainer.eval_benchmarks=[synth={data}]", "eval.limit=4"))
    metrics = read_metrics(run)
    for m in metrics:
        assert m["bench/synth/num_items"] == 4.0
        assert 0.0 <= m["bench/synth/accuracy"] <= 1.0


def _count_old_logprob_passes(monkeypatch) -> dict:
    """Counts forward passes of the policy without gradient (the separate old-log-prob pass; the update's pass
    has gradient, the reference pass another model)."""
    from spark_vl.trainer import loop

    real, calls = loop.Trainer.logprobs, {"old": 0}

    def logprobs(self, model, batch, *args, **kwargs):
        calls["old"] += model is self.model and not torch.is_grad_enabled()
        return real(self, model, batch, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "logprobs", logprobs)
    return calls


ON_POLICY = ("trainer.rollout_steps=3", "trainer.sequences_per_optimizer_step=8", "algorithm.kl_coef=0.04",
             "algorithm.sft_prompts_per_step=0")  # 4 prompts x 2 samples = one optimizer step per rollout step


def test_on_policy_update_reuses_its_own_forward_and_matches_the_separate_pass(tmp_path, monkeypatch):
    """One epoch, one optimizer step per rollout step: the update's forward gives the old log-probs (the separate
    pass is skipped) and the run equals one that runs the pass, up to rounding: ratio 1, the same loss, KL,
    gradient norm, sampler gap and samples."""
    from spark_vl.trainer import loop

    calls = _count_old_logprob_passes(monkeypatch)
    switches = []  # the policy's train/eval switches inside the old/reference passes, per pass
    fill = loop.Trainer.fill_logprobs

    def counted_fill(self, seqs, old=True):
        seen = []
        real_train = self.model.train
        self.model.train = lambda mode=True: seen.append(mode) or real_train(mode)
        try:
            fill(self, seqs, old)
        finally:
            del self.model.train
        switches.append(len(seen))

    monkeypatch.setattr(loop.Trainer, "fill_logprobs", counted_fill)
    reused = read_metrics(train(fast_config(tmp_path / "reused", *ON_POLICY)))
    assert calls["old"] == 0
    assert switches == [0] * 3  # the reference pass alone leaves the policy's mode as it is
    separate = read_metrics(train(fast_config(tmp_path / "separate", *ON_POLICY,
                                              "algorithm.reuse_old_logprobs=false")))
    assert calls["old"] == 3 * 4  # 8 sequences in micro-batches of 2, every step
    assert switches[3:] == [2] * 3  # eval for the old log-probs, train after
    for a, b in zip(reused[1:], separate[1:]):
        for key in ("loss/policy", "actor/kl", "actor/grad_norm", "actor/ratio_mean", "reward/mean",
                    "response/length_mean", "rollout/logprob_abs_diff", "rollout/sampler_kl_k3"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
        assert a["actor/ratio_mean"] == 1.0 and a["actor/clipfrac"] == 0.0


@pytest.mark.parametrize("why", ["two optimizer steps", "two epochs", "dropout"])
def test_old_logprob_pass_runs_wherever_reuse_would_not_be_exact(tmp_path, monkeypatch, why):
    """A second optimizer step or epoch sees weights that already moved, and dropout makes the update's forward
    differ from the sampler's policy: there the old log-probs come from their own pass."""
    from spark_vl.trainer import loop

    calls = _count_old_logprob_passes(monkeypatch)
    extra = {"two optimizer steps": ["trainer.sequences_per_optimizer_step=4"],
             "two epochs": ["algorithm.ppo_epochs=2"], "dropout": []}[why]
    if why == "dropout":
        monkeypatch.setattr(loop, "has_dropout", lambda model: True)
    m = read_metrics(train(fast_config(tmp_path / "run", *ON_POLICY, *extra)))
    assert calls["old"] == 3 * 4
    assert all("rollout/logprob_abs_diff" in row for row in m[1:])


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_trainer_logprobs_match_the_sampler_at_its_temperature(tmp_path, temperature):
    """The trainer scores the sampled tokens under the sampler's distribution (same temperature): the per-step gap
    to the HF sampler's own log-probs is numerical noise."""
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=1", f"rollout.temperature={temperature}",
                            "rollout.max_new_tokens=16"))
    m = read_metrics(run)[1]
    assert m["rollout/logprob_abs_diff"] < 1e-4, m["rollout/logprob_abs_diff"]
    assert abs(m["rollout/sampler_kl_k3"]) < 1e-6


def test_spo_tracker_follows_each_prompts_pass_rate_and_resumes_exactly(tmp_path):
    """SPO on the tiny model: one response per prompt, first visits seeded by 4 samples, the tracker's value of
    each prompt moves to its empirical pass rate, prompts are drawn by uncertainty, and a resumed run continues
    the tracker and the draws exactly."""
    from ._train_utils import NOISY, NoisyScriptedEngine

    args = [NOISY, "algorithm.advantage=spo", "rollout.samples_per_prompt=1", "data.synthetic_size=8",
            "trainer.prompts_per_step=4", "trainer.sequences_per_optimizer_step=2", "algorithm.sft_prompts_per_step=0",
            "algorithm.spo_rho=constant", "algorithm.spo_rho_min=0.75", "trainer.save_every=6", "trainer.keep_last=3"]
    NoisyScriptedEngine.log.clear()
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=12", *args))
    metrics = read_metrics(run)
    assert metrics[-1]["spo/coverage"] == 1.0  # all 8 prompts tracked
    state = torch.load(list_checkpoints(run)[-1] / "trainer_state_rank0.pt", weights_only=True)["state"]
    tracker = state["algorithm"]["advantage/spo"]  # plain values: the tracker loads without running code
    truth = {key: NoisyScriptedEngine.pass_rate(uid) for key, uid, _ in NoisyScriptedEngine.log
             if key in tracker["alpha"]}  # (the log also holds held-out evaluation prompts)
    assert len(truth) == 8
    values = {k: tracker["alpha"][k] / (tracker["alpha"][k] + tracker["beta"][k]) for k in truth}
    tracked_error = sum(abs(values[k] - truth[k]) for k in truth) / len(truth)
    prior_error = sum(abs(0.5 - truth[k]) for k in truth) / len(truth)  # the untrained tracker's value
    assert tracked_error < 0.7 * prior_error, (tracked_error, prior_error)
    easy = [values[k] for k in truth if truth[k] >= 0.6]
    hard = [values[k] for k in truth if truth[k] <= 0.4]
    assert sum(easy) / len(easy) - sum(hard) / len(hard) > 0.2, (easy, hard)
    # resume from step 6: the same tracker, the same weighted draws, the same metrics
    step6 = [c for c in list_checkpoints(run) if c.name.endswith("000006")][0]
    resumed = train(fast_config(tmp_path / "resumed", "trainer.rollout_steps=12", *args), resume=str(step6))
    a, b = read_metrics(run)[-1], read_metrics(resumed)[-1]
    for k in a:
        if not k.startswith("time/"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7, nan_ok=True), k


def test_dapo_dynamic_sampling_drops_exactly_the_flat_groups_and_fills_the_step(tmp_path):
    from ._train_utils import NOISY, NoisyScriptedEngine

    NoisyScriptedEngine.log.clear()
    NoisyScriptedEngine.groups_log.clear()
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=3", NOISY, "algorithm.dynamic_sampling=true",
                            "rollout.samples_per_prompt=2", "algorithm.sft_prompts_per_step=0",
                            "reward.overlong_buffer=4"))
    for m in read_metrics(run)[1:]:
        # every generated group is either trained or filtered; filtered ones are exactly the flat groups
        generated = 4 + m.get("dapo/extra_prompts", 0)
        assert m["dapo/groups_trained"] + m["dapo/filtered_groups"] <= generated
        assert m["dapo/groups_trained"] == 4 or m["dapo/short_step"] == 1.0
        assert m["advantage/zero_share"] == 0.0  # no flat group reached the update
    flat = sum(len(g) == 2 and g[0] == g[1] for g in NoisyScriptedEngine.groups_log)  # (held-out eval: n = 1)
    assert sum(m["dapo/filtered_groups"] for m in read_metrics(run)[1:]) == flat


def test_one_process_skips_deepspeeds_identity_allreduce_and_gets_the_same_gradients(tmp_path, monkeypatch):
    """ZeRO-0 on one process: DeepSpeed's gradient all-reduce after each backward would reduce over one rank and
    divide by 1; the engine skips it, and the gradients are bitwise those of an engine that runs it."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    from spark_vl.config import derived
    from spark_vl.trainer.distributed import build_engine, init_distributed

    cfg = fast_config(tmp_path)
    dist = init_distributed("cpu")
    reduced = []
    real = DeepSpeedEngine.allreduce_gradients
    monkeypatch.setattr(DeepSpeedEngine, "allreduce_gradients",
                        lambda self, *a, **k: reduced.append(1) or real(self, *a, **k))
    grads = []
    for allreduce in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        engine = build_engine(model, cfg, derived(cfg, 1), dist, torch.float32)
        assert engine.enable_backward_allreduce is False
        engine.enable_backward_allreduce = allreduce
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
        engine.backward(engine(x).pow(2).mean())
        grads.append([p.grad.clone() for p in model.parameters()])
        assert len(reduced) == int(allreduce)
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("scale", [1e-3, 50.0], ids=["under-the-bound", "clipped"])
def test_the_trainer_clips_zero0_fp32_gradients_as_deepspeed_does_bit_for_bit(tmp_path, scale):
    """ZeRO-0 in fp32: DeepSpeed is told not to clip and the trainer clips (`clip_like_deepspeed`); the gradients
    are bitwise those of DeepSpeed's own clipping, and the norm returned is `grad_norm` before clipping."""
    from deepspeed.runtime.utils import clip_grad_norm_

    from spark_vl.config import derived
    from spark_vl.trainer.distributed import (
        build_engine,
        clip_like_deepspeed,
        grad_norm,
        init_distributed,
        trainer_clip,
    )

    cfg = fast_config(tmp_path, "trainer.grad_clip=1.0")
    plan = derived(cfg, 1)
    assert trainer_clip(cfg, plan, torch.float32) == 1.0 and trainer_clip(cfg, plan, torch.bfloat16) == 0.0
    dist = init_distributed("cpu")
    model, _ = build_tiny("tiny-qwen2.5-vl", seed=0)
    engine = build_engine(model, cfg, plan, dist, torch.float32)
    assert engine.gradient_clipping() == 0.0
    g = torch.Generator().manual_seed(3)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * scale
    raw = [p.grad.clone() for p in model.parameters()]
    before = grad_norm(model)
    own = clip_like_deepspeed(model, 1.0, 1)
    assert own == before and (before > 1.0) == (scale > 1)
    clipped = [p.grad.clone() for p in model.parameters()]
    for p, grad in zip(model.parameters(), raw):
        p.grad = grad.clone()
    clip_grad_norm_(model.parameters(), max_norm=1.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(clipped, model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(clipped, raw)) == (scale < 1)  # clipped exactly when over


def same_values(a: dict, b: dict) -> bool:
    """Equal metrics rows, times aside (NaN equal to NaN)."""
    keys = {k for k in a if not k.startswith("time/")}
    return keys == {k for k in b if not k.startswith("time/")} and all(
        a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in keys)


def test_rewards_scored_beside_the_logprob_passes_change_nothing(tmp_path, monkeypatch):
    """trainer.overlap_reward: the verifier scores in its own thread while the old and reference passes run, and
    the run is the one that scores first, bit for bit (every metric of every step but the times). (And the set-up's
    objects are frozen out of the cyclic collector during the steps only.)"""
    import gc
    import threading

    from spark_vl.trainer import loop

    threads, frozen = [], []
    score_groups = loop.score_groups

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        frozen.append(gc.get_freeze_count())
        return score_groups(*args, **kwargs)

    monkeypatch.setattr(loop, "score_groups", spy)
    monkeypatch.setattr(loop, "spare_core", lambda device: True)  # (as on a GPU node; this CPU's threads fill it)
    common = ("trainer.rollout_steps=2", "algorithm.kl_coef=0.04", "algorithm.reuse_old_logprobs=false")
    beside = read_metrics(train(fast_config(tmp_path / "beside", *common)))
    beside_threads, threads[:] = threads[:], []
    assert frozen[0] == 0 and min(frozen[1:]) > 100_000 and gc.get_freeze_count() == 0  # evaluation before step 1
    first = read_metrics(train(fast_config(tmp_path / "first", *common, "trainer.overlap_reward=false")))
    # (the held-out evaluations before and after training score in the main thread either way)
    assert sum(name.startswith("reward") for name in beside_threads) == 2 and len(beside_threads) == len(threads)
    assert set(threads) == {"MainThread"}
    assert all(same_values(a, b) for a, b in zip(beside, first, strict=True))
    assert first[2]["actor/kl"] > 1e-9  # the reference pass's values take part (after an update, KL is not 0)
    assert all(m["time/reward_wait"] >= 0 for m in beside[1:]) and not any("time/reward_wait" in m for m in first)


def test_a_scorer_that_fails_stops_the_run_with_its_error(tmp_path, monkeypatch):
    from spark_vl.trainer import loop

    def broken(*args, **kwargs):
        raise ValueError("reward plug-in failed on row 3")

    monkeypatch.setattr(loop, "score_groups", broken)
    monkeypatch.setattr(loop, "spare_core", lambda device: True)  # scored in its thread
    with pytest.raises(ValueError, match="row 3"):
        train(fast_config(tmp_path / "run", "trainer.rollout_steps=1"))
