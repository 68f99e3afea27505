"""Estimate each row's pass rate and keep a difficulty band.

    spark-vl data difficulty --data data/virl39k --out data/virl39k-mid --column passrate_7b \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --n 8 --keep "(0,1)"

For every row the pass rate is, in order of preference:
  1. the precomputed value `difficulty[column]` (ViRL39K ships passrate_32b / passrate_7b), if present;
  2. an estimate: n sampled rollouts through the rollout engine (`make_engine(RolloutConfig(), ...)`), each scored
     by the project verifier (`spark_vl.rewards.score_batch`); rate = correct / n;
  3. unknown (no column value and no --model): kept or dropped per --unknown.
The rate is written into the data as difficulty["passrate"] (with "passrate_n" rollouts, 0 = from the
column) and rows outside the band are dropped. A band is an interval: "(0,1)" drops rows every rollout
solved and rows none solved (no GRPO signal either way); "[0.25,0.75]" keeps the middle.
Prompts are built exactly as training builds them (same template and image handling).
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spark_vl.config import ModelConfig, RewardConfig, RolloutConfig
from spark_vl.data.images import ImageError
from spark_vl.data.prepared import LoadResult, load_samples
from spark_vl.data.prompts import build_prompt
from spark_vl.data.rows import Skipped
from spark_vl.prep.validate import Report
from spark_vl.prep.writer import write_subset
from spark_vl.rewards import score_batch
from spark_vl.types import Sample, SamplingParams

_BAND = re.compile(r"^\s*([\[(])\s*([0-9.]+)\s*,\s*([0-9.]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Band:
        """"(0,1)", "[0.25,0.75]", "(0,1]" ..."""
        m = _BAND.match(text)
        if not m:
            raise ValueError(f"band {text!r} is not an interval like (0,1) or [0.25,0.75]")
        low, high = float(m.group(2)), float(m.group(3))
        if not 0 <= low <= high <= 1:
            raise ValueError(f"band {text!r}: need 0 <= low <= high <= 1")
        return cls(low, high, m.group(1) == "[", m.group(4) == "]")

    def __contains__(self, rate: float) -> bool:
        above = rate >= self.low if self.low_closed else rate > self.low
        below = rate <= self.high if self.high_closed else rate < self.high
        return above and below

    def __str__(self) -> str:
        return f"{'[' if self.low_closed else '('}{self.low:g},{self.high:g}{']' if self.high_closed else ')'}"


@dataclass
class DifficultyConfig:
    band: Band
    column: str | None = None  # precomputed pass-rate key in Sample.difficulty (e.g. passrate_7b)
    model: str | None = None  # ModelConfig.path; None = no estimation
    n: int = 8
    template: str = "boxed"
    temperature: float = 1.0
    max_new_tokens: int = 512
    prompts_per_batch: int = 8
    unknown: str = "keep"  # rows with no rate: keep | drop
    seed: int = 0


def precomputed(sample: Sample, column: str | None) -> float | None:
    if not column or not sample.difficulty:
        return None
    value = sample.difficulty.get(column)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def estimate_pass_rates(samples: list[Sample], root: Path | None, cfg: DifficultyConfig) -> list[float | None]:
    """correct / n per sample, with n rollouts each through the HF rollout engine and the verifier.

    A row whose prompt cannot be built (an unreadable image) gets None (unknown) instead of stopping the run.
    """
    import torch  # torch and the model stack only when rollouts are asked for (--column alone stays light)

    from spark_vl.models import load_model
    from spark_vl.rollout import make_engine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = load_model(ModelConfig(path=cfg.model), device)
    engine = make_engine(RolloutConfig(generation_batch_size=cfg.prompts_per_batch * cfg.n), model, processor)
    sampling = SamplingParams(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    reward_cfg = RewardConfig()
    rates: list[float | None] = []
    for start in range(0, len(samples), cfg.prompts_per_batch):
        batch = samples[start : start + cfg.prompts_per_batch]
        prompts = {}
        for k, sample in enumerate(batch):
            try:
                prompts[k] = build_prompt(sample, cfg.template, image_root=root)
            except ImageError as err:
                print(f"[difficulty] row {sample.uid}: {err}; pass rate unknown", file=sys.stderr)
        groups = dict(zip(prompts, engine.generate(list(prompts.values()), cfg.n, sampling), strict=True))
        for k in range(len(batch)):
            if k not in groups:
                rates.append(None)
                continue
            texts = [r.text for r in groups[k].rollouts]
            outputs = score_batch(texts, [batch[k]] * len(texts), reward_cfg)
            rates.append(sum(1 for o in outputs if o.correct) / len(texts))
        print(f"[difficulty] {min(start + len(batch), len(samples))}/{len(samples)} rows estimated", file=sys.stderr)
    return rates


def assign_rates(result: LoadResult, cfg: DifficultyConfig) -> tuple[list[float | None], Counter]:
    """The pass rate of every row (None = unknown) and where each came from."""
    rates: list[float | None] = [precomputed(s, cfg.column) for s in result.samples]
    origin = Counter({"column": sum(r is not None for r in rates)})
    todo = [i for i, r in enumerate(rates) if r is None]
    if todo and cfg.model:
        estimated = estimate_pass_rates([result.samples[i] for i in todo], result.root, cfg)
        for i, rate in zip(todo, estimated, strict=True):
            rates[i] = rate
        origin["rollouts"] = sum(rate is not None for rate in estimated)
        origin["unknown"] = len(todo) - origin["rollouts"]
    else:
        origin["unknown"] = len(todo)
    return rates, origin


def run_difficulty(data: str, out: str, cfg: DifficultyConfig, command: str) -> Report:
    """Rates into difficulty["passrate"], rows outside the band dropped, result written to `out`."""
    result = load_samples(data)
    rates, origin = assign_rates(result, cfg)
    report = Report(rows_seen=len(result.samples), verifier="spark_vl.rewards" if cfg.model else "skipped")
    keep, histogram = [], Counter()
    for i, (sample, rate) in enumerate(zip(result.samples, rates, strict=True)):
        if rate is None:
            histogram["unknown"] += 1
            if cfg.unknown == "drop":
                detail = f"no {cfg.column or 'pass-rate'} value and no model"
                report.add(Skipped(sample.uid, "unknown_pass_rate", detail))
            else:
                keep.append(i)
            continue
        histogram[f"{math.floor(rate * 10) / 10:.1f}"] += 1
        from_column = precomputed(sample, cfg.column) is not None
        sample.difficulty = {**(sample.difficulty or {}), "passrate": rate, "passrate_n": 0 if from_column else cfg.n}
        if rate in cfg.band:
            keep.append(i)
        else:
            report.add(Skipped(sample.uid, "outside_band", f"pass rate {rate:g} not in {cfg.band}"))
    report.rows_kept = len(keep)
    settings = {"band": str(cfg.band), "column": cfg.column, "model": cfg.model, "n": cfg.n,
                "template": cfg.template, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                "rate_from": dict(origin), "histogram": dict(sorted(histogram.items()))}
    write_subset(result, keep, out, recipe="difficulty", command=command, report=report,
                 extra={"difficulty": settings})
    return report
