"""SPARK template files: slots, the \\boxed{} verdict instruction, and the real verifier on every accepted form."""

from __future__ import annotations

import pytest
from PIL import Image

from spark_vl.config import RewardConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.rewards import score
from spark_vl.spark.templates import (
    JUDGE_KINDS,
    SLOTS,
    fill,
    load_templates,
    make_aux_prompt,
    prompt_text,
)
from spark_vl.types import Sample

TEMPLATES = load_templates()
YES_FORMS = ["\\boxed{{{v}}}", "\\box{{{v}}}", "\\boxed{{\\text{{{v}}}}}", "\\fbox{{{v}}}", "\\boxed{{{v}.}}",
             "\\boxed{{{lower}}}", "Answer: {v}", "The proposed answer \\boxed{{5}} checks out, so \\boxed{{{v}}}"]
AB_FORMS = ["\\boxed{{{v}}}", "\\boxed{{({v})}}", "\\box{{{v}}}", "\\boxed{{\\text{{{v}}}}}", "({v})", "{v}.",
            "Answer: {v}", "[[{v}]]", "The proposed answer \\boxed{{5}} is discussed above; verdict \\boxed{{{v}}}"]


def origin():
    img = Image.new("RGB", (32, 32), "white")
    sample = Sample(uid="o", problem="<image>How many circles?", answer="5", images=[img], answer_type="integer")
    return build_prompt(sample, template="spark", images=[img])


def all_templates(kinds):
    return [t for k in kinds for t in TEMPLATES.get(k)]


def test_every_kind_has_several_paraphrases_with_its_slots():
    for kind, slots in SLOTS.items():
        items = TEMPLATES.get(kind)
        assert len(items) >= 4, kind
        for t in items:
            for slot in slots:
                assert "{" + slot + "}" in t.text, (kind, t.name, slot)
            assert "\\box{" not in t.text and "\\boxed{" in t.text, (kind, t.name)  # no \box trap
            assert "Please reason step by step, and put your final answer" not in t.text
    for kind in ("reflect_cot", "reflect_answer"):
        assert TEMPLATES.get(kind, neutral_only=True) and any(t.assertive for t in TEMPLATES.get(kind))


def test_fill_is_single_pass():
    assert fill("{question} | {answer}", question="{answer}", answer="x") == "{answer} | x"
    assert fill("{question} {unknown}", question="q") == "q {unknown}"


@pytest.mark.parametrize("template", all_templates(["pointwise_yes_no", "pointwise_ab"]), ids=lambda t: t.name)
@pytest.mark.parametrize("shown_correct", [True, False])
def test_pointwise_verdict_forms_score_one(template, shown_correct):
    verdict_kind = "yes_no" if template.kind == "pointwise_yes_no" else "ab"
    right = {("yes_no", True): "Yes", ("yes_no", False): "No", ("ab", True): "A", ("ab", False): "B"}
    label = right[(verdict_kind, shown_correct)]
    wrong = right[(verdict_kind, not shown_correct)]
    p = make_aux_prompt(origin(), template, uid="o/j", kind="judge", label=label, answer_type=verdict_kind,
                        meta={}, answer="5" if shown_correct else "4")
    assert "\\boxed{" in prompt_text(p)
    forms = YES_FORMS if verdict_kind == "yes_no" else AB_FORMS
    for form in forms:
        response = "Counting the circles gives five.\n" + form.format(v=label, lower=label.lower())
        assert score(response, p.sample, RewardConfig()).overall == 1.0, (template.name, response)
        response = "Counting the circles gives five.\n" + form.format(v=wrong, lower=wrong.lower())
        assert score(response, p.sample, RewardConfig()).overall == 0.0, (template.name, response)


@pytest.mark.parametrize("template", TEMPLATES.get("pairwise"), ids=lambda t: t.name)
@pytest.mark.parametrize("label", ["A", "B"])
def test_pairwise_verdict_forms_score_one(template, label):
    a, b = ("5", "4") if label == "A" else ("4", "5")
    p = make_aux_prompt(origin(), template, uid="o/j", kind="judge", label=label, answer_type="ab", meta={},
                        answer_a=a, answer_b=b)
    text = prompt_text(p)
    assert a in text and b in text and "How many circles?" in text
    wrong = "B" if label == "A" else "A"
    for form in AB_FORMS:
        assert score("Only one is five.\n" + form.format(v=label), p.sample, RewardConfig()).overall == 1.0, form
        assert score("Only one is five.\n" + form.format(v=wrong), p.sample, RewardConfig()).overall == 0.0, form


@pytest.mark.parametrize("template", all_templates(["reflect_cot", "reflect_answer"]), ids=lambda t: t.name)
def test_reflection_prompts_score_against_the_gold(template):
    values = {"solution": "I see four. \\boxed{4}"} if template.kind == "reflect_cot" else {"answer": "4"}
    o = origin()
    p = make_aux_prompt(o, template, uid="o/r", kind="reflect", label=o.sample.answer,
                        answer_type=o.sample.answer_type, meta={}, **values)
    assert p.sample.answer == "5" and p.images == o.images
    assert score("Recounting: there are five. \\boxed{5}", p.sample, RewardConfig()).overall == 1.0
    assert score("Recounting: there are four. \\boxed{4}", p.sample, RewardConfig()).overall == 0.0


def test_custom_template_folder_is_checked(tmp_path):
    for kind in SLOTS:
        (tmp_path / kind).mkdir()
        slots = " ".join("{" + s + "}" for s in SLOTS[kind])
        (tmp_path / kind / "one.txt").write_text(f"{slots} verdict in \\boxed{{}}")
    assert load_templates(str(tmp_path)).get("pairwise")[0].name == "one"
    bad = tmp_path / "pairwise" / "two.txt"
    bad.write_text("{question} {answer_a} {answer_b} put it in \\box{}")
    load_templates.cache_clear()
    with pytest.raises(ValueError, match="boxed"):
        load_templates(str(tmp_path))
    bad.write_text("{question} {answer_a} \\boxed{}")
    load_templates.cache_clear()
    with pytest.raises(ValueError, match="answer_b"):
        load_templates(str(tmp_path))
    load_templates.cache_clear()
    assert set(JUDGE_KINDS) <= set(SLOTS)
