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


def test_evaluate_judge_metrics_by_hand(monkeypatch):
    """Scripted scores: P(Yes) 0.9 on golds, 0.2 on wrong answers except 0.95 on "blue"; P(A) 0.8 when the gold
    is in slot A, 0.6 when it is in slot B (a position bias that flips one of the two orders)."""
    import types

    from spark_vl.config import Config, derived
    from spark_vl.trainer import spark_phase

    def fake(model, processor, prompts, responses, form="pointwise", lockstep=False):
        golds = [p.sample.answer for p in prompts]
        if form == "pointwise":
            return [0.9 if r == g else 0.95 if r == "blue" else 0.2 for r, g in zip(responses, golds, strict=True)]
        return [0.8 if a == g else 0.6 for (a, _), g in zip(responses, golds, strict=True)]

    monkeypatch.setattr(spark_phase, "judge_score", fake)
    ps = [prompt("a", "red", "color"), prompt("c", "green", "color"), prompt("d", "blue", "color")]
    # wrong answers: a -> green, c -> blue, d -> red
    cfg = Config()
    phase = spark_phase.SparkPhase(cfg, derived(cfg), types.SimpleNamespace(rank=0, world_size=1, device="cpu"))
    m = phase.evaluate_judge(None, None, ps)
    assert m["eval/judge_accuracy"] == 5 / 6  # 3 golds > 0.5; wrong: 0.2, 0.95 (c's "blue"), 0.2
    assert m["eval/judge_auc"] == 6 / 9  # every gold (0.9) beats both 0.2s and loses to 0.95
    assert m["eval/judge_p_yes_correct"] == 0.9 and abs(m["eval/judge_p_yes_wrong"] - 1.35 / 3) < 1e-12
    assert m["eval/judge_pairwise_accuracy"] == 0.5  # gold in A: 3 right; gold in B: P(A) 0.6 > 0.5, 3 wrong
    assert m["eval/judge_pairwise_consistency"] == 0.0


def test_evaluate_judge_deals_pairs_over_ranks_and_a_rank_without_one_joins_the_passes(monkeypatch):
    """ZeRO-3 on 3 ranks, 2 pairs: rank 2 holds none, yet runs the four forward passes (every forward gathers the
    parameters collectively) on the first pair, in lockstep (a text-only pass gets the vision filler row), drops
    those scores, and reports the metrics of all ranks' gathered scores, as one process would."""
    import types

    from spark_vl.config import Config, derived
    from spark_vl.trainer import spark_phase

    calls = []

    def fake(model, processor, prompts, responses, form="pointwise", lockstep=False):
        calls.append(([p.sample.uid for p in prompts], list(responses), lockstep))
        return [0.5] * len(prompts)

    monkeypatch.setattr(spark_phase, "judge_score", fake)
    others = [[(0.9, 0.2, 0.8, 0.6)], [(0.7, 0.4, 0.3, 0.1)]]  # ranks 0 and 1: (right, wrong, gold in A, gold in B)
    monkeypatch.setattr(spark_phase, "all_gather_objects", lambda local: [*others, local])
    ps = [prompt("a", "red", "color"), prompt("c", "green", "color")]  # pairs: a -> green, c -> red
    cfg = Config()
    cfg.deepspeed.zero_stage = 3
    phase = spark_phase.SparkPhase(cfg, derived(cfg), types.SimpleNamespace(rank=2, world_size=3, device="cpu"))
    m = phase.evaluate_judge(None, None, ps)
    # the first pair, with the vision filler row for its text-only prompt (`judge_score(lockstep=True)`)
    assert [(uids, lockstep) for uids, _, lockstep in calls] == [(["a"], True)] * 4
    assert calls[0][1] == ["red"] and calls[2][1] == [("red", "green")]
    assert m["eval/judge_accuracy"] == 1.0 and m["eval/judge_auc"] == 1.0
    assert abs(m["eval/judge_p_yes_correct"] - 0.8) < 1e-12 and abs(m["eval/judge_p_yes_wrong"] - 0.3) < 1e-12
    assert m["eval/judge_pairwise_accuracy"] == 0.5  # 0.8 and 0.1 on the right side, 0.3 and 0.6 not
    assert m["eval/judge_pairwise_consistency"] == 0.0
