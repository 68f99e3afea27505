"""Score responses against samples: `score` for one, `score_batch` for a training step (optionally in a pool).

    RewardOutput.overall = (1 - w) * accuracy + w * format        w = cfg.format_weight
    parts = {"accuracy": 0 or 1, "format": 0 or 1}; extracted = the answer (or verdict) that was read

Judge prompts (sample.answer_type "yes_no" or "ab", gold "Yes"/"No"/"A"/"B") are scored with
`parse_verdict`; every other sample extracts an answer (`cfg.extract` = first/last) and calls `verify`.

`score_batch` runs in this process when `cfg.num_workers == 0`, else in a persistent process pool of that
size, created on first use and reused by every later call with the same size (`close_pool()` ends it).
Only the fields the verifier needs travel to the workers (never images). Each process has its own
symbolic worker, so the symbolic time limit holds everywhere. A broken pool is rebuilt and the batch
is scored in-process instead: a reward step never fails because of the pool.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import dataclasses
import importlib
import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spark_vl.rewards.extract import extract_answer
from spark_vl.rewards.formats import format_score
from spark_vl.rewards.verdict import normalize_verdict, parse_verdict
from spark_vl.rewards.verify import ANSWER_TYPES, check, infer_answer_type, warn_gold_once

if TYPE_CHECKING:  # the reward path never needs torch, which spark_vl.types imports
    from spark_vl.config import RewardConfig
    from spark_vl.types import RewardOutput, Sample

logger = logging.getLogger("spark_vl.rewards")

RewardFn = Callable[..., Any]  # (response: str, sample: Sample, cfg: RewardConfig) -> RewardOutput | float


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


# (overall, parts, extracted, gold problem) -- plain data, so pool workers never build torch-importing types
Scored = tuple[float, dict[str, float], str | None, str | None]


def _default_cfg() -> RewardConfig:
    from spark_vl.config import RewardConfig

    return RewardConfig()


def score_parts(response: object, spec: GoldSpec, cfg: RewardConfig) -> Scored:
    """The built-in "math" reward as plain data. Never raises."""
    fmt = format_score(response, cfg.format, single_answer=cfg.format_single_answer)
    kind = spec.answer_type if spec.answer_type in ANSWER_TYPES else None
    if kind is None and isinstance(spec.answer, str) and spec.answer.strip():
        kind = infer_answer_type(spec.answer, list(spec.choices) if spec.choices else None)
    gold_problem = None
    if kind in ("yes_no", "ab"):
        want = normalize_verdict(spec.answer, kind) if isinstance(spec.answer, str) else None
        extracted = parse_verdict(response, kind, mode=cfg.extract)
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
        gold_problem = result.gold_error
        if gold_problem is None and not isinstance(spec.answer, str):
            gold_problem = f"gold {spec.answer!r} is not a string"
    w = cfg.format_weight
    return (1.0 - w) * accuracy + w * fmt, {"accuracy": accuracy, "format": fmt}, extracted, gold_problem


def _report(spec: GoldSpec, problem: str | None) -> None:
    if problem is not None:
        warn_gold_once(f"uid:{spec.uid}", f"verifier: sample {spec.uid}: {problem}; its rollouts score 0")


def _to_output(scored: Scored) -> RewardOutput:
    from spark_vl.types import RewardOutput

    overall, parts, extracted, _ = scored
    return RewardOutput(overall=overall, parts=parts, extracted=extracted)


def score(response: str, sample: Sample, cfg: RewardConfig | None = None) -> RewardOutput:
    """Reward of one response: accuracy and format parts, the extracted answer, and the weighted overall."""
    cfg = cfg or _default_cfg()
    spec = GoldSpec.of(sample)
    scored = score_parts(response, spec, cfg)
    _report(spec, scored[3])
    return _to_output(scored)


# ---------------------------------------------------------------------------------------------------------------
# Registry

REWARDS: dict[str, RewardFn] = {"math": score}


def get_reward_fn(name: str) -> RewardFn:
    """A built-in reward by name, or any function named as "package.module:function"."""
    if name in REWARDS:
        return REWARDS[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"unknown reward {name!r}: use one of {sorted(REWARDS)} or 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward {name!r}: cannot load {attr} from module {module_name} ({err})") from None
    if not callable(fn):
        raise ValueError(f"reward {name!r}: {module_name}.{attr} is not callable")
    return fn


def _as_scored(value: Any) -> Scored:
    """Accept what custom reward functions return: a RewardOutput-like object or a bare float."""
    if hasattr(value, "overall"):
        return float(value.overall), dict(getattr(value, "parts", {}) or {}), getattr(value, "extracted", None), None
    overall = float(value) if value is not None else 0.0
    return overall, {"accuracy": overall}, None, None


# One unit of work: (response, the gold fields, the sample itself for custom rewards or None for "math").
Item = tuple[object, GoldSpec, Any]


def _score_one(name: str, item: Item, cfg: RewardConfig) -> Scored:
    response, spec, sample = item
    if name == "math":
        return score_parts(response, spec, cfg)
    return _as_scored(get_reward_fn(name)(response, sample, cfg))


def _score_chunk(name: str, items: list[Item], cfg: RewardConfig) -> list[Scored]:
    return [_score_one(name, item, cfg) for item in items]


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
    cfg = cfg or _default_cfg()
    if len(responses) != len(samples):
        raise ValueError(f"score_batch got {len(responses)} responses but {len(samples)} samples")
    get_reward_fn(cfg.name)  # fail early, in the caller, on a bad name
    specs = [GoldSpec.of(s) for s in samples]
    custom = cfg.name != "math"
    use_pool = cfg.num_workers > 0 and len(samples) > 1
    scored: list[Scored] | None = None
    if use_pool and not _POOL.disabled:
        shipped = [_without_images(s) if custom else None for s in samples]
        scored = _score_in_pool(list(zip(responses, specs, shipped, strict=True)), cfg)
    if scored is None:
        local = [s if custom else None for s in samples]
        scored = _score_chunk(cfg.name, list(zip(responses, specs, local, strict=True)), cfg)
    for spec, result in zip(specs, scored, strict=True):
        _report(spec, result[3])
    return [_to_output(s) for s in scored]


def _score_in_pool(items: list[Item], cfg: RewardConfig) -> list[Scored] | None:
    """Scores from the pool, or None when the pool failed (the caller then scores in-process)."""
    executor = _POOL.get(cfg.num_workers)
    ranges = _chunks(len(items), cfg.num_workers)
    # Each item costs at most one symbolic limit plus fast work; the margin covers worker start-up.
    deadline_s = max(len(r) for r in ranges) * (cfg.timeout_s + 1.0) + 120.0
    try:
        futures = [executor.submit(_score_chunk, cfg.name, [items[i] for i in r], cfg) for r in ranges]
        out: list[Scored] = []
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
