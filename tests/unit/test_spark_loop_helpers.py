from spark_vl.trainer.spark_phase import label_experts, wrong_answers
from spark_vl.types import Prompt, Sample


def prompt(uid, answer, category):
    return Prompt(uid=uid, messages=[], images=[], sample=Sample(uid=uid, problem="q", answer=answer,
                                                                 category=category))


def test_wrong_answers_take_a_differing_gold_of_the_same_task():
    ps = [prompt("a", "red", "color"), prompt("b", "3", "count"), prompt("c", "red", "color"),
          prompt("d", "blue", "color"), prompt("e", "3", "count")]
    pairs = {p.uid: w for p, w in wrong_answers(ps)}
    assert pairs == {"a": "blue", "c": "blue", "d": "red"}  # b and e have no differing count answer


def test_label_experts_box_the_label_and_leave_originals_untouched():
    ps = [prompt("a", "Yes", "judge"), prompt("b", "B", "judge"), prompt("c", "No", "judge")]
    experts = label_experts(ps, 2)
    assert [e.sample.solution for e in experts] == ["\\boxed{Yes}", "\\boxed{B}"]
    assert all(e.kind == "expert" for e in experts) and ps[0].sample.solution is None and ps[0].kind == "policy"
