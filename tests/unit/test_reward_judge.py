"""RewardDance-style rewards: mixing arithmetic, the cache, pairwise order, templates, ZeRO-3 padding."""

import pytest

from spark_vl.config import ConfigError, RewardConfig, load_config
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.rewards import score_groups
from spark_vl.spark import judge_prompts, judge_score, load_judge_template
from spark_vl.spark import reward_judge as rj
from spark_vl.spark.reward_judge import JOIN_PROMPT, RewardJudge, make_reward_judge
from spark_vl.spark.templates import prompt_text
from spark_vl.types import Rollout, RolloutGroup


def group(sample, texts, kind="policy"):
    prompt = build_prompt(sample)
    prompt.kind = kind
    return RolloutGroup(prompt, [Rollout(prompt, [1], t) for t in texts])


def fake_judge(table):
    """P(Yes) by answer text; records every call."""
    calls = []

    def judge(prompts, answers):
        calls.append(list(answers))
        return [table[a] for a in answers]

    judge.calls = calls
    return judge


def test_mix_weights_verifier_and_judge_on_gold_rows_and_judge_weight_on_goldless_rows():
    gold, goldless = synthetic_samples(2, seed=3)
    goldless.answer = ""
    right, wrong = f"\\boxed{{{gold.answer}}}", "\\boxed{zzz}"
    groups = [group(gold, [right, wrong, "no box"]), group(goldless, ["\\boxed{red}"])]
    judge = fake_judge({gold.answer: 0.8, "zzz": 0.4, "red": 0.6})
    score_groups(groups, RewardConfig(judge_mix=0.25, judge_weight=0.5), judge)
    r_right, r_wrong, r_nobox = groups[0].rollouts
    # (1 - 0.25) x verifier + 0.25 x P(Yes); format_weight 0: verifier = accuracy
    assert r_right.reward.overall == pytest.approx(0.75 * 1.0 + 0.25 * 0.8)
    assert r_wrong.reward.overall == pytest.approx(0.75 * 0.0 + 0.25 * 0.4)
    assert r_nobox.reward.overall == 0.0 and r_nobox.reward.parts["judge"] == 0.0  # no final answer: P = 0
    assert r_right.reward.parts == {"accuracy": 1.0, "format": 1.0, "judge": 0.8}
    assert r_right.reward.correct and not r_wrong.reward.correct  # accuracy stays the verifier's
    assert groups[1].rollouts[0].reward.overall == pytest.approx(0.5 * 0.6)  # gold-less: judge_weight x P(Yes)
    assert judge.calls == [["red", gold.answer, "zzz"]]  # one batched call: gold-less rows first, then gold rows


def test_mix_zero_keeps_todays_rewards_and_aux_prompts_are_never_judged():
    gold = synthetic_samples(1, seed=4)[0]
    judge = fake_judge({})
    groups = [group(gold, [f"\\boxed{{{gold.answer}}}"])]
    score_groups(groups, RewardConfig(judge_weight=0.5), judge)  # judge_mix 0: gold rows are not judged
    assert groups[0].rollouts[0].reward.parts == {"accuracy": 1.0, "format": 1.0} and judge.calls == []
    aux = [group(gold, [f"\\boxed{{{gold.answer}}}"], kind="judge")]
    score_groups(aux, RewardConfig(judge_mix=0.5), judge)
    assert "judge" not in aux[0].rollouts[0].reward.parts and judge.calls == []


def test_judge_all_calls_the_judge_on_a_rank_without_rollouts():
    judge = fake_judge({})
    score_groups([], RewardConfig(judge_mix=0.5), judge, judge_all=True)  # RewardJudge joins with its own dummy
    assert judge.calls == [[]]


def test_cache_and_duplicates_avoid_recomputation(tiny_qwen25, monkeypatch):
    model, processor = tiny_qwen25
    a, b = [build_prompt(s) for s in synthetic_samples(2, seed=5)]
    forwarded = []
    real = rj.judge_score

    def counting(*args, **kwargs):
        forwarded.append(list(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(rj, "judge_score", counting)
    tpl = load_judge_template("", "pointwise")
    judge = RewardJudge(model, processor, templates={"pointwise": tpl}, cache_size=10, batch_size=2)
    first = judge([a, a, b], ["3", "3", "red"])
    assert forwarded == [["3", "red"]]  # the repeated pair is scored once
    assert first[0] == first[1]
    expected = judge_score(model, processor, [a, b], ["3", "red"], template=tpl)
    assert first[0] == pytest.approx(expected[0], abs=1e-6) and first[2] == pytest.approx(expected[1], abs=1e-6)
    second = judge([b, a, b], ["red", "3", "blue"])
    assert forwarded == [["3", "red"], ["blue"]]  # only the new pair reaches the model
    assert second[:2] == [first[2], first[0]]
    assert (judge.scored, judge.hits) == (3, 3)
    uncached = RewardJudge(model, processor, templates={"pointwise": tpl}, cache_size=0)
    uncached([a], ["3"])
    uncached([a], ["3"])
    assert forwarded[-2:] == [["3"], ["3"]]  # the policy as judge: never cached across calls


def test_pairwise_shows_answer_and_reference_in_their_slots(tiny_qwen25):
    model, processor = tiny_qwen25
    sample, goldless = synthetic_samples(2, seed=6)
    goldless.answer = ""  # no gold and no solution: judged pointwise
    goldless.solution = None
    prompt, bare = build_prompt(sample), build_prompt(goldless)
    tpl = load_judge_template("", "pairwise")
    text = prompt_text(judge_prompts([prompt], [("candidate-7", sample.answer)], "reference", tpl)[0])
    assert f"Reference answer: {sample.answer}" in text and "Candidate answer: candidate-7" in text
    assert text.index("Reference answer") < text.index("Candidate answer")
    reward_cfg = RewardConfig(judge_mix=0.5, judge_form="pairwise")
    judge = make_reward_judge(reward_cfg, model, processor, separate=True)
    got = judge([prompt, bare], ["7", "7"])
    assert got[0] == pytest.approx(judge_score(model, processor, [prompt], [("7", sample.answer)], "reference",
                                               template=tpl)[0], abs=1e-6)
    assert got[0] != pytest.approx(judge_score(model, processor, [prompt], [(sample.answer, "7")], "reference",
                                               template=tpl)[0], abs=1e-6)  # the order matters
    pointwise = load_judge_template("", "pointwise")
    assert got[1] == pytest.approx(judge_score(model, processor, [bare], ["7"], template=pointwise)[0], abs=1e-6)


def test_lockstep_pads_with_dummy_passes(monkeypatch):
    prompt = build_prompt(synthetic_samples(1, seed=7)[0])
    passes = []
    monkeypatch.setattr(RewardJudge, "_forward", lambda self, form, chunk: passes.append([p for p, _ in chunk]) or
                        [0.5] * len(chunk))

    def judge():
        return RewardJudge(None, None, templates={"pointwise": None}, batch_size=2, sync=lambda n: max(n, 3))

    first = judge()
    assert first([prompt], ["1"]) == [0.5] and first.scored == 1
    assert passes == [[prompt], [JOIN_PROMPT], [JOIN_PROMPT]]  # its chunk, then two dropped passes like the slowest
    fresh = judge()  # nothing to judge, and no prompt seen yet: joins with dummy rows only, scoring nothing
    assert fresh([], []) == [] and passes[3:] == [[JOIN_PROMPT]] * 3 and fresh.scored == 0


def test_templates_and_config_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("{question} {answer} Is it right? \\boxed{}")
    with pytest.raises(ValueError, match=r"lacks the slot\(s\) \{reference\}"):
        load_judge_template(str(bad), "pairwise")
    with pytest.raises(FileNotFoundError, match="pointwise, pairwise|pairwise, pointwise"):
        load_judge_template("nope", "pointwise")
    assert load_judge_template(str(bad), "pointwise").text.startswith("{question}")
    with pytest.raises(ConfigError, match="never used"):
        load_config(None, ["reward.judge_model=builtin:tiny-qwen2.5-vl"])
    with pytest.raises(ConfigError, match="judge_mix=1.5"):
        load_config(None, ["reward.judge_mix=1.5"])


def test_lockstep_judges_text_only_rows_with_a_vision_filler_row(tiny_qwen25, monkeypatch):
    """ZeRO-3: a judge pass whose rows have no image gets the blank-image filler row (every rank runs the vision
    tower); its score is dropped and the others' equal those of a plain pass."""
    model, processor = tiny_qwen25
    sample = synthetic_samples(1, seed=8)[0]
    sample.images = []
    sample.problem = "What is 2 + 2?"
    text_only = build_prompt(sample)
    from spark_vl.spark import judge as judge_module

    seen = []
    real = judge_module.pad_prompts
    monkeypatch.setattr(judge_module, "pad_prompts", lambda rows, *a, **k: seen.append(
        [int(r.pixel_values is not None) for r in rows]) or real(rows, *a, **k))
    tpl = load_judge_template("", "pointwise")
    synced = RewardJudge(model, processor, templates={"pointwise": tpl}, sync=lambda n: n)
    plain = RewardJudge(model, processor, templates={"pointwise": tpl})
    got, want = synced([text_only, text_only], ["4", "5"]), plain([text_only, text_only], ["4", "5"])
    assert seen == [[0, 0, 1], [0, 0]]
    assert got == pytest.approx(want, abs=1e-6)
