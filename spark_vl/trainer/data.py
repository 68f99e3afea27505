"""Training data for the loop: datasets -> validated prompts, drawn by the resumable mixture sampler.

A row that cannot become a prompt (missing/undecodable image, empty problem or answer, prompt longer
than `data.max_prompt_length` counted with its image tokens) is skipped with a warning naming the row,
counted by reason, and replaced by the next draw; the run continues.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from spark_vl.config import Config
from spark_vl.data.images import ImageError
from spark_vl.data.prepared import LoadResult, load_samples
from spark_vl.data.prompts import build_prompt, prompt_key, prompt_length
from spark_vl.data.sampler import MixtureSampler
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.eval import get_benchmark, load_benchmark
from spark_vl.eval.benchmarks import BENCHMARKS
from spark_vl.types import Prompt, Sample

log = logging.getLogger("spark_vl.data")
SYNTHETIC = "builtin:synthetic"
MAX_WARNINGS = 20


def load_source(spec: str, cfg: Config, start: int = 0, size: int | None = None) -> LoadResult:
    """Rows of one data spec: builtin:synthetic or anything `spark_vl.data.prepared.load_samples` reads.

    Skipped rows are named "<spec>:<row>", since the training mixture reads several specs.
    """
    d = cfg.data
    if spec == SYNTHETIC:
        n = d.synthetic_size if size is None else size
        return LoadResult(synthetic_samples(n, d.seed, start, d.synthetic_tasks, d.synthetic_image_size))
    result = load_samples(spec)
    if result.skipped:
        first = result.skipped[0]
        log.warning("%s: %d malformed rows skipped while loading (first: row %s: %s)", spec, len(result.skipped),
                    first.row, first.reason)
    result.skipped = [replace(s, row=f"{spec}:{s.row}") for s in result.skipped]
    return result


class PromptBuilder:
    """Sample -> Prompt with validation; counts what it skips."""

    def __init__(self, cfg: Config, processor, training: bool = True, require_answer: bool = True,
                 encode: bool = False):
        self.cfg, self.processor, self.training = cfg, processor, training
        self.require_answer = require_answer  # False for expert rows: the supervised term needs only a solution
        self.encode = encode  # count prompts by encoding them: this process uses every prompt it builds
        self.skipped: Counter = Counter()
        self.examples: list[tuple[str, str]] = []  # (row uid, reason), first few

    def __call__(self, sample: Sample, root: Path | None) -> Prompt | None:
        prompt, reason = self.make(sample, root)
        if prompt is not None and self.lengths([prompt])[0] > self.cfg.data.max_prompt_length:
            prompt, reason = None, "prompt_too_long"
        if reason is not None:
            self.count(sample.uid, reason.split(" ")[0], reason)
        return prompt

    def make(self, sample: Sample, root: Path | None) -> tuple[Prompt | None, str | None]:
        """(prompt, None), or (None, why the row is unusable); its length is not checked here (`lengths`) and nothing
        is counted."""
        if self.training and sample.meta.get("eval_split"):
            return None, "eval_split_row"  # a benchmark's test row (e.g. MMK12 test) never trains silently
        if not isinstance(sample.problem, str) or not sample.problem.strip():
            return None, "empty_problem"
        if (self.require_answer and (sample.answer is None or not str(sample.answer).strip())
                and self.cfg.reward.judge_weight <= 0):
            return None, "empty_answer"  # kept when reward.judge_weight > 0: the model's own P(yes) rewards it
        try:
            return build_prompt(sample, self.cfg.data.format_template, self.cfg.data.system_prompt, root,
                                max_pixels=self.cfg.model.max_pixels), None
        except ImageError as err:
            return None, f"bad_image ({err})"

    def lengths(self, prompts: list[Prompt]) -> list[int]:
        """Tokens of each prompt with its image tokens. With `encode` the prompts are encoded here, together (one
        processor call) and once: each encoding is kept with its prompt object (`PromptEncoder`) for the rollout
        and the update, so the chat text is not rendered and tokenized a second time just to be counted. Without
        (held-out prompts, kept for the whole run; several ranks, where each rank builds the whole step and keeps
        its share) they are counted without the image processor."""
        if not self.encode:
            return [prompt_length(p, self.processor) for p in prompts]
        from spark_vl.models.encode import PromptEncoder  # imported here: counting without encoding needs no torch

        return [len(e.input_ids) for e in PromptEncoder(self.processor).many(prompts)]

    def count(self, row: str, key: str, reason: str) -> None:
        self.skipped[key] += 1
        if len(self.examples) < 100:
            self.examples.append((row, reason))
        if sum(self.skipped.values()) <= MAX_WARNINGS:
            log.warning("skipping row %s: %s", row, reason)


class PromptSource:
    def __init__(self, cfg: Config, processor, ranks: int = 1):
        """`ranks`: processes that share each draw (each keeps its share); alone, a drawn prompt is encoded as it is
        counted (`PromptBuilder.length`)."""
        self.cfg = cfg
        self.build = PromptBuilder(cfg, processor, encode=ranks == 1)
        self.sources = []
        for spec in cfg.data.train:
            loaded = load_source(spec, cfg)
            if not loaded.samples:
                raise ValueError(f"data.train entry {spec!r} has no usable rows")
            self.sources.append((loaded.samples, loaded.root))
            for skipped in loaded.skipped:
                self.build.count(skipped.row, skipped.kind, skipped.reason)
        self.sampler = MixtureSampler([len(rows) for rows, _ in self.sources], cfg.data.train_weights or None,
                                      cfg.data.seed, cfg.data.shuffle)
        # Expert rows: a separate data.sft (any row with a `solution`), else the training rows with a `solution`.
        self.expert_sources = self.sources
        if cfg.data.sft:
            self.expert_sources = []
            for spec in cfg.data.sft:
                loaded = load_source(spec, cfg)
                self.expert_sources.append((loaded.samples, loaded.root))
                for skipped in loaded.skipped:
                    self.build.count(skipped.row, skipped.kind, skipped.reason)
        self.expert_build = PromptBuilder(cfg, processor, require_answer=not cfg.data.sft, encode=ranks == 1)
        self.expert_build.skipped, self.expert_build.examples = self.build.skipped, self.build.examples  # one count
        self.experts = [(i, j) for i, (rows, _) in enumerate(self.expert_sources) for j, s in enumerate(rows)
                        if s.solution]
        # Prioritised sampling (SPO): a weight per row, and each drawn row's prompt key so weights can follow it.
        self.row_weights: list[np.ndarray] | None = None
        self.rows_of_key: dict[str, list[tuple[int, int]]] = {}
        self.expert_sampler = MixtureSampler([len(self.experts)], seed=cfg.data.seed + 1) if self.experts else None

    @property
    def skipped(self) -> Counter:
        return self.build.skipped

    @property
    def pool_size(self) -> int:
        return sum(len(rows) for rows, _ in self.sources)

    def epoch(self) -> int:
        return self.sampler.epoch(0)

    def _draw(self, sampler: MixtureSampler, k: int, pick, weights: list[np.ndarray] | None = None, sources=None,
              build=None) -> list[Prompt]:
        """`k` usable prompts, drawn in order; an unusable row is counted and replaced by the next draw. Each round
        draws as many buildable rows as are still missing (never more: one too long is replaced in the next round)
        and counts their lengths together (`PromptBuilder.lengths`: one processor call); then they are judged in
        draw order, so the rows drawn, kept and skipped are those of drawing one row at a time."""
        sources, build = sources or self.sources, build or self.build
        out: list[Prompt] = []
        failures, drawn, limit = 0, set(), 50 + 10 * k
        while len(out) < k:
            batch: list[tuple[int, int, str, Prompt | None, str | None]] = []
            built, trailing = 0, failures  # trailing: unusable rows in a row so far (too long ones not known yet)
            while built < k - len(out) and trailing <= limit:
                source, index = pick(sampler.next(weights))
                if weights is not None:  # weighted draws repeat rows; one step takes each row once
                    if (source, index) in drawn and len(drawn) < sum(len(w) for w in weights):
                        continue
                    drawn.add((source, index))
                rows, root = sources[source]
                prompt, reason = build.make(rows[index], root)
                batch.append((source, index, rows[index].uid, prompt, reason))
                built, trailing = (built + 1, 0) if prompt is not None else (built, trailing + 1)
            lengths = iter(build.lengths([prompt for *_, prompt, _ in batch if prompt is not None]))
            for source, index, uid, prompt, reason in batch:
                if prompt is not None and next(lengths) > self.cfg.data.max_prompt_length:
                    prompt, reason = None, "prompt_too_long"
                if prompt is None:
                    build.count(uid, reason.split(" ")[0], reason)
                    failures += 1
                    if failures > limit:
                        raise ValueError(f"{failures} consecutive unusable rows: {build.examples[-3:]}; "
                                         "check the data or data.max_prompt_length")
                    continue
                failures = 0
                if weights is not None:
                    rows_of = self.rows_of_key.setdefault(prompt_key(prompt), [])
                    if (source, index) not in rows_of:
                        rows_of.append((source, index))
                out.append(prompt)
        return out

    def next_prompts(self, k: int) -> list[Prompt]:
        return self._draw(self.sampler, k, lambda drawn: drawn, self.row_weights)

    def prioritise(self, default: float) -> None:
        """Draw policy rows by weight from now on, every row starting at `default`."""
        self.row_weights = [np.full(len(rows), default, dtype=np.float64) for rows, _ in self.sources]

    def set_weights(self, weights: dict[str, float]) -> None:
        """New weights for the rows of these prompt keys (rows never drawn keep theirs)."""
        for key, w in weights.items():
            for source, index in self.rows_of_key.get(key, []):
                self.row_weights[source][index] = w

    def next_experts(self, k: int) -> list[Prompt]:
        if k <= 0:
            return []
        if self.expert_sampler is None:
            where = f"data.sft {self.cfg.data.sft}" if self.cfg.data.sft else "data.train"
            raise ValueError(f"experts are mixed into each step (algorithm.sft_prompts_per_step / expert_ratio) but "
                             f"no row of {where} has a `solution`")
        prompts = self._draw(self.expert_sampler, k, lambda drawn: self.experts[drawn[1]],
                             sources=self.expert_sources, build=self.expert_build)
        for p in prompts:
            p.kind = "expert"
        return prompts

    def state_dict(self) -> dict:
        return {
            "rows_of_key": {k: [list(r) for r in rows] for k, rows in self.rows_of_key.items()},
            "sampler": self.sampler.state_dict(),
            "experts": self.expert_sampler.state_dict() if self.expert_sampler else None,
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.expert_sampler is not None and state.get("experts"):
            self.expert_sampler.load_state_dict(state["experts"])
        self.build.skipped.update(state.get("skipped", {}))
        self.rows_of_key = {k: [tuple(r) for r in rows] for k, rows in state.get("rows_of_key", {}).items()}


def held_out_prompts(cfg: Config, processor) -> list[Prompt]:
    """The held-out evaluation prompts: data.val, or synthetic rows past the training range."""
    build = PromptBuilder(cfg, processor, training=False)
    if cfg.data.val:
        loaded = [load_source(spec, cfg) for spec in cfg.data.val]
    elif SYNTHETIC in cfg.data.train:
        loaded = [load_source(SYNTHETIC, cfg, start=cfg.data.synthetic_size, size=cfg.data.val_size)]
    else:
        return []
    rows = [(s, result.root) for result in loaded for s in result.samples]
    prompts = [p for p in (build(s, root) for s, root in rows[: cfg.data.val_size]) if p is not None]
    return prompts


def load_eval_benchmarks(cfg: Config, rank: int, world_size: int) -> dict:
    """trainer.eval_benchmarks -> {name: LoadedBenchmark}, each rank keeping its shard of the items."""
    loaded = {}
    for entry in cfg.trainer.eval_benchmarks:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"trainer.eval_benchmarks entry {entry!r} must look like name=path")
        bench = get_benchmark(name if name.lower() in BENCHMARKS else f"prepared:{path}")
        full = load_benchmark(bench, path, limit=cfg.eval.limit)
        loaded[name] = replace(full, samples=full.samples[rank::world_size])
    return loaded
