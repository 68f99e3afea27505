"""SPARK rollout recycling: turn one step's policy rollout groups into judge and reflection prompts.

    result = recycle(groups, cfg.spark, rng, step, extract_mode=cfg.reward.extract)
    queue.push(result.prompts, step)

Rules (SPARK's as defaults; every number from `SparkConfig`):

judgment, at most one per prompt uid, built from rollouts that have a final answer:
    only correct answers      -> pointwise on a correct answer, label positive
    only wrong answers        -> pointwise on a wrong answer, label negative
    correct and wrong answers -> pointwise with probability `pointwise_prob` (a correct answer with probability
                                 `pointwise_correct_prob`), else pairwise with one correct and one wrong answer,
                                 the correct one in slot A with probability `pairwise_a_prob`; label = its slot.
    Pointwise prompts use A/B wording (A = correct) with probability `pointwise_ab_prob`, else Yes/No.
reflection, at most one per prompt uid: a wrong rollout with a final answer is shown (label = the gold answer);
    with `reflection_from_correct` > 0 a quota of round(share * reflection_cap) reflection prompts shows a correct
    rollout instead (neutral templates only, label = the same gold: "confirm"). Of the kept reflection prompts
    round(`reflection_cot_fraction` * kept) show the full response (CoT mode), the rest only the final answer.
caps: `judgment_cap` and `reflection_cap` per step over all ranks; extra candidates are dropped by a seeded random
    subsample (each rank keeps its `quota` share). Groups without a gold answer are never recycled.

Differences from the reference code (docs/SPARK.md, defects 9.3, 9.7, 9.9-9.11): rollouts are grouped by the
prompt uid, never by position; a rollout with no final answer (no box or answer tag, read with the shared
`extract_answer(mode=extract_mode, fallback=False)`) is never shown and is counted; the all-correct case picks a
random correct rollout instead of rollout #0; a pairwise item never pairs two identical answer strings (it falls
back to pointwise and is counted); rollouts of auxiliary prompts are not recycled again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from spark_vl.config import SparkConfig
from spark_vl.rewards.extract import extract_answer
from spark_vl.rewards.verify import verify
from spark_vl.spark.templates import (
    NEGATIVE_VERDICT,
    POSITIVE_VERDICT,
    VERDICT_KIND,
    TemplateSet,
    load_templates,
    make_aux_prompt,
)
from spark_vl.types import Prompt, Rollout, RolloutGroup


@dataclass
class RecycleStats:
    """Counts of one recycling call: what was seen, built, and skipped (by reason)."""

    groups: int = 0  # policy prompt uids seen (groups of the same uid are merged)
    all_correct: int = 0  # groups whose scored rollouts are all correct
    all_wrong: int = 0
    mixed: int = 0
    rollouts_no_answer: int = 0  # scored rollouts with no final answer: never shown
    rollouts_unscored: int = 0  # rollouts without a reward: never used
    skipped_non_policy_groups: int = 0  # groups of judge/reflect/expert prompts: not recycled
    skipped_empty_groups: int = 0  # groups with no scored rollout
    skipped_no_gold: int = 0  # groups whose sample has no gold answer (judge-rewarded): no verifiable label
    judge_skipped_no_answer: int = 0  # no rollout of the group has a final answer to show
    pairwise_fallback: int = 0  # pairwise drawn, but every correct/wrong pair had identical answers -> pointwise
    balance_borrowed_wrong: int = 0  # balance_pointwise: Yes items turned No by showing another group's wrong answer
    balance_gold_shown: int = 0  # balance_pointwise: No items turned Yes by showing the gold answer
    balance_unmatched: int = 0  # balance_pointwise: a Yes item had no other group's answer that is wrong for it
    reflect_skipped_no_answer: int = 0  # the group has wrong rollouts, none with a final answer
    reflect_skipped_no_template: int = 0  # a correct-rollout reflection needs a neutral template and there is none
    judge_candidates: int = 0
    reflect_candidates: int = 0  # groups with a showable wrong rollout
    reflect_correct_candidates: int = 0  # groups with a showable correct rollout (only when the share is > 0)
    judge_dropped_cap: int = 0
    reflect_dropped_cap: int = 0
    pointwise: int = 0  # built prompts, by kind
    pairwise: int = 0
    reflect_cot: int = 0
    reflect_answer: int = 0
    reflect_from_correct: int = 0  # of reflect_cot + reflect_answer, how many show a correct rollout

    def as_dict(self, prefix: str = "spark/recycle/") -> dict[str, int]:
        """Flat metric names for the logger."""
        return {prefix + k: v for k, v in asdict(self).items()}


@dataclass
class RecycleResult:
    prompts: list[Prompt]  # judgment prompts (in group order), then reflection prompts (in group order)
    stats: RecycleStats = field(default_factory=RecycleStats)

    @property
    def judge_prompts(self) -> list[Prompt]:
        return [p for p in self.prompts if p.kind == "judge"]

    @property
    def reflect_prompts(self) -> list[Prompt]:
        return [p for p in self.prompts if p.kind == "reflect"]


@dataclass
class _Group:
    """One policy prompt's scored rollouts with their final answers (None = no answer)."""

    prompt: Prompt
    rollouts: list[Rollout]
    answers: list[str | None]
    correct: list[bool]

    def showable(self, want_correct: bool) -> list[int]:
        pairs = enumerate(zip(self.answers, self.correct, strict=True))
        return [i for i, (a, c) in pairs if a is not None and c == want_correct]


def merge_by_uid(groups: list[RolloutGroup], stats: RecycleStats) -> list[tuple[Prompt, list[Rollout]]]:
    """Policy rollouts regrouped by their prompt uid (first-seen order); auxiliary groups are counted and skipped."""
    merged: dict[str, tuple[Prompt, list[Rollout]]] = {}
    for group in groups:
        if group.prompt.kind != "policy":
            stats.skipped_non_policy_groups += 1
            continue
        merged.setdefault(group.prompt.uid, (group.prompt, []))
        for rollout in group.rollouts:
            prompt = rollout.prompt if rollout.prompt is not None else group.prompt
            if prompt.kind != "policy":
                continue
            merged.setdefault(prompt.uid, (prompt, []))[1].append(rollout)
    return list(merged.values())


def _score_group(prompt: Prompt, rollouts: list[Rollout], extract_mode: str, stats: RecycleStats) -> _Group | None:
    if not str(prompt.sample.answer or "").strip():
        # Rewarded by the judge's P(yes), not by the verifier: "correct" means nothing here, and a label built
        # from it ("No" for an answer rated 0.97, a reflection whose gold is empty) would not be verifiable.
        stats.skipped_no_gold += 1
        return None
    scored = [r for r in rollouts if r.reward is not None]
    stats.rollouts_unscored += len(rollouts) - len(scored)
    if not scored:
        stats.skipped_empty_groups += 1
        return None
    stats.groups += 1
    answers = [extract_answer(r.text, extract_mode, fallback=False) for r in scored]
    correct = [bool(r.reward.correct) for r in scored]
    stats.rollouts_no_answer += sum(a is None for a in answers)
    if all(correct):
        stats.all_correct += 1
    elif not any(correct):
        stats.all_wrong += 1
    else:
        stats.mixed += 1
    return _Group(prompt=prompt, rollouts=scored, answers=answers, correct=correct)


def _shown(group: _Group, i: int, judge_input: str) -> str:
    return group.rollouts[i].text if judge_input == "cot" else group.answers[i] or ""


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().replace(" ", "") == (b or "").strip().replace(" ", "")


def _pointwise(
    group: _Group, i: int, cfg: SparkConfig, templates: TemplateSet, rng: random.Random, step: int
) -> Prompt:
    return _pointwise_shown(group, _shown(group, i, cfg.judge_input), group.answers[i], group.correct[i],
                            cfg, templates, rng, step)


def _pointwise_shown(
    group: _Group,
    shown: str,
    shown_answer: str | None,
    is_correct: bool,
    cfg: SparkConfig,
    templates: TemplateSet,
    rng: random.Random,
    step: int,
    balanced: str | None = None,
) -> Prompt:
    kind = "pointwise_ab" if rng.random() < cfg.pointwise_ab_prob else "pointwise_yes_no"
    verdict_kind = VERDICT_KIND[kind]
    label = POSITIVE_VERDICT[verdict_kind] if is_correct else NEGATIVE_VERDICT[verdict_kind]
    meta = {
        "judge_form": "pointwise",
        "verdict_kind": verdict_kind,
        "shown_correct": is_correct,
        "shown_answers": [shown_answer],
        "judge_input": cfg.judge_input,
        "step": step,
    }
    if balanced:
        meta["balanced"] = balanced
    return make_aux_prompt(
        group.prompt,
        rng.choice(templates.get(kind)),
        uid=f"{group.prompt.uid}@{step}/judge",
        kind="judge",
        label=label,
        answer_type=verdict_kind,
        meta=meta,
        answer=shown,
    )


def _pairwise(
    group: _Group, c: int, w: int, cfg: SparkConfig, templates: TemplateSet, rng: random.Random, step: int
) -> Prompt:
    correct_first = rng.random() < cfg.pairwise_a_prob
    a, b = (c, w) if correct_first else (w, c)
    label = "A" if correct_first else "B"
    return make_aux_prompt(
        group.prompt,
        rng.choice(templates.get("pairwise")),
        uid=f"{group.prompt.uid}@{step}/judge",
        kind="judge",
        label=label,
        answer_type="ab",
        meta={
            "judge_form": "pairwise",
            "verdict_kind": "ab",
            "correct_position": label,
            "shown_answers": [group.answers[a], group.answers[b]],
            "judge_input": cfg.judge_input,
            "step": step,
        },
        answer_a=_shown(group, a, cfg.judge_input),
        answer_b=_shown(group, b, cfg.judge_input),
    )


def _judgment(
    group: _Group, cfg: SparkConfig, templates: TemplateSet, rng: random.Random, step: int, stats: RecycleStats
) -> Prompt | None:
    right, wrong = group.showable(True), group.showable(False)
    if not right and not wrong:
        stats.judge_skipped_no_answer += 1
        return None
    if right and wrong:
        if rng.random() >= cfg.pointwise_prob:
            pairs = [(c, w) for c in right for w in wrong if not _same(group.answers[c], group.answers[w])]
            if pairs:
                c, w = rng.choice(pairs)
                return _pairwise(group, c, w, cfg, templates, rng, step)
            stats.pairwise_fallback += 1
        pool = right if rng.random() < cfg.pointwise_correct_prob else wrong
    else:
        pool = right or wrong
    return _pointwise(group, rng.choice(pool), cfg, templates, rng, step)


def _reflection(
    group: _Group, i: int, mode: Literal["cot", "answer"], templates: TemplateSet, rng: random.Random, step: int
) -> Prompt | None:
    kind = "reflect_cot" if mode == "cot" else "reflect_answer"
    shown_correct = group.correct[i]
    choices = templates.get(kind, neutral_only=shown_correct)
    if not choices:
        return None
    src = group.prompt.sample
    values = {"solution": group.rollouts[i].text} if mode == "cot" else {"answer": group.answers[i] or ""}
    return make_aux_prompt(
        group.prompt,
        rng.choice(choices),
        uid=f"{group.prompt.uid}@{step}/reflect",
        kind="reflect",
        label=src.answer,
        answer_type=src.answer_type,
        meta={
            "reflect_mode": mode,
            "shown_correct": shown_correct,
            "shown_answers": [group.answers[i]],
            "step": step,
        },
        **values,
    )


def _borrowed_wrong(group: _Group, others: list[_Group], rng: random.Random) -> str | None:
    """A final answer from another group that the verifier rejects for `group`'s question. Only groups of the same
    category and answer type qualify, so a wrong answer cannot be spotted by its form alone (a number shown for
    a multiple-choice question)."""
    src = group.prompt.sample
    kind = (src.category, src.answer_type)
    pool = [a for g in others if g is not group and (g.prompt.sample.category, g.prompt.sample.answer_type) == kind
            for a in dict.fromkeys(a for a in g.answers if a is not None)]
    rng.shuffle(pool)
    for answer in pool:
        if not verify(answer, src.answer, answer_type=src.answer_type, choices=src.choices,
                      precision=src.precision, tolerance=src.tolerance):
            return answer
    return None


def _balance_pointwise(
    judgments: list[Prompt], groups: dict[str, _Group], cfg: SparkConfig, templates: TemplateSet,
    rng: random.Random, step: int, stats: RecycleStats,
) -> list[Prompt]:
    """Make a step's pointwise items half "correct answer shown" and half "wrong answer shown" (to within one).

    On-policy groups skew the labels by task: a mastered task yields only Yes items, a failed one only No, and a
    small judge then learns the task prior instead of checking the answer. Surplus Yes items show instead another
    group's final answer of the same category and answer type that the verifier rejects for this question (a
    plausible wrong answer); surplus No items show the gold answer. Pairwise items are untouched (their slot is
    already random).
    """
    pointwise = [i for i, p in enumerate(judgments) if p.meta["judge_form"] == "pointwise"]
    pos = [i for i in pointwise if judgments[i].meta["shown_correct"]]
    neg = [i for i in pointwise if not judgments[i].meta["shown_correct"]]
    flip = (len(pos) - len(neg)) // 2
    out = list(judgments)
    valid = list(groups.values())
    for i in rng.sample(pos if flip > 0 else neg, abs(flip)):
        group = groups[out[i].meta["origin_uid"]]
        if flip > 0:
            wrong = _borrowed_wrong(group, valid, rng)
            if wrong is None:
                stats.balance_unmatched += 1
                continue
            out[i] = _pointwise_shown(group, wrong, wrong, False, cfg, templates, rng, step, balanced="borrowed_wrong")
            stats.balance_borrowed_wrong += 1
        else:
            gold = group.prompt.sample.answer
            out[i] = _pointwise_shown(group, gold, gold, True, cfg, templates, rng, step, balanced="gold_shown")
            stats.balance_gold_shown += 1
    return out


Quota = Callable[[int, int], int]  # (candidates on this rank, cap per step) -> how many this rank keeps


def local_quota(n: int, cap: int) -> int:
    """One process: keep up to `cap` of the `n` candidates."""
    return min(n, max(0, cap))


def _keep(n: int, cap: int, rng: random.Random, quota: Quota) -> list[int]:
    """Indices 0..n-1 kept under this rank's share of `cap`, a seeded random subsample in ascending order."""
    k = quota(n, cap)
    return list(range(n)) if n <= k else sorted(rng.sample(range(n), k))


def recycle(
    groups: list[RolloutGroup],
    cfg: SparkConfig,
    rng: random.Random,
    step: int,
    extract_mode: Literal["first", "last"] = "last",
    quota: Quota = local_quota,
) -> RecycleResult:
    """Build SPARK's judgment and reflection prompts from one step's scored policy rollout groups.

    Args:
        groups: rollout groups whose rollouts carry a `reward`; grouped again by prompt uid (several groups or
            misplaced rollouts of one uid are merged); auxiliary groups are skipped.
        cfg: the `spark` config section (caps, probabilities, shares, judge input, template folder).
        rng: the only source of randomness, so a seeded rng gives the same prompts.
        step: the policy step, recorded in each prompt's uid and meta (the queue ages items by it).
        extract_mode: which box counts when a response has several (use the reward's `extract` setting).
        quota: how many of this rank's candidates each cap keeps. The caps are per step over all ranks: with
            several ranks the trainer passes a collective quota (`spark.queue.waterfill` over every rank's count),
            called in the same order on every rank (judgments, wrong-rollout and correct-rollout reflections).

    Returns:
        RecycleResult with the judgment prompts then the reflection prompts, and the counts of built/skipped items.
    """
    stats = RecycleStats()
    templates = load_templates(cfg.templates)
    scored = [_score_group(p, rs, extract_mode, stats) for p, rs in merge_by_uid(groups, stats)]
    valid = [g for g in scored if g is not None]

    judged = [_judgment(g, cfg, templates, rng, step, stats) for g in valid]
    judged = [p for p in judged if p is not None]
    stats.judge_candidates = len(judged)
    judgments = [judged[i] for i in _keep(len(judged), cfg.judgment_cap, rng, quota)]
    stats.judge_dropped_cap = len(judged) - len(judgments)
    if cfg.balance_pointwise:
        judgments = _balance_pointwise(judgments, {g.prompt.uid: g for g in valid}, cfg, templates, rng, step, stats)
    for p in judgments:
        setattr(stats, p.meta["judge_form"], getattr(stats, p.meta["judge_form"]) + 1)

    # Reflection: a quota for correct-rollout prompts, the rest for wrong-rollout prompts; no refill across quotas.
    wrong_groups = []
    for gi, g in enumerate(valid):
        if g.showable(False):
            wrong_groups.append(gi)
        elif not all(g.correct):
            stats.reflect_skipped_no_answer += 1
    share = cfg.reflection_from_correct
    correct_quota = round(share * max(0, cfg.reflection_cap)) if share > 0 else 0
    wrong_quota = max(0, cfg.reflection_cap) - correct_quota
    chosen_wrong = [wrong_groups[i] for i in _keep(len(wrong_groups), wrong_quota, rng, quota)]
    taken = set(chosen_wrong)
    right_groups = [gi for gi, g in enumerate(valid) if share > 0 and g.showable(True) and gi not in taken]
    chosen_right = [right_groups[i] for i in _keep(len(right_groups), correct_quota, rng, quota)]
    stats.reflect_candidates = len(wrong_groups)
    stats.reflect_correct_candidates = sum(1 for g in valid if share > 0 and g.showable(True))
    stats.reflect_dropped_cap = len(wrong_groups) - len(chosen_wrong) + len(right_groups) - len(chosen_right)

    picks = sorted([(gi, False) for gi in chosen_wrong] + [(gi, True) for gi in chosen_right])
    cot = set(rng.sample(range(len(picks)), round(cfg.reflection_cot_fraction * len(picks)))) if picks else set()
    reflections = []
    for k, (gi, from_correct) in enumerate(picks):
        g = valid[gi]
        mode: Literal["cot", "answer"] = "cot" if k in cot else "answer"
        prompt = _reflection(g, rng.choice(g.showable(from_correct)), mode, templates, rng, step)
        if prompt is None:
            stats.reflect_skipped_no_template += 1
            continue
        reflections.append(prompt)
        stats.reflect_cot += mode == "cot"
        stats.reflect_answer += mode == "answer"
        stats.reflect_from_correct += from_correct
    return RecycleResult(prompts=judgments + reflections, stats=stats)
