"""Fault tests (issue 16, docs/RELIABILITY.md): inputs a user can give that must never hang, crash or mislead.

Each test names the fault it injects. Hangs are run in a subprocess with a deadline, so a regression fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from spark_vl.config import RewardConfig
from spark_vl.data.prepared import load_samples
from spark_vl.rewards import check, verify
from spark_vl.rewards.normalize import clean_latex
from spark_vl.rewards.score import score_groups
from spark_vl.types import Prompt, Rollout, RolloutGroup, Sample

verify_module = sys.modules["spark_vl.rewards.verify"]


def _run_bounded(code: str, deadline_s: float = 30.0) -> tuple[str, float]:
    """Run `code` in a fresh interpreter; fail (not hang) when it takes longer than `deadline_s`."""
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=deadline_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {deadline_s} s: {code.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, time.monotonic() - start


# ---------------------------------------------------------------------------------------------- 1. data never hangs


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_out_of_range_row_values_are_skipped_at_load(tmp_path):
    good = {"id": "ok", "problem": "What is 1.25?", "answer": "1.25", "precision": 2, "tolerance": 0.01}
    rows = [
        good,
        {**good, "id": "huge_precision", "precision": 100000000},
        {**good, "id": "negative_precision", "precision": -1},
        {**good, "id": "float_precision", "precision": 1.5},
        {**good, "id": "nan_tolerance", "tolerance": float("nan")},
        {**good, "id": "inf_tolerance", "tolerance": float("inf")},
        {**good, "id": "negative_tolerance", "tolerance": -1},
        {**good, "id": "many_choices", "answer": "A", "choices": [str(i) for i in range(27)]},
        {**good, "id": "huge_answer", "answer": "1" * 5000},
    ]
    result = load_samples(str(_jsonl(tmp_path / "rows.jsonl", rows)))
    assert [s.uid for s in result.samples] == ["ok"]
    reasons = {s.row: s.reason for s in result.skipped}
    assert set(reasons) == {r["id"] for r in rows[1:]}
    assert "precision" in reasons["huge_precision"] and "tolerance" in reasons["inf_tolerance"]
    assert "choices" in reasons["many_choices"] and "answer" in reasons["huge_answer"]


def test_verifier_bounds_precision_it_is_handed():
    """The same value handed straight to the verifier (eval, custom loaders) is refused, not computed."""
    out, elapsed = _run_bounded("""
        from spark_vl.rewards import check
        r = check("1.5", "1.5", precision=100000000)
        print(r.correct, r.gold_error is not None)
        r = check("1.5", "1.5", tolerance=float("inf"))
        print(r.correct, r.gold_error is not None)
    """)
    assert out.split() == ["False", "True", "False", "True"]
    assert elapsed < 30


def test_markdown_stripping_keeps_python_powers():
    assert clean_latex("**5**") == "5" and clean_latex("`x`") == "x"
    assert clean_latex("10**10**10") == "10**10**10"
    assert not verify("10**10**10", "101010")
    assert verify("**101010**", "101010")


def _group(answer: str, texts: list[str]) -> RolloutGroup:
    sample = Sample(uid=f"u-{answer}", problem="?", answer=answer)
    prompt = Prompt(uid=sample.uid, messages=[], images=[], sample=sample)
    return RolloutGroup(prompt, [Rollout(prompt=prompt, token_ids=[1], text=t) for t in texts])


def test_verifier_timeouts_are_counted_and_a_slow_gold_is_not_retried(monkeypatch):
    """Every symbolic comparison times out (as if the gold itself were a power tower): the timeouts are
    counted per rollout, and once the gold alone is found to time out it is no longer sent to the worker."""
    from spark_vl.trainer.metrics import Means, record_group_metrics

    calls = []

    def slow(pred, gold, timeout_s):
        calls.append((pred, gold))
        return None  # the worker was killed at the limit

    monkeypatch.setattr(verify_module, "symbolic_compare", slow)
    gold = "\\sqrt{x^{9^{9}}}+y"
    groups = [_group(gold, [f"\\boxed{{\\sqrt{{x+{k}}}}}" for k in range(4)])]
    score_groups(groups, RewardConfig(timeout_s=0.1))
    metrics = Means()
    record_group_metrics(groups, "", metrics)
    reduced = metrics.reduce("cpu")
    # first rollout: its comparison and the probe of the gold alone; the other three are not sent
    assert len(calls) == 2 and calls[1] == ("0", gold)
    assert reduced["reward/verifier_timeouts"] == 2.0
    assert reduced["reward/symbolic_checks"] == 4.0  # all 4 were left to the symbolic layer (3 refused there)
    assert all(r.reward.parts["accuracy"] == 0.0 for r in groups[0].rollouts)
    assert check("\\sqrt{x+1}", gold).layer == "slow-gold"


def test_a_prediction_timeout_does_not_condemn_its_gold(monkeypatch):
    calls = []

    def slow_pred(pred, gold, timeout_s):
        calls.append(pred)
        return None if pred.startswith("9^") else {"equal": False, "gold_ok": True}

    monkeypatch.setattr(verify_module, "symbolic_compare", slow_pred)
    gold = "\\sqrt{z}+w"
    assert check("9^{9^{x}}", gold).layer == "symbolic-timeout"
    assert check("9^{9^{y}}", gold).layer == "symbolic-timeout"
    assert calls == ["9^{9^{x}}", "0", "9^{9^{y}}"]  # the gold is probed once, found fine, and kept


def test_each_prediction_gold_pair_goes_to_the_worker_once(monkeypatch):
    """A group's repeated answers are compared once; a failed comparison (here a timeout) is not remembered."""
    calls = []

    def compare(pred, gold, timeout_s):
        calls.append(pred)
        if pred == "q^{3}" and calls.count(pred) == 1:
            return None  # the first try hits the limit
        return {"equal": pred == "p^{2}", "gold_ok": True}

    monkeypatch.setattr(verify_module, "symbolic_compare", compare)
    monkeypatch.setattr(verify_module, "_replies", {})
    monkeypatch.setattr(verify_module, "_fast_golds", set())
    gold = "p \\cdot p"
    checks = [check(pred, gold) for pred in ("p^{2}", "p^{3}", "p^{2}", "p^{3}", "q^{3}", "q^{3}", "q^{3}")]
    assert [c.correct for c in checks] == [True, False, True, False, False, False, False]
    assert [c.layer for c in checks[4:]] == ["symbolic-timeout", "symbolic", "symbolic"]
    assert all(c.symbolic for c in checks)  # remembered or not, the symbolic layer decided each
    assert calls == ["p^{2}", "p^{3}", "q^{3}", "0", "q^{3}"]  # "0": the gold's probe after the timeout


def test_a_step_counts_its_symbolic_checks_whatever_the_memo_holds(monkeypatch):
    """4 rollouts with 2 distinct answers cost 2 comparisons; the step's metric counts the 4 checks the symbolic layer
    decided (the same count in a resumed process or on another rank, whose memo starts empty), not the 1 without
    an answer."""
    from spark_vl.trainer.metrics import Means, record_group_metrics

    calls = []

    def compare(pred, gold, timeout_s):
        calls.append(pred)
        return {"equal": pred == "\\sqrt{r}", "gold_ok": True}

    monkeypatch.setattr(verify_module, "symbolic_compare", compare)
    monkeypatch.setattr(verify_module, "_replies", {})
    answers = ["\\sqrt{r}", "r^{1/3}", "\\sqrt{r}", "\\sqrt{r}"]
    groups = [_group("r^{1/2}", [f"so \\boxed{{{a}}}" for a in answers] + [""])]
    score_groups(groups, RewardConfig())
    metrics = Means()
    record_group_metrics(groups, "", metrics)
    assert calls == ["\\sqrt{r}", "r^{1/3}"]
    assert [r.reward.parts["accuracy"] for r in groups[0].rollouts] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert [r.reward.verifier_symbolic for r in groups[0].rollouts] == [True, True, True, True, False]
    assert metrics.reduce("cpu")["reward/symbolic_checks"] == 4.0


def test_the_judge_mix_keeps_the_verifiers_counts(monkeypatch):
    """Mixing the judge into a verified reward keeps what the verifier spent (before: its timeouts were dropped)."""
    monkeypatch.setattr(verify_module, "symbolic_compare", lambda pred, gold, timeout_s: None)
    monkeypatch.setattr(verify_module, "_slow_golds", set())
    groups = [_group("\\sqrt{x^{7}}+q", ["\\boxed{\\sqrt{x+1}}"])]
    score_groups(groups, RewardConfig(judge_mix=0.5), lambda prompts, answers: [0.5] * len(answers))
    reward = groups[0].rollouts[0].reward
    assert reward.overall == 0.25 and reward.parts == {"accuracy": 0.0, "format": 1.0, "judge": 0.5}
    assert (reward.verifier_timeouts, reward.verifier_symbolic) == (2, True)  # the comparison and the gold's probe


def test_remembered_replies_are_bounded(monkeypatch):
    calls = []
    monkeypatch.setattr(verify_module, "symbolic_compare",
                        lambda pred, gold, timeout_s: calls.append(pred) or {"equal": False, "gold_ok": True})
    monkeypatch.setattr(verify_module, "_replies", {})
    monkeypatch.setattr(verify_module, "_MAX_REPLIES", 2)
    for pred in ("a^{2}", "b^{2}", "c^{2}", "b^{2}", "c^{2}", "a^{2}"):
        assert not verify(pred, "x^{2}")
    assert calls == ["a^{2}", "b^{2}", "c^{2}", "a^{2}"]  # a^{2} went first when c^{2} came
    assert list(verify_module._replies) == [("c^{2}", "x^{2}"), ("a^{2}", "x^{2}")]


# ------------------------------------------------------------------------------------- 3. one bad text row = one row


def _bad_text_file(tmp_path, suffix=".jsonl"):
    """Three good rows, one with a lone surrogate (valid JSON), one with a byte that is not UTF-8."""
    lines = [json.dumps({"id": f"ok{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}).encode()
             for i in range(3)]
    lines.insert(1, b'{"id": "surrogate", "problem": "What is \\ud800?", "answer": "1"}')
    lines.insert(3, b'{"id": "latin1", "problem": "Caf\xe9 bill: 3 + 4?", "answer": "7"}')
    path = tmp_path / f"rows{suffix}"
    if suffix == ".json":
        path.write_bytes(b"[" + b",\n".join(lines) + b"]")
    else:
        path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_bad_text_rows_are_skipped_with_their_reason(tmp_path, suffix):
    result = load_samples(str(_bad_text_file(tmp_path, suffix)))
    assert [s.uid for s in result.samples] == ["ok0", "ok1", "ok2"]
    assert len(result.skipped) == 2 and {s.kind for s in result.skipped} == {"bad_text"}
    reasons = " ".join(s.reason for s in result.skipped)
    assert "surrogate" in reasons and ("UTF-8" in reasons or "utf-8" in reasons)


def test_data_validate_and_prepare_skip_bad_text_rows(tmp_path, capsys):
    from spark_vl.cli import main as spark_vl

    src = _bad_text_file(tmp_path)
    assert spark_vl(["data", "validate", str(src), "--no-answer-check"]) == 0
    assert "bad_text" in capsys.readouterr().out
    out = tmp_path / "prepared"
    code = spark_vl(["data", "prepare", "generic", "--source", str(src), "--out", str(out), "--licence", "MIT",
                     "--no-answer-check"])
    assert code == 0
    prepared = load_samples(str(out))
    assert len(prepared.samples) == 3 and all("ok" in s.uid for s in prepared.samples)
    counts = json.loads((out / "report.json").read_text())["counts"]
    assert counts.get("bad_text") == 2, counts


# ------------------------------------------------------------------------- 6. numbers as users type them; bad values


def test_numbers_typed_the_usual_way_parse(tmp_path):
    from spark_vl.config import load_config

    preset = tmp_path / "preset.yaml"
    preset.write_text("trainer:\n  lr: 1e-5\n  min_lr_ratio: 1E-1\nalgorithm:\n  kl_coef: 5e-4\n")
    cfg = load_config(preset, ["trainer.weight_decay=1e-2", "rollout.temperature=7e-1"])
    assert (cfg.trainer.lr, cfg.trainer.min_lr_ratio, cfg.algorithm.kl_coef) == (1e-5, 0.1, 5e-4)
    assert (cfg.trainer.weight_decay, cfg.rollout.temperature) == (0.01, 0.7)


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.lr=.nan", "trainer.lr"),
    ("trainer.lr=nan", "trainer.lr"),
    ("trainer.lr=inf", "trainer.lr"),
    ("rollout.temperature=.nan", "rollout.temperature"),
    ("algorithm.kl_coef=-.inf", "algorithm.kl_coef"),
    ("algorithm.kl_coef=nan", "algorithm.kl_coef"),
    ("reward.timeout_s=0", "reward.timeout_s"),
    ("reward.num_workers=-1", "reward.num_workers"),
    ("trainer.lr=abc", "trainer.lr"),
])
def test_bad_numbers_are_refused_with_the_reason(override, message):
    from spark_vl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize("advantage", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_one_sample_per_prompt_with_a_group_advantage_is_refused(advantage):
    from spark_vl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="samples_per_prompt=1"):
        load_config(None, ["rollout.samples_per_prompt=1", "trainer.sequences_per_optimizer_step=8",
                           f"algorithm.advantage={advantage}"])


# ------------------------------------------------------------------------- 5. memory bounded by the config


def test_a_huge_image_is_decoded_down_to_max_pixels(tmp_path):
    """A 9000x9000 PNG of a few kB: the prompt keeps at most model.max_pixels pixels, whatever the file holds."""
    from PIL import Image

    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_processor
    from spark_vl.trainer.data import PromptBuilder

    Image.new("RGB", (9000, 9000), "red").save(tmp_path / "huge.png")
    assert (tmp_path / "huge.png").stat().st_size < 400_000
    cfg = load_config(None, ["model.max_pixels=1048576", "data.max_prompt_length=100000"])
    sample = Sample(uid="huge", problem="<image>What colour?", answer="red", images=["huge.png"])
    prompt = PromptBuilder(cfg, build_processor("tiny-qwen2.5-vl"))(sample, tmp_path)
    assert prompt is not None
    width, height = prompt.images[0].size
    assert width * height <= 1048576 and abs(width - height) <= 1 and width > 900
