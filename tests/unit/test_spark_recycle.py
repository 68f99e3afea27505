"""SPARK recycling rules on hand-built rollout groups with a seeded RNG."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from spark_vl.config import SparkConfig
from spark_vl.data.prompts import build_prompt, load_template
from spark_vl.spark.recycle import recycle
from spark_vl.spark.templates import prompt_text
from spark_vl.types import Prompt, RewardOutput, Rollout, RolloutGroup, Sample

FORMAT = "spark"  # the policy prompt's format suffix, which must never reach an auxiliary prompt


def policy(uid: str, problem: str = "How many circles are in the image?", answer: str = "3", n_images: int = 1):
    images = [Image.new("RGB", (28 + 4 * i, 28), (10 * i, 0, 0)) for i in range(n_images)]
    sample = Sample(uid=uid, problem=problem, answer=answer, images=list(images), answer_type="integer")
    return build_prompt(sample, template=FORMAT, images=images)


def roll(prompt: Prompt, text: str, correct: bool) -> Rollout:
    reward = RewardOutput(overall=float(correct), parts={"accuracy": float(correct)})
    return Rollout(prompt=prompt, token_ids=[1, 2], text=text, reward=reward)


def group(prompt: Prompt, spec: list[tuple[str | None, bool]]) -> RolloutGroup:
    """spec: (boxed answer or None for a response without a final answer, correct)."""
    rollouts = [
        roll(prompt, f"Counting gives it. \\boxed{{{a}}}" if a is not None else "I keep counting and", c)
        for a, c in spec
    ]
    return RolloutGroup(prompt=prompt, rollouts=rollouts)


def cfg(**kw) -> SparkConfig:
    return SparkConfig(enabled=True, **kw)


ALL_CORRECT = [("3", True)] * 4
ALL_WRONG = [("2", False), ("4", False), ("5", False), ("2", False)]
MIXED = [("3", True), ("4", False), ("3", True), ("5", False)]


def test_all_correct_group_gives_one_positive_pointwise_and_no_reflection():
    p = policy("q1")
    res = recycle([group(p, ALL_CORRECT)], cfg(), random.Random(0), step=7)
    assert len(res.prompts) == 1
    (j,) = res.prompts
    assert j.kind == "judge" and j.meta["judge_form"] == "pointwise"
    assert j.label == {"yes_no": "Yes", "ab": "A"}[j.meta["verdict_kind"]]
    assert j.sample.answer_type == j.meta["verdict_kind"]
    assert j.meta["shown_correct"] is True and j.meta["shown_answers"] == ["3"]
    assert j.meta["origin_uid"] == "q1" and j.meta["step"] == 7 and j.uid == "q1@7/judge"
    s = res.stats
    assert (s.groups, s.all_correct, s.pointwise, s.pairwise, s.reflect_cot + s.reflect_answer) == (1, 1, 1, 0, 0)


def test_all_wrong_group_gives_negative_pointwise_and_one_reflection():
    p = policy("q2")
    res = recycle([group(p, ALL_WRONG)], cfg(), random.Random(1), step=0)
    assert [x.kind for x in res.prompts] == ["judge", "reflect"]
    j, r = res.prompts
    assert j.label == {"yes_no": "No", "ab": "B"}[j.meta["verdict_kind"]]
    assert j.meta["shown_correct"] is False and j.meta["shown_answers"][0] in {"2", "4", "5"}
    assert r.label == "3" and r.sample.answer_type == "integer"  # the original gold, checked like the policy
    assert r.meta["shown_correct"] is False and r.meta["reflect_mode"] in {"cot", "answer"}
    assert res.stats.all_wrong == 1 and res.stats.reflect_candidates == 1


def test_mixed_groups_pairwise_label_is_the_correct_position():
    prompts = [policy(f"m{i}") for i in range(200)]
    res = recycle([group(p, MIXED) for p in prompts], cfg(pointwise_prob=0.0, judgment_cap=1000, reflection_cap=0),
                  random.Random(2), step=1)
    judges = res.judge_prompts
    assert len(judges) == 200 and all(j.meta["judge_form"] == "pairwise" for j in judges)
    for j in judges:
        slot = "AB".index(j.label)
        assert j.meta["shown_answers"][slot] == "3"  # the correct answer sits at the labelled position
        assert j.meta["shown_answers"][1 - slot] in {"4", "5"}
        assert j.meta["correct_position"] == j.label and j.sample.answer_type == "ab"
    share_a = sum(j.label == "A" for j in judges) / len(judges)
    assert 0.4 < share_a < 0.6
    assert res.stats.mixed == 200 and res.stats.pairwise == 200 and res.reflect_prompts == []


def test_mixed_groups_pointwise_share_follows_config():
    prompts = [policy(f"m{i}") for i in range(1000)]
    res = recycle([group(p, MIXED) for p in prompts], cfg(judgment_cap=10_000, reflection_cap=0),
                  random.Random(3), step=1)
    assert res.stats.pointwise + res.stats.pairwise == 1000
    assert 0.26 < res.stats.pointwise / 1000 < 0.34  # pointwise_prob 0.3
    pw = [j for j in res.judge_prompts if j.meta["judge_form"] == "pointwise"]
    shown_correct = sum(j.meta["shown_correct"] for j in pw) / len(pw)
    assert 0.4 < shown_correct < 0.6  # correct or wrong answer 50/50
    ab = sum(j.meta["verdict_kind"] == "ab" for j in pw) / len(pw)
    assert 0.4 < ab < 0.6  # pointwise_ab_prob 0.5


def test_probabilities_at_the_extremes_are_deterministic():
    prompts = [policy(f"m{i}") for i in range(30)]
    res = recycle(
        [group(p, MIXED) for p in prompts],
        cfg(pointwise_prob=1.0, pointwise_correct_prob=0.0, pointwise_ab_prob=1.0, reflection_cap=0),
        random.Random(4),
        step=0,
    )
    assert all(j.meta["judge_form"] == "pointwise" and j.label == "B" for j in res.prompts)
    res = recycle([group(p, MIXED) for p in prompts], cfg(pointwise_prob=0.0, pairwise_a_prob=1.0),
                  random.Random(4), step=0)
    assert all(j.label == "A" for j in res.judge_prompts)


def test_caps_and_exact_cot_split():
    prompts = [policy(f"w{i}") for i in range(10)]
    c = cfg(judgment_cap=3, reflection_cap=4, reflection_cot_fraction=0.5)
    res = recycle([group(p, ALL_WRONG) for p in prompts], c, random.Random(5), step=2)
    s = res.stats
    assert len(res.judge_prompts) == 3 and len(res.reflect_prompts) == 4
    assert (s.judge_candidates, s.judge_dropped_cap, s.reflect_candidates, s.reflect_dropped_cap) == (10, 7, 10, 6)
    assert (s.reflect_cot, s.reflect_answer) == (2, 2)
    assert [p.kind for p in res.prompts] == ["judge"] * 3 + ["reflect"] * 4
    for r in res.reflect_prompts:
        text = prompt_text(r)
        shown = next(x for x in ALL_WRONG if x[0] == r.meta["shown_answers"][0])
        if r.meta["reflect_mode"] == "cot":
            assert f"Counting gives it. \\boxed{{{shown[0]}}}" in text  # the full response
        else:
            assert "Counting gives it." not in text and shown[0] in text
    zero = recycle([group(p, ALL_WRONG) for p in prompts], cfg(judgment_cap=0, reflection_cap=0), random.Random(5), 2)
    assert zero.prompts == [] and zero.stats.judge_dropped_cap == 10


def test_reference_defaults_cap_64_groups_at_32_plus_32():
    prompts = [policy(f"g{i}") for i in range(64)]
    specs = [ALL_CORRECT, ALL_WRONG, MIXED, MIXED]
    res = recycle([group(p, specs[i % 4]) for i, p in enumerate(prompts)], cfg(), random.Random(6), step=0)
    assert len(res.judge_prompts) == 32 and len(res.reflect_prompts) == 32
    assert res.stats.reflect_candidates == 48 and res.stats.reflect_dropped_cap == 16
    assert (res.stats.reflect_cot, res.stats.reflect_answer) == (16, 16)


def test_unparsable_rollouts_are_never_shown_and_counted():
    p = policy("u1")
    res = recycle([group(p, [(None, False)] * 4)], cfg(), random.Random(7), step=0)
    s = res.stats
    assert res.prompts == []
    assert (s.rollouts_no_answer, s.judge_skipped_no_answer, s.reflect_skipped_no_answer) == (4, 1, 1)
    # correct answers plus wrong responses without an answer: only the correct answers can be shown
    q = policy("u2")
    res = recycle([group(q, [("3", True), (None, False), (None, False), ("3", True)])], cfg(), random.Random(8), 0)
    assert len(res.prompts) == 1 and res.prompts[0].meta["shown_correct"] is True
    assert res.stats.mixed == 1 and res.stats.rollouts_no_answer == 2 and res.stats.reflect_skipped_no_answer == 1
    for prompt in res.prompts:
        assert "I keep counting" not in prompt_text(prompt)


def test_wrong_rollout_without_answer_is_skipped_when_another_has_one():
    p = policy("u3")
    res = recycle([group(p, [(None, False), ("7", False)])], cfg(reflection_cot_fraction=1.0), random.Random(9), 0)
    j, r = res.prompts
    assert j.meta["shown_answers"] == ["7"] and r.meta["shown_answers"] == ["7"]
    assert "I keep counting" not in prompt_text(r)


def test_pairwise_never_pairs_identical_answers():
    p = policy("same")
    # the verifier judged one "3" wrong (e.g. a format part); the pair would be ambiguous -> pointwise
    res = recycle([group(p, [("3", True), ("3", False)])], cfg(pointwise_prob=0.0, reflection_cap=0),
                  random.Random(10), 0)
    assert res.prompts[0].meta["judge_form"] == "pointwise" and res.stats.pairwise_fallback == 1


def test_groups_are_merged_by_uid_not_position():
    a, b = policy("A", answer="3"), policy("B", answer="9")
    # one RolloutGroup per half of A's rollouts, and a rollout of B misplaced inside A's second group
    g1 = RolloutGroup(prompt=a, rollouts=[roll(a, "\\boxed{3}", True), roll(a, "\\boxed{3}", True)])
    g2 = RolloutGroup(prompt=a, rollouts=[roll(a, "\\boxed{4}", False), roll(b, "\\boxed{1}", False)])
    g3 = RolloutGroup(prompt=b, rollouts=[roll(b, "\\boxed{2}", False)])
    res = recycle([g1, g2, g3], cfg(pointwise_prob=0.0), random.Random(11), step=3)
    s = res.stats
    assert (s.groups, s.mixed, s.all_wrong) == (2, 1, 1)
    by_origin = {(p.meta["origin_uid"], p.kind): p for p in res.prompts}
    assert by_origin[("A", "judge")].meta["judge_form"] == "pairwise"
    assert set(by_origin[("A", "judge")].meta["shown_answers"]) == {"3", "4"}
    assert by_origin[("B", "reflect")].label == "9"
    assert by_origin[("B", "judge")].meta["shown_answers"][0] in {"1", "2"}


def test_auxiliary_and_unscored_groups_are_skipped():
    p = policy("x")
    res = recycle([group(p, ALL_CORRECT)], cfg(), random.Random(0), 0)
    aux = res.prompts[0]
    aux_group = RolloutGroup(prompt=aux, rollouts=[roll(aux, "\\boxed{Yes}", True)])
    unscored = RolloutGroup(prompt=policy("y"), rollouts=[Rollout(prompt=policy("y"), token_ids=[], text="x")])
    empty = RolloutGroup(prompt=policy("z"), rollouts=[])
    res = recycle([aux_group, unscored, empty], cfg(), random.Random(0), 1)
    s = res.stats
    assert res.prompts == []
    assert (s.skipped_non_policy_groups, s.rollouts_unscored, s.skipped_empty_groups, s.groups) == (1, 1, 2, 0)


def test_images_reattached_and_suffix_and_placeholders_removed():
    suffix = load_template(FORMAT).replace("{problem}", "").strip()
    single = policy("img1", problem="<image>How many circles are in the image?")
    text_only = policy("txt", problem="What is 1 + 2?", n_images=0)
    multi = policy("multi", problem="Compare <image> with <image>. Which has more circles?", n_images=2)
    groups = [group(p, ALL_WRONG) for p in (single, text_only, multi)]
    res = recycle(groups, cfg(), random.Random(12), step=0)
    assert len(res.prompts) == 6
    for aux in res.prompts:
        origin = {"img1": single, "txt": text_only, "multi": multi}[aux.meta["origin_uid"]]
        assert len(aux.images) == len(origin.images)
        assert all(x is y for x, y in zip(aux.images, origin.images, strict=True))  # the decoded originals
        parts = aux.messages[-1]["content"]
        assert sum(part["type"] == "image" for part in parts) == len(origin.images)
        text = prompt_text(aux)
        assert suffix not in text and "<image" not in text
        assert aux.sample.images == origin.sample.images
    single_parts = [x for x in res.prompts if x.meta["origin_uid"] == "img1"][0].messages[-1]["content"]
    assert single_parts[0]["type"] == "image"  # policy prompt put the image first: so does the auxiliary one
    assert "How many circles are in the image?" in prompt_text(res.prompts[0])
    multi_parts = [x for x in res.prompts if x.meta["origin_uid"] == "multi"][0].messages[-1]["content"]
    kinds = [part["type"] for part in multi_parts]
    assert kinds.count("image") == 2 and kinds[0] == "text"  # interleaved at the placeholders, as the policy did
    first, second = (i for i, k in enumerate(kinds) if k == "image")
    assert multi_parts[first - 1]["text"].endswith("Compare")
    assert multi_parts[first + 1]["text"].startswith("with")
    assert multi_parts[second + 1]["text"].startswith(". Which has more circles?")


def test_system_turn_kept():
    sample = Sample(uid="s", problem="What is 1 + 2?", answer="3", answer_type="integer")
    p = build_prompt(sample, template=FORMAT, system_prompt="You are terse.", images=[])
    res = recycle([group(p, ALL_WRONG)], cfg(), random.Random(0), 0)
    for aux in res.prompts:
        assert aux.messages[0] == {"role": "system", "content": "You are terse."}
        assert aux.messages[1]["role"] == "user"


def test_reflection_from_correct_quota_uses_neutral_templates():
    prompts = [policy(f"c{i}") for i in range(12)]
    groups = [group(p, ALL_CORRECT if i % 2 else ALL_WRONG) for i, p in enumerate(prompts)]
    res = recycle(groups, cfg(reflection_cap=4, reflection_from_correct=0.5), random.Random(13), step=0)
    refl = res.reflect_prompts
    assert len(refl) == 4 and res.stats.reflect_from_correct == 2
    confirm = [r for r in refl if r.meta["shown_correct"]]
    assert len(confirm) == 2
    for r in confirm:
        assert r.label == "3" and not r.meta["template"].split("/")[1].startswith("assertive")
    off = recycle(groups, cfg(reflection_cap=4), random.Random(13), step=0)
    assert all(not r.meta["shown_correct"] for r in off.reflect_prompts) and off.stats.reflect_from_correct == 0


def test_extract_mode_and_cot_judge_input():
    p = policy("e")
    g = RolloutGroup(prompt=p, rollouts=[roll(p, "First \\boxed{2}, finally \\boxed{4}", False)])
    last = recycle([g], cfg(reflection_cap=0), random.Random(0), 0, extract_mode="last")
    first = recycle([g], cfg(reflection_cap=0), random.Random(0), 0, extract_mode="first")
    assert last.prompts[0].meta["shown_answers"] == ["4"] and first.prompts[0].meta["shown_answers"] == ["2"]
    cot = recycle([g], cfg(reflection_cap=0, judge_input="cot"), random.Random(0), 0)
    assert "First \\boxed{2}, finally \\boxed{4}" in prompt_text(cot.prompts[0])


def test_same_seed_same_prompts():
    prompts = [policy(f"d{i}") for i in range(20)]
    specs = [ALL_CORRECT, ALL_WRONG, MIXED]
    groups = [group(p, specs[i % 3]) for i, p in enumerate(prompts)]
    c = cfg(judgment_cap=5, reflection_cap=5)

    def fingerprint(res):
        return [(p.uid, p.label, prompt_text(p), p.meta["template"]) for p in res.prompts]

    first = fingerprint(recycle(groups, c, random.Random(42), 0))
    assert first == fingerprint(recycle(groups, c, random.Random(42), 0))
    assert first != fingerprint(recycle(groups, c, random.Random(43), 0))


def test_braces_and_slot_names_in_question_are_safe():
    p = policy("br", problem="Solve {x} where f(x) = {answer} and {solution}")
    res = recycle([group(p, ALL_WRONG)], cfg(), random.Random(0), 0)
    for aux in res.prompts:
        assert "Solve {x} where f(x) = {answer} and {solution}" in prompt_text(aux)


@pytest.mark.parametrize("n_images", [0, 1, 3])
def test_never_crashes_on_odd_groups(n_images):
    p = policy("odd", problem="Look.", n_images=n_images)
    weird = [("", False), (None, True), ("\\boxed{}", False), ("x" * 5000, False)]
    res = recycle([group(p, weird)], cfg(), random.Random(0), 0)
    assert res.stats.groups == 1


def test_balance_pointwise_turns_surplus_yes_into_borrowed_wrong_answers():
    # Six all-correct groups (Yes items only) over two answers: balancing turns three of them into No items
    # that show another group's answer, which the verifier rejects for this question.
    prompts = [policy(f"b{i}", answer=str(3 + i % 2)) for i in range(6)]
    groups = [group(p, [(p.sample.answer, True)] * 4) for p in prompts]
    res = recycle(groups, cfg(pointwise_prob=1.0, balance_pointwise=True), random.Random(0), step=2)
    judged = res.judge_prompts
    assert len(judged) == 6
    shown = [(j.meta["shown_correct"], j.meta["shown_answers"][0], j.sample.meta["origin_uid"]) for j in judged]
    assert sum(c for c, _, _ in shown) == 3 and res.stats.balance_borrowed_wrong == 3
    gold = {p.uid: p.sample.answer for p in prompts}
    for j, (is_correct, answer, origin) in zip(judged, shown, strict=True):
        assert (answer == gold[origin]) is is_correct
        assert j.label == {"yes_no": ("No", "Yes"), "ab": ("B", "A")}[j.meta["verdict_kind"]][is_correct]
        assert (j.meta.get("balanced") == "borrowed_wrong") is (not is_correct)
        assert f"{answer}" in prompt_text(j)


def test_balance_pointwise_shows_gold_for_surplus_no_and_counts_unmatched():
    wrong = [policy(f"w{i}") for i in range(4)]  # all-wrong groups: No items only
    groups = [group(p, ALL_WRONG) for p in wrong]
    res = recycle(groups, cfg(pointwise_prob=1.0, balance_pointwise=True, reflection_cap=0), random.Random(3), 0)
    labels = [j.meta["shown_correct"] for j in res.judge_prompts]
    assert sorted(labels) == [False, False, True, True] and res.stats.balance_gold_shown == 2
    assert all(j.meta["shown_answers"] == ["3"] for j in res.judge_prompts if j.meta["shown_correct"])

    # Every group has the same gold: no other group's answer is wrong for it, so nothing is borrowed.
    same = [group(policy(f"s{i}"), ALL_CORRECT) for i in range(4)]
    res = recycle(same, cfg(balance_pointwise=True), random.Random(0), step=0)
    assert all(j.meta["shown_correct"] for j in res.judge_prompts)
    assert (res.stats.balance_unmatched, res.stats.balance_borrowed_wrong) == (2, 0)


def test_balance_pointwise_off_by_default_keeps_reference_labels():
    prompts = [policy(f"r{i}", answer=str(3 + i)) for i in range(6)]
    groups = [group(p, [(p.sample.answer, True)] * 4) for p in prompts]
    res = recycle(groups, cfg(), random.Random(0), step=0)
    assert all(j.meta["shown_correct"] for j in res.judge_prompts) and res.stats.balance_borrowed_wrong == 0


def test_balance_pointwise_borrows_only_answers_of_the_same_form():
    # Two integer questions and one multiple-choice question, all without a category: the choice question's
    # answer is never borrowed for an integer question (its form alone would give it away), and vice versa.
    ints = [policy(f"i{i}", answer=str(3 + i)) for i in range(2)]
    choice = Sample(uid="mc", problem="Which?", answer="B", choices=["1", "2"], answer_type="choice",
                    images=[Image.new("RGB", (28, 28))])
    mc = build_prompt(choice, template=FORMAT, images=choice.images)
    groups = [group(p, [(p.sample.answer, True)] * 4) for p in [*ints, mc]]
    borrowed = unmatched = 0
    for seed in range(20):
        res = recycle(groups, cfg(balance_pointwise=True), random.Random(seed), step=0)
        for j in res.judge_prompts:
            if j.meta.get("balanced") == "borrowed_wrong":
                borrowed += 1
                other = {"i0": "4", "i1": "3"}[j.meta["origin_uid"]]  # never "mc": no other choice question
                assert j.meta["shown_answers"] == [other]
        unmatched += res.stats.balance_unmatched
    assert borrowed > 0 and unmatched > 0  # mc drawn for flipping: nothing of its form to borrow
