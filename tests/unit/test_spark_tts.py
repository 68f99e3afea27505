"""Test-time self-reflection with a scripted fake engine: stops on Yes, reflects on No, respects max_rounds."""

from __future__ import annotations

import pytest

from spark_vl.data.prompts import build_prompt
from spark_vl.spark.templates import prompt_text
from spark_vl.spark.tts import self_reflect, trace_summary
from spark_vl.types import Rollout, RolloutGroup, Sample, SamplingParams


class ScriptedEngine:
    """Answers from per-uid scripts: `answers` for policy/reflect prompts, `verdicts` for judge prompts, in order."""

    def __init__(self, answers: dict[str, list[str]], verdicts: dict[str, list[str]]):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.verdicts = {k: list(v) for k, v in verdicts.items()}
        self.calls: list[tuple[list, int, SamplingParams]] = []

    def generate(self, prompts, n, sampling):
        self.calls.append((prompts, n, sampling))
        out = []
        for p in prompts:
            origin = p.meta.get("origin_uid", p.uid)
            script = self.verdicts if p.kind == "judge" else self.answers
            out.append(RolloutGroup(prompt=p, rollouts=[Rollout(prompt=p, token_ids=[], text=script[origin].pop(0))]))
        return out


def policy(uid: str):
    return build_prompt(Sample(uid=uid, problem="What is 1 + 2?", answer="3"), template="spark", images=[])


def test_stops_on_yes_reflects_on_no_and_respects_max_rounds():
    engine = ScriptedEngine(
        answers={
            "yes": ["So \\boxed{3}"],
            "fix": ["So \\boxed{2}", "Recheck: \\boxed{3}"],
            "stubborn": ["\\boxed{1}", "\\boxed{4}", "\\boxed{5}"],
        },
        verdicts={"yes": ["Looks right. \\boxed{Yes}"], "fix": ["\\boxed{No}", "\\box{yes}"],
                  "stubborn": ["\\boxed{No}", "\\boxed{\\text{No}}"]},
    )
    traces = self_reflect(engine, [policy("yes"), policy("fix"), policy("stubborn")], None)
    yes, fix, stubborn = traces
    assert yes.accepted and yes.answers == ["3"] and yes.verdicts == ["Yes"] and yes.num_generations == 2
    assert fix.accepted and fix.answers == ["2", "3"] and fix.verdicts == ["No", "Yes"] and fix.num_generations == 4
    assert not stubborn.accepted and stubborn.answers == ["1", "4", "5"] and stubborn.verdicts == ["No", "No"]
    assert stubborn.final_answer == "5" and stubborn.num_generations == 5  # last reflection is not judged
    assert not stubborn.rounds[-1].judged and stubborn.rounds[0].judge_response == "\\boxed{No}"
    # batched per phase: answer, judge x3, reflect x2, judge x2, reflect x1
    assert [len(c[0]) for c in engine.calls] == [3, 3, 2, 2, 1]
    assert all(c[1] == 1 and c[2].greedy for c in engine.calls)  # greedy by default
    reflect = engine.calls[2][0][0]
    assert reflect.kind == "reflect" and reflect.meta["template"].split("/")[1].startswith("assertive")
    assert "2" in prompt_text(reflect) and reflect.label == "3"
    judge = engine.calls[1][0][1]
    assert judge.kind == "judge" and "\\boxed{" in prompt_text(judge) and "So \\boxed{2}" not in prompt_text(judge)
    summary = trace_summary(traces)
    assert summary["tts/round1/accept_rate"] == pytest.approx(1 / 3) and summary["tts/round2/accept_rate"] == 0.5
    assert summary["tts/mean_generations"] == pytest.approx(11 / 3)


@pytest.mark.parametrize("max_rounds,generations,answers", [(0, 1, ["1"]), (1, 3, ["1", "4"]), (3, 7, None)])
def test_max_rounds(max_rounds, generations, answers):
    engine = ScriptedEngine(answers={"s": ["\\boxed{1}", "\\boxed{4}", "\\boxed{5}", "\\boxed{6}"]},
                            verdicts={"s": ["\\boxed{No}"] * 3})
    (trace,) = self_reflect(engine, [policy("s")], SamplingParams(temperature=0.0), max_rounds=max_rounds)
    assert trace.num_generations == generations
    assert trace.answers == (answers or ["1", "4", "5", "6"])


def test_unreadable_verdict_and_missing_answer_get_neutral_reflection_and_cot_judge():
    engine = ScriptedEngine(
        answers={"u": ["I think \\boxed{2}", "\\boxed{3}"], "none": ["no idea", "\\boxed{3}"]},
        verdicts={"u": ["I am not sure.", "\\boxed{Yes}"], "none": ["\\boxed{Yes}"]},
    )
    u, none = self_reflect(engine, [policy("u"), policy("none")], None, judge_input="cot")
    assert u.verdicts == [None, "Yes"] and u.final_answer == "3" and u.accepted
    assert none.rounds[0].judged is False and none.answers == [None, "3"] and none.verdicts == ["Yes"]
    first_judge = engine.calls[1][0]
    assert len(first_judge) == 1 and "I think \\boxed{2}" in prompt_text(first_judge[0])  # cot: full response
    reflections = engine.calls[2][0]
    assert all(not r.meta["template"].split("/")[1].startswith("assertive") for r in reflections)
    assert "no idea" in prompt_text(reflections[1])  # no answer: the response is shown for checking


def test_trace_summary_credits_each_verdict_to_the_round_it_was_given_in():
    """Method audit B8: a trace whose first answer had no box is first judged in round 2, not round 1."""
    engine = ScriptedEngine(
        answers={"accept": ["\\boxed{3}"], "reject": ["\\boxed{1}", "\\boxed{2}", "\\boxed{4}"],
                 "unreadable": ["\\boxed{2}", "\\boxed{3}"], "no_answer": ["no idea", "\\boxed{3}"]},
        verdicts={"accept": ["\\boxed{Yes}"], "reject": ["\\boxed{No}", "\\boxed{No}"],
                  "unreadable": ["hmm", "\\boxed{Yes}"], "no_answer": ["\\boxed{Yes}"]},
    )
    traces = self_reflect(engine, [policy(u) for u in ("accept", "reject", "unreadable", "no_answer")], None)
    assert [r.round for r in traces[1].rounds] == [0, 1, 2]
    summary = trace_summary(traces)
    assert summary["tts/round1/judged"] == 3.0  # the no-answer trace is not judged in round 1
    assert summary["tts/round1/accept_rate"] == pytest.approx(1 / 3)
    assert summary["tts/round2/judged"] == 3.0 and summary["tts/round2/accept_rate"] == pytest.approx(2 / 3)

