"""RewardDance-style generative reward: a judge model's P(Yes) for a rollout's answer, batched and cached.

    judge = RewardJudge(model, processor, form="pairwise", templates=reward_judge_templates(cfg.reward))
    score_groups(groups, cfg.reward, judge)          # judge(prompts, answers) -> P(Yes) per (prompt, answer)

pointwise: "is this answer correct?" -> P(Yes). pairwise (RewardDance's comparative form, adapted to text answers):
the answer against the row's reference answer (its gold, else its `solution`) -> P(Yes: it matches the reference);
a row without a reference is judged pointwise. P(Yes) is `judge_score`'s two-way softmax at the verdict token.

The judge is the policy itself (`reward.judge_model` empty: no cache across calls, the policy changes every step) or
a separate frozen checkpoint, whose scores are cached per (prompt uid, answer) in an LRU of `cache_size` entries.
Within a call, repeated (prompt, answer) pairs (a group's rollouts often agree) are scored once; the rest go through
`judge_score` in chunks of `batch_size` prompts, one forward pass each.

ZeRO-3 on several ranks: every rank must run the same number of forward passes through the partitioned judge.
`sync(n) -> max over ranks` makes each rank run max(chunks) passes, padding with a discarded dummy row
(`JOIN_PROMPT`; a rank with nothing to judge at all is called with empty lists and runs only those).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from spark_vl.data.prompts import build_prompt
from spark_vl.spark.judge import judge_score
from spark_vl.spark.templates import Template, load_judge_template
from spark_vl.types import Prompt, Sample


def reference_answer(prompt: Prompt) -> str | None:
    """The reference a pairwise judge compares with: the row's gold answer, else its worked `solution`."""
    for value in (prompt.sample.answer, prompt.sample.solution):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def reward_judge_templates(judge_template: str, judge_form: str, policy_is_judge: bool) -> dict[str, Template | None]:
    """Templates per `judge_score` form: "reference" (pairwise rows) and "pointwise" (everything else). None =
    `judge_score`'s default, SPARK's first pointwise_yes_no template, kept for the policy judging pointwise."""
    out: dict[str, Template | None] = {}
    if judge_form == "pairwise":
        out["reference"] = load_judge_template(judge_template, "pairwise")
        out["pointwise"] = None if policy_is_judge else load_judge_template("", "pointwise")
    else:
        out["pointwise"] = None if policy_is_judge and not judge_template else load_judge_template(judge_template,
                                                                                                     "pointwise")
    return out


def make_reward_judge(reward_cfg, model, processor, *, separate: bool,
                      sync: Callable[[int], int] | None = None) -> RewardJudge | None:
    """The judge of `reward_cfg` (a RewardConfig) around `model`, or None when no reward uses a judge. `separate`:
    a frozen checkpoint of its own (cached across calls), else the policy (never cached across calls)."""
    if reward_cfg.judge_weight <= 0 and reward_cfg.judge_mix <= 0:
        return None
    templates = reward_judge_templates(reward_cfg.judge_template, reward_cfg.judge_form, policy_is_judge=not separate)
    return RewardJudge(model, processor, form=reward_cfg.judge_form, templates=templates,
                       cache_size=reward_cfg.judge_cache if separate else 0, batch_size=reward_cfg.judge_batch_size,
                       sync=sync)


# What a rank with nothing (more) to judge runs while another rank judges (ZeRO-3); the result is dropped.
JOIN_PROMPT = build_prompt(Sample(uid="reward-judge-join", problem="?", answer=None, images=[]))


class RewardJudge:
    """`score_groups`' judge callable: P(Yes) per (prompt, answer) from `model`, batched, deduplicated, cached."""

    def __init__(self, model, processor, *, form: str = "pointwise", templates: dict[str, Template | None],
                 cache_size: int = 0, batch_size: int | None = None, sync: Callable[[int], int] | None = None):
        if form not in ("pointwise", "pairwise"):
            raise ValueError(f"judge form must be pointwise or pairwise, got {form!r}")
        self.model, self.processor, self.form, self.templates = model, processor, form, templates
        self.cache_size, self.batch_size, self.sync = cache_size, batch_size, sync
        self.cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.hits = 0  # pairs answered from the cache or by another equal pair of the same call
        self.scored = 0  # pairs that went through the judge's forward pass (lockstep dummies not counted)

    def __call__(self, prompts: list[Prompt], answers: list[str]) -> list[float]:
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        todo: dict[str, dict[tuple[str, str], tuple[Prompt, object]]] = {"reference": {}, "pointwise": {}}
        found: dict[tuple[str, str], float] = {}
        for p, a in zip(prompts, answers, strict=True):
            key = (p.uid, a)
            if key in self.cache:
                self.cache.move_to_end(key)
                found[key] = self.cache[key]
                continue
            reference = reference_answer(p) if self.form == "pairwise" else None
            form = "reference" if reference is not None else "pointwise"
            todo[form].setdefault(key, (p, (a, reference) if reference is not None else a))
        self.hits += len(prompts) - sum(len(items) for items in todo.values())
        for form in ("reference", "pointwise") if self.form == "pairwise" else ("pointwise",):
            items = list(todo[form].items())
            for (key, _), prob in zip(items, self._score(form, [item for _, item in items]), strict=True):
                found[key] = prob
                self._remember(key, prob)
        return [found[(p.uid, a)] for p, a in zip(prompts, answers, strict=True)]

    def _remember(self, key: tuple[str, str], prob: float) -> None:
        if self.cache_size <= 0:
            return
        self.cache[key] = prob
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def _score(self, form: str, rows: list[tuple[Prompt, object]]) -> list[float]:
        """P(Yes) of `rows` in chunks of `batch_size`, each chunk one forward pass; under `sync` every rank runs
        the same number of passes (a rank with fewer scores a dummy row and drops the result)."""
        size = self.batch_size or max(1, len(rows))
        passes = math.ceil(len(rows) / size)
        if self.sync is not None:
            passes = self.sync(passes)
        out: list[float] = []
        for i in range(passes):
            chunk = rows[i * size : (i + 1) * size]
            if not chunk:  # join another rank's pass with a throw-away row (`judge_score` adds the vision filler)
                self._forward(form, [(JOIN_PROMPT, ("?", "?") if form == "reference" else "?")])
                continue
            out += self._forward(form, chunk)
        self.scored += len(rows)
        return out

    def _forward(self, form: str, chunk: list[tuple[Prompt, object]]) -> list[float]:
        return judge_score(self.model, self.processor, [p for p, _ in chunk], [r for _, r in chunk], form,
                           template=self.templates.get(form), lockstep=self.sync is not None)
