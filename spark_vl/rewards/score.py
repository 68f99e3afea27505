"""Score responses against samples: `score` for one, `score_batch` for a step, `score_groups` for a step's groups.

    RewardOutput.overall = (1 - w) * accuracy + w * format        w = cfg.format_weight
    parts = {"accuracy": 0 or 1, "format": 0 or 1}; extracted = the answer (or verdict) that was read

Judge prompts (sample.answer_type "yes_no" or "ab", gold "Yes"/"No"/"A"/"B") are scored with
`parse_verdict`; every other sample extracts an answer (`cfg.extract` = first/last) and calls `verify`.
The reward is named by `cfg.name`: "math" (this module's `score`) or any "package.module:function"
`(response, sample, cfg) -> RewardOutput | float`, resolved by `spark_vl.plugins.resolve`.

`score_batch` runs in this process when `cfg.num_workers == 0`, else in a persistent process pool of that
size, created on first use and reused by every later call with the same size (`close_pool()` ends it).
Custom rewards go through the same pool. Only the fields the verifier needs travel to the workers (custom
rewards get the Sample without its images). Each process has its own symbolic worker, so the symbolic time
limit holds everywhere. A broken pool is rebuilt and the batch is scored in-process instead: a reward step
never fails because of the pool.

`score_groups(groups, cfg, judge=None)` sets `rollout.reward` for a training step. Rollouts of samples with
a gold go through `score_batch`; with `cfg.judge_weight > 0` the others get `judge_weight x P(Yes)` from the
injected `judge` callable (the trainer passes `spark_vl.spark.RewardJudge` around the policy itself or around a
separate frozen judge model, `cfg.judge_model`), so this package never imports torch, models or `spark`. With
`cfg.judge_mix = m > 0` policy rollouts WITH a gold are judged too: overall = (1 - m) x verifier + m x P(Yes).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from spark_vl.config import RewardConfig
from spark_vl.plugins import resolve
from spark_vl.rewards.extract import extract_answer
from spark_vl.rewards.formats import format_score
from spark_vl.rewards.verdict import normalize_verdict, parse_verdict
from spark_vl.rewards.verify import check, infer_answer_type, warn_gold_once
from spark_vl.types import ANSWER_TYPES, Prompt, RewardOutput, Rollout, RolloutGroup, Sample

logger = logging.getLogger("spark_vl.rewards")

RewardFn = Callable[[str, Sample, RewardConfig], "RewardOutput | float | None"]
JudgeFn = Callable[[list[Prompt], list[str]], list[float]]  # (prompts, answers) -> P(Yes) per pair


@dataclass(frozen=True)
class GoldSpec:
    """What the verifier needs from a Sample; small and picklable, so it can go to pool workers."""

    uid: str
    answer: Any
    answer_type: str | None = None
    choices: tuple[str, ...] | None = None
    precision: int | None = None
    tolerance: float | None = None

    @classmethod
    def of(cls, sample: Any) -> GoldSpec:
        """From a Sample (or any object / dict with the same field names)."""
        if isinstance(sample, GoldSpec):
            return sample
        get = sample.get if isinstance(sample, dict) else lambda k, d=None: getattr(sample, k, d)
        choices = get("choices")
        return cls(
            uid=str(get("uid", "?")),
            answer=get("answer"),
            answer_type=get("answer_type"),
            choices=tuple(choices) if isinstance(choices, list | tuple) else None,
            precision=get("precision"),
            tolerance=get("tolerance"),
        )


def _math(response: object, spec: GoldSpec, cfg: RewardConfig) -> tuple[RewardOutput, str | None]:
    """The built-in "math" reward and what is wrong with the gold, if anything (reported once by the caller)."""
    fmt = format_score(response, cfg.format, single_answer=cfg.format_single_answer)
    kind = spec.answer_type if spec.answer_type in ANSWER_TYPES else None
    if kind is None and isinstance(spec.answer, str) and spec.answer.strip():
        kind = infer_answer_type(spec.answer, list(spec.choices) if spec.choices else None)
    gold_problem = None
    timeouts, symbolic = 0, False
    if kind in ("yes_no", "ab"):
        want = normalize_verdict(spec.answer, kind) if isinstance(spec.answer, str) else None
        extracted = parse_verdict(response, kind, mode=cfg.extract, fallback=cfg.extract_fallback)
        if want is None:
            gold_problem = f"gold {spec.answer!r} is not a {kind} verdict"
        accuracy = float(want is not None and extracted == want)
    else:
        extracted = extract_answer(response, cfg.extract, fallback=cfg.extract_fallback)
        result = check(
            extracted,
            spec.answer,
            answer_type=kind,
            choices=list(spec.choices) if spec.choices else None,
            precision=spec.precision,
            tolerance=spec.tolerance,
            timeout_s=cfg.timeout_s,
        )
        accuracy = float(result.correct)
        gold_problem, timeouts, symbolic = result.gold_error, result.timeouts, result.symbolic
        if gold_problem is None and not isinstance(spec.answer, str):
            gold_problem = f"gold {spec.answer!r} is not a string"
    w = cfg.format_weight
    out = RewardOutput((1.0 - w) * accuracy + w * fmt, {"accuracy": accuracy, "format": fmt}, extracted, timeouts,
                       symbolic)
    return out, gold_problem


def _report(spec: GoldSpec, problem: str | None) -> None:
    if problem is not None:
        warn_gold_once(f"uid:{spec.uid}", f"verifier: sample {spec.uid}: {problem}; its rollouts score 0")


def score(response: str, sample: Sample, cfg: RewardConfig | None = None) -> RewardOutput:
    """Reward of one response: accuracy and format parts, the extracted answer, and the weighted overall."""
    spec = GoldSpec.of(sample)
    out, problem = _math(response, spec, cfg or RewardConfig())
    _report(spec, problem)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Rewards by name

REWARDS: dict[str, RewardFn] = {"math": score}


def _as_output(value: Any) -> RewardOutput:
    """What a custom reward returns: a RewardOutput, or a bare float (read as overall and accuracy; None = 0)."""
    if isinstance(value, RewardOutput):
        return value
    overall = float(value) if value is not None else 0.0
    return RewardOutput(overall, {"accuracy": overall})


# One unit of work: (response, the gold fields, the sample itself for custom rewards or None for "math").
Item = tuple[object, GoldSpec, Any]


def _score_chunk(name: str, items: list[Item], cfg: RewardConfig) -> list[tuple[RewardOutput, str | None]]:
    """(reward, gold problem) per item; runs in a pool worker or in this process."""
    if name == "math":
        return [_math(response, spec, cfg) for response, spec, _ in items]
    fn = resolve(name, REWARDS, "reward")
    return [(_as_output(fn(response, sample, cfg)), None) for response, _, sample in items]


def _without_images(sample: Any) -> Any:
    """A copy of a Sample for a custom reward in a pool worker: images stay behind (they are large)."""
    if dataclasses.is_dataclass(sample) and not isinstance(sample, type) and hasattr(sample, "images"):
        return dataclasses.replace(sample, images=[])
    return sample


# ---------------------------------------------------------------------------------------------------------------
# Process pool


class _Pool:
    """A lazily created, persistent ProcessPoolExecutor of a given size (spawned, so safe next to CUDA/threads)."""

    MAX_FAILURES = 2  # after this many broken pools in a row, stop trying and score in-process

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: cf.ProcessPoolExecutor | None = None
        self._size = 0
        self._pid = os.getpid()
        self.failures = 0

    @property
    def disabled(self) -> bool:
        return self.failures >= self.MAX_FAILURES

    def get(self, size: int) -> cf.ProcessPoolExecutor:
        with self._lock:
            if self._executor is not None and (self._size != size or self._pid != os.getpid()):
                self._shutdown_locked()
            if self._executor is None:
                self._executor = cf.ProcessPoolExecutor(
                    max_workers=size, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_worker
                )
                self._size, self._pid = size, os.getpid()
            return self._executor

    def _shutdown_locked(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown_locked()


def _warm_worker() -> None:
    from spark_vl.rewards.symbolic import worker

    worker().start()  # import sympy in the background before the first symbolic comparison


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def close_pool() -> None:
    """Stop the score_batch worker processes (they are otherwise kept for the next call)."""
    _POOL.shutdown()


def _chunks(n_items: int, n_workers: int) -> list[range]:
    n_chunks = min(n_items, 4 * n_workers)  # a few chunks per worker balance slow symbolic items
    size = -(-n_items // n_chunks)
    return [range(i, min(i + size, n_items)) for i in range(0, n_items, size)]


def score_batch(
    responses: Sequence[str], samples: Sequence[Sample], cfg: RewardConfig | None = None
) -> list[RewardOutput]:
    """Score `responses[i]` against `samples[i]` with the reward named by `cfg.name`, in order."""
    cfg = cfg or RewardConfig()
    if len(responses) != len(samples):
        raise ValueError(f"score_batch got {len(responses)} responses but {len(samples)} samples")
    resolve(cfg.name, REWARDS, "reward")  # fail early, in the caller, on a bad name
    specs = [GoldSpec.of(s) for s in samples]
    custom = cfg.name != "math"
    scored: list[tuple[RewardOutput, str | None]] | None = None
    if cfg.num_workers > 0 and len(samples) > 1 and not _POOL.disabled:
        shipped = [_without_images(s) if custom else None for s in samples]
        scored = _score_in_pool(list(zip(responses, specs, shipped, strict=True)), cfg)
    if scored is None:
        local = [s if custom else None for s in samples]
        scored = _score_chunk(cfg.name, list(zip(responses, specs, local, strict=True)), cfg)
    for spec, (_, problem) in zip(specs, scored, strict=True):
        _report(spec, problem)
    return [out for out, _ in scored]


def _score_in_pool(items: list[Item], cfg: RewardConfig) -> list[tuple[RewardOutput, str | None]] | None:
    """Scores from the pool, or None when the pool failed (the caller then scores in-process)."""
    executor = _POOL.get(cfg.num_workers)
    ranges = _chunks(len(items), cfg.num_workers)
    # Each item costs at most one symbolic limit plus fast work; the margin covers worker start-up.
    deadline_s = max(len(r) for r in ranges) * (cfg.timeout_s + 1.0) + 120.0
    try:
        futures = [executor.submit(_score_chunk, cfg.name, [items[i] for i in r], cfg) for r in ranges]
        out: list[tuple[RewardOutput, str | None]] = []
        for future in futures:
            out.extend(future.result(timeout=deadline_s))
        _POOL.failures = 0
        return out
    except (BrokenProcessPool, cf.TimeoutError, OSError, RuntimeError, pickle.PicklingError) as err:
        _POOL.failures += 1
        _POOL.shutdown()
        what = "disabling it for this process" if _POOL.disabled else "will rebuild it"
        logger.warning(
            "reward pool failed (%s: %s); scoring this batch in-process and %s. Spawned workers re-import the main "
            "script: it needs an `if __name__ == '__main__':` guard.",
            type(err).__name__,
            str(err).strip().splitlines()[0] if str(err).strip() else "",
            what,
        )
        return None


# ---------------------------------------------------------------------------------------------------------------
# A training step's groups


def has_gold(rollout: Rollout) -> bool:
    """True when the rollout's sample has a gold answer the verifier can check against."""
    answer = rollout.prompt.sample.answer
    return isinstance(answer, str) and bool(answer.strip())


def score_groups(
    groups: list[RolloutGroup], cfg: RewardConfig, judge: JudgeFn | None = None, *, judge_all: bool = False
) -> None:
    """Set `rollout.reward` on every rollout of `groups`.

    Rollouts whose sample has a gold: `score_batch` with the reward `cfg.name` (pool included). The others:
    0 when `cfg.judge_weight` is 0; else `judge_weight x P(Yes)` with parts {"judge": P(Yes)}, where
    `judge(prompts, answers)` gives P(Yes) for each (prompt, final answer) pair. With `cfg.judge_mix = m > 0`
    the policy rollouts with a gold get overall = (1 - m) x verifier overall + m x P(Yes) and the part "judge"
    (SPARK's judgment and reflection prompts are never judged). Only a real final answer (box or <answer> tag,
    first or last per `cfg.extract`) is judged, as in SPARK's recycling; a rollout without one gets P(Yes) = 0.

    `judge_all`: call `judge` even when this process has nothing to judge (ZeRO-3 needs every rank in every
    forward pass), with empty lists: `RewardJudge` then joins the other ranks' passes with a dummy row whose result
    is dropped (and not counted as scored). Callers set it when any rank has something to judge.
    """
    rollouts = [r for g in groups for r in g.rollouts]
    verified = [r for r in rollouts if has_gold(r)]
    for r, out in zip(verified, score_batch([r.text for r in verified], [r.prompt.sample for r in verified], cfg),
                      strict=True):
        r.reward = out
    goldless = [r for r in rollouts if not has_gold(r)]
    if cfg.judge_weight <= 0:
        for r in goldless:
            r.reward = RewardOutput(0.0, {"accuracy": 0.0}, None)
        goldless = []
    mixed = [r for r in verified if r.prompt.kind == "policy"] if cfg.judge_mix > 0 else []
    judged = goldless + mixed
    if not judged and not judge_all:
        return
    answers = [extract_answer(r.text, cfg.extract, fallback=False) for r in judged]
    shown = [(r, a) for r, a in zip(judged, answers, strict=True) if a]
    probs: dict[int, float] = {}
    if shown or judge_all:
        if judge is None:
            raise ValueError("reward.judge_weight / reward.judge_mix > 0 score rows with a judge, but no judge "
                             "callable was given to score_groups")
        scored = judge([r.prompt for r, _ in shown], [a for _, a in shown])  # empty: join the other ranks' passes
        probs = {id(r): p for (r, _), p in zip(shown, scored, strict=True)}
    m = cfg.judge_mix
    for r, a in zip(judged, answers, strict=True):
        p = probs.get(id(r), 0.0)
        if has_gold(r):
            r.reward = dataclasses.replace(r.reward, overall=(1.0 - m) * r.reward.overall + m * p,
                                           parts={**r.reward.parts, "judge": p})  # the verifier's counts kept
        else:
            r.reward = RewardOutput(cfg.judge_weight * p, {"judge": p}, a)


def overlong_penalty(length: int, max_len: int, buffer: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer tokens, then linear down to -factor at max_len
    (and -factor beyond): ((max_len - buffer) - length) / buffer * factor."""
    if buffer <= 0 or length <= max_len - buffer:
        return 0.0
    return max(-1.0, ((max_len - buffer) - length) / buffer) * factor


def shape_overlong(groups: list[RolloutGroup], max_len: int, buffer: int, factor: float) -> None:
    """Add `overlong_penalty` of each rollout's length to its reward (parts["overlong"]); correctness unchanged."""
    for r in (r for g in groups for r in g.rollouts if r.reward is not None):
        penalty = overlong_penalty(len(r.token_ids), max_len, buffer, factor)
        r.reward = RewardOutput(r.reward.overall + penalty, {**r.reward.parts, "overlong": penalty},
                                r.reward.extracted)
