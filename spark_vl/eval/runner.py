"""Run benchmarks through a rollout engine: prompts -> cached batched generation -> scores -> metrics.

    result = evaluate(engine, {"mathvista": samples}, "spark", cache=GenerationCache(dir, model_id))
    result.flat_metrics()  # {"eval/mathvista/accuracy": 0.61, ...} for a training log

Modes, each reported as its own row (never mixed):
  greedy        the protocol as is (one greedy generation per item);
  self_reflect  SPARK's test-time loop (answer -> self-judge -> reflect, `max_rounds`), spark_vl.spark;
  best_of_<n>   n sampled answers, the one with the highest P(yes) from the model's own pointwise judge.
Test-time modes apply to reasoning benchmarks only (reward benchmarks judge, they are not judged). A benchmark
with `produce="p_yes"` (RewardBench2's pointwise protocol) generates no text: its greedy row holds the model's own
P(yes) for each candidate reply (`judge_fn`, default `spark_vl.spark.judge_score`).

Images are decoded batch by batch, only for items that still need generating. A missing or broken
image, or a batch the engine cannot generate (retried item by item), makes an `image_error` /
`generation_error` record: counted, listed, scored wrong; the run continues.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_vl.data.images import ImageError, load_image
from spark_vl.data.prompts import build_messages
from spark_vl.data.rows import Skipped
from spark_vl.eval.benchmarks import Benchmark, LoadedBenchmark, benchmark_for
from spark_vl.eval.cache import CacheEntry, GenerationCache, item_key
from spark_vl.eval.judge import LLMJudge, with_judge
from spark_vl.eval.protocols import EvalProtocol, get_protocol
from spark_vl.eval.records import BenchmarkResult, EvalResult, ItemRecord, sample_from_json, sample_to_json
from spark_vl.eval.scoring import Score, extract
from spark_vl.spark import judge_score, self_reflect
from spark_vl.types import Prompt, Sample, SamplingParams

logger = logging.getLogger("spark_vl.eval")

GREEDY = "greedy"
SELF_REFLECT = "self_reflect"


@dataclass
class Request:
    """One item to generate for: its light prompt (no decoded images yet), its cache key, the image root."""

    sample: Sample
    prompt: Prompt
    key: str
    root: Path | None


@dataclass
class Outcome:
    """What generation produced for one item: a cache entry, or the reason there is none."""

    entry: CacheEntry | None
    status: str = "ok"
    error: str | None = None


def _resolve(name: str, value: list[Sample] | LoadedBenchmark
             ) -> tuple[Benchmark, list[Sample], Path | None, list[Skipped]]:
    if isinstance(value, LoadedBenchmark):
        return value.benchmark, value.samples, value.root, value.skipped
    return benchmark_for(name), list(value), None, []


def _chunks(items: list, size: int) -> Iterator[list]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode(req: Request, max_pixels: int | None = None) -> Prompt:
    images = [load_image(ref, req.root, max_pixels) for ref in req.sample.images]
    return dataclasses.replace(req.prompt, images=images)


def _light_prompts(samples: list[Sample], texts: dict[str, str], proto: EvalProtocol, kind) -> list[Prompt]:
    """Prompts with image parts but no decoded images: enough for the cache key; images are decoded later."""
    return [Prompt(s.uid, build_messages(texts[s.uid], len(s.images), proto.system_prompt), [], s, kind)
            for s in samples]


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name not in ("prompt", "images", "sample")}
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


class Generator:
    """Batched generation with the cache in front: only uncached items reach the engine."""

    def __init__(self, engine, cache: GenerationCache | None, batch_size: int, progress: bool = False):
        self.engine = engine
        # Images are scaled down to the processor's own pixel cap as they are decoded (the processor would anyway).
        image_processor = getattr(getattr(engine, "processor", None), "image_processor", None)
        max_pixels = getattr(image_processor, "max_pixels", None)
        self.max_pixels = max_pixels if isinstance(max_pixels, int) and max_pixels > 0 else None
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        self.generated = 0  # items sent to the engine in this process (cache hits excluded)

    def run(
        self,
        requests: list[Request],
        namespace: tuple[str, str, str],
        produce: Callable[[list[Prompt]], list[CacheEntry]],
    ) -> dict[str, Outcome]:
        """Outcome per uid. `produce(prompts)` generates one cache entry per prompt (keys filled in here)."""
        cached = self.cache.load(*namespace) if self.cache is not None else {}
        outcomes = {r.sample.uid: Outcome(cached[r.key]) for r in requests if r.key in cached}
        todo = [r for r in requests if r.key not in cached]
        if cached and todo:
            logger.info("%s/%s: %d cached, %d to generate", namespace[1], namespace[2], len(outcomes), len(todo))
        batches = list(_chunks(todo, self.batch_size))
        if self.progress and batches:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"{namespace[1]} [{namespace[2]}]", unit="batch")
        for batch in batches:
            ready: list[tuple[Request, Prompt]] = []
            for req in batch:
                try:
                    ready.append((req, _decode(req, self.max_pixels)))
                except ImageError as err:
                    outcomes[req.sample.uid] = Outcome(None, "image_error", str(err))
            for req, entry, error in self._produce(ready, produce):
                if entry is None:
                    outcomes[req.sample.uid] = Outcome(None, "generation_error", error)
                    continue
                entry.key, entry.uid = req.key, req.sample.uid
                outcomes[req.sample.uid] = Outcome(entry)
            written = [outcomes[r.sample.uid].entry for r, _ in ready if outcomes[r.sample.uid].entry is not None]
            if self.cache is not None:
                self.cache.append(*namespace, written)
        return outcomes

    def _produce(self, ready: list[tuple[Request, Prompt]], produce) -> list[tuple[Request, CacheEntry | None, str]]:
        if not ready:
            return []
        self.generated += len(ready)
        try:
            return [(r, e, "") for (r, _), e in zip(ready, produce([p for _, p in ready]), strict=True)]
        except (RuntimeError, ValueError) as err:  # e.g. out of memory on one large image: retry one by one
            if len(ready) == 1:
                logger.warning("generation failed for %s: %s", ready[0][0].sample.uid, err)
                return [(ready[0][0], None, f"{type(err).__name__}: {err}")]
            logger.warning("generation failed for a batch of %d (%s); retrying item by item", len(ready), err)
            self.generated -= len(ready)
            return [out for pair in ready for out in self._produce([pair], produce)]


def _entry(texts: list[str], rollouts, extra: dict[str, Any] | None = None) -> CacheEntry:
    return CacheEntry(
        key="",
        uid="",
        texts=texts,
        finish_reasons=[r.finish_reason for r in rollouts],
        num_tokens=[len(r.token_ids) for r in rollouts],
        extra=extra or {},
    )


# ---------------------------------------------------------------------------------------------------------------
# Modes: each returns a `produce(prompts) -> entries` for the Generator


def _greedy(engine, sampling: SamplingParams):
    def produce(prompts: list[Prompt]) -> list[CacheEntry]:
        groups = engine.generate(prompts, 1, sampling)
        return [_entry([g.rollouts[0].text], g.rollouts) for g in groups]

    return produce


def _self_reflect(engine, sampling: SamplingParams, reflect_fn, max_rounds: int, judge_input: str, extract_mode):
    def produce(prompts: list[Prompt]) -> list[CacheEntry]:
        traces = reflect_fn(engine, prompts, sampling, max_rounds=max_rounds, judge_input=judge_input,
                            extract_mode=extract_mode)
        entries = []
        for trace in traces:
            rounds = _to_jsonable(getattr(trace, "rounds", []))
            entries.append(CacheEntry("", "", [trace.final_text], extra={"rounds": rounds}))
        return entries

    return produce


NO_ANSWER_SCORE = -1.0  # best-of-N: a candidate without a final answer is never picked over one with an answer


def _best_of_n(engine, sampling: SamplingParams, n: int, judge_fn, judge_input: str, proto: EvalProtocol):
    """n samples per prompt; the model judges each candidate's final answer (or whole response with "cot")."""

    def produce(prompts: list[Prompt]) -> list[CacheEntry]:
        groups = engine.generate(prompts, n, sampling)
        shown: list[tuple[int, Prompt, str]] = []  # (flat index, prompt, what the judge sees)
        flat = [(g.prompt, r.text) for g in groups for r in g.rollouts]
        for i, (prompt, text) in enumerate(flat):
            answer = extract(text, proto)
            if answer is not None:
                shown.append((i, prompt, text if judge_input == "cot" else answer))
        scores = [NO_ANSWER_SCORE] * len(flat)
        if shown:
            judged = judge_fn(engine.model, engine.processor, [p for _, p, _ in shown], [t for _, _, t in shown],
                              form="pointwise")
            for (i, _, _), value in zip(shown, judged, strict=True):
                scores[i] = float(value)
        entries, start = [], 0
        for g in groups:
            k = len(g.rollouts)
            texts = [r.text for r in g.rollouts]
            entries.append(_entry(texts, g.rollouts, {"judge_scores": scores[start : start + k]}))
            start += k
        return entries

    return produce


def _p_yes(engine, judge_fn):
    """Per item, the model's own P(yes) for each of `sample.meta["completions"]` (pointwise judge template), kept as
    the response text `{"p_yes": [...]}` so the cache and `--score-only` hold the scores."""

    def produce(prompts: list[Prompt]) -> list[CacheEntry]:
        entries = []
        for prompt in prompts:
            replies = list(prompt.sample.meta["completions"])
            scores = judge_fn(engine.model, engine.processor, [prompt] * len(replies), replies, form="pointwise")
            entries.append(CacheEntry("", "", [json.dumps({"p_yes": [float(x) for x in scores]})]))
        return entries

    return produce


def _default_reflect_fn():
    return self_reflect


def _default_judge_fn():
    return judge_score


# ---------------------------------------------------------------------------------------------------------------
# Scoring records


def score_entry(bench: Benchmark, sample: Sample, protocol: EvalProtocol, mode: str, prompt_text: str,
                outcome: Outcome, sample_json: dict[str, Any] | None = None,
                llm_judge: LLMJudge | None = None) -> ItemRecord:
    """The record of one item from its generation outcome (best-of-N picks the top judge score)."""
    base = dict(benchmark=bench.name, uid=sample.uid, mode=mode, protocol=protocol.name, prompt=prompt_text,
                sample=sample_json if sample_json is not None else sample_to_json(sample))
    if outcome.entry is None:
        return ItemRecord(**base, response=None, extracted=None, correct=False, status=outcome.status,
                          decided_by="", error=outcome.error)
    entry = outcome.entry
    extra = dict(entry.extra)
    pick = 0
    if "judge_scores" in extra and len(entry.texts) > 1:
        judge = extra["judge_scores"]
        pick = max(range(len(judge)), key=lambda i: (judge[i], -i))
        extra["candidates"] = list(entry.texts)
        extra["candidates_correct"] = [bench.score(sample, t, protocol).correct for t in entry.texts]
        extra["pick"] = pick
    rounds = extra.get("rounds")
    if isinstance(rounds, list) and rounds and isinstance(rounds[0], dict):
        # Self-reflection: was the first answer right? (fix / break rates of the loop)
        extra["first_correct"] = bench.score(sample, rounds[0].get("response"), protocol).correct
    response = entry.texts[pick] if entry.texts else None
    s = bench.score(sample, response, protocol)
    extra.update(s.extra)
    if llm_judge is not None and response:
        verdict = llm_judge(sample, response, s.extracted)
        if verdict is not None:
            extra["rule_correct"] = s.correct
            s = Score(bool(verdict), s.extracted, "ok", f"llm_judge:{llm_judge.name}", s.extra)
    finish = (entry.finish_reasons[pick] or None) if len(entry.finish_reasons) > pick else None
    if entry.num_tokens:
        extra["num_tokens"] = entry.num_tokens[pick]
    return ItemRecord(**base, response=response, extracted=s.extracted, correct=s.correct, status=s.status,
                      decided_by=s.decided_by, error="no answer found" if s.status == "no_answer" else None,
                      finish_reason=finish, extra=extra)


def _mode_metrics(records: list[ItemRecord], mode: str) -> dict[str, Any]:
    """Extra numbers of test-time modes: pass@n and mean candidate accuracy, reflection rounds."""
    out: dict[str, Any] = {}
    cands = [r.extra["candidates_correct"] for r in records if "candidates_correct" in r.extra]
    if cands:
        out["pass_at_n"] = sum(any(c) for c in cands) / len(records)
        out["mean_candidate_accuracy"] = sum(sum(c) / len(c) for c in cands) / len(records)
    traces = [r for r in records if isinstance(r.extra.get("rounds"), list) and r.extra["rounds"]]
    if traces:
        out.update(_reflection_metrics(traces))
    lengths = [r.extra["num_tokens"] for r in records if isinstance(r.extra.get("num_tokens"), int)]
    if lengths:
        out["mean_response_tokens"] = sum(lengths) / len(lengths)
        out["truncated"] = sum(r.finish_reason == "length" for r in records)
    return out


def _reflection_metrics(records: list[ItemRecord]) -> dict[str, Any]:
    """Self-reflection diagnostics: rounds, acceptance per judged round, and how often the loop fixes a wrong
    first answer or breaks a right one (the base-model collapse of spark_method.md 8.6 shows up as breaks)."""
    n = len(records)
    out: dict[str, Any] = {"mean_rounds": sum(len(r.extra["rounds"]) for r in records) / n}
    judged: dict[int, list[bool]] = {}
    for r in records:
        for i, rnd in enumerate(r.extra["rounds"]):
            if isinstance(rnd, dict) and rnd.get("judged"):
                judged.setdefault(i + 1, []).append(rnd.get("verdict") == "Yes")
    out["accept_rate_by_round"] = {str(k): sum(v) / len(v) for k, v in sorted(judged.items())}
    firsts = [(r.extra["first_correct"], r.correct) for r in records if "first_correct" in r.extra]
    if firsts:
        out["first_answer_accuracy"] = sum(f for f, _ in firsts) / len(firsts)
        out["fixed"] = sum(not f and c for f, c in firsts)
        out["broken"] = sum(f and not c for f, c in firsts)
    return out


def aggregate(bench: Benchmark, records: list[ItemRecord], protocol: EvalProtocol, mode: str,
              skipped: list[Skipped] | None = None, missing_splits: list[str] | None = None) -> BenchmarkResult:
    metrics = bench.metrics(records, protocol)
    metrics.update(_mode_metrics(records, mode))
    metrics["protocol"] = protocol.name
    metrics["mode"] = mode
    metrics["skipped_rows"] = len(skipped or [])
    if skipped:
        metrics["skipped"] = [s.to_dict() for s in skipped]
    if missing_splits:  # a partial benchmark: its numbers cover the splits present only
        metrics["missing_splits"] = list(missing_splits)
    return BenchmarkResult(bench.name, mode, protocol.name, metrics, bench.table_columns(protocol), bench.group,
                           records)


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def evaluate(
    engine,
    samples_by_benchmark: dict[str, list[Sample] | LoadedBenchmark],
    protocol: str | EvalProtocol = "spark",
    *,
    model_id: str = "model",
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    cache: GenerationCache | None = None,
    self_reflect: bool = False,
    max_rounds: int = 2,
    judge_input: str = "answer",
    best_of_n: int = 0,
    best_of_n_temperature: float = 1.0,
    reward_both_orders: bool = False,
    reflect_fn: Callable | None = None,
    judge_fn: Callable | None = None,
    llm_judge: LLMJudge | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate `engine` on each benchmark's samples; no files are needed (pass `cache` to resume from disk).

    `samples_by_benchmark` maps a benchmark name to its Samples (a name not in BENCHMARKS is scored as a
    generic dataset: verifier accuracy by category/source) or to a `LoadedBenchmark` from `load_benchmark`.
    """
    generation = get_protocol(protocol, max_new_tokens=max_new_tokens)
    proto = with_judge(generation, llm_judge)  # a judge changes the scores, not what is generated or cached
    gen = Generator(engine, cache, batch_size, progress)
    result = EvalResult(model=model_id, protocol=proto.summary())
    greedy = proto.sampling()
    for name, value in samples_by_benchmark.items():
        bench, samples, root, skipped = _resolve(name, value)
        missing = value.missing_splits if isinstance(value, LoadedBenchmark) else []
        if reward_both_orders and bench.flip is not None:
            samples = samples + [bench.flip(s) for s in samples]
        texts = {s.uid: bench.render(s, proto) for s in samples}
        light = _light_prompts(samples, texts, proto, "judge" if bench.group == "reward" else "policy")

        def requests(sampling: SamplingParams, n: int, extra: str, light=light, root=root) -> list[Request]:
            return [Request(p.sample, p, item_key(p, sampling, n, extra), root) for p in light]

        if bench.produce == "p_yes":  # scores, not text: the model's own P(yes) for each candidate reply
            fn = judge_fn or _default_judge_fn()
            modes: list[tuple[str, list[Request], Callable]] = [(GREEDY, requests(greedy, 1, "p_yes"),
                                                                 _p_yes(engine, fn))]
        else:
            modes = [(GREEDY, requests(greedy, 1, ""), _greedy(engine, greedy))]
        if bench.tts and self_reflect:
            fn = reflect_fn or _default_reflect_fn()
            modes.append((SELF_REFLECT, requests(greedy, 1, f"reflect:{max_rounds}:{judge_input}"),
                          _self_reflect(engine, greedy, fn, max_rounds, judge_input, proto.extract)))
        if bench.tts and best_of_n > 1:
            sampled = dataclasses.replace(greedy, temperature=best_of_n_temperature)
            fn = judge_fn or _default_judge_fn()
            modes.append((f"best_of_{best_of_n}", requests(sampled, best_of_n, f"best_of_n:{judge_input}"),
                          _best_of_n(engine, sampled, best_of_n, fn, judge_input, proto)))
        for mode, reqs, produce in modes:
            outcomes = gen.run(reqs, (generation.name, bench.name, mode), produce)
            judge = llm_judge if bench.group != "reward" else None
            records = [score_entry(bench, r.sample, proto, mode, texts[r.sample.uid], outcomes[r.sample.uid],
                                   llm_judge=judge) for r in reqs]
            result.results.append(aggregate(bench, records, proto, mode, skipped, missing))
    result.generated = gen.generated
    return result


def rescore(records: list[ItemRecord], protocol: str | EvalProtocol = "spark", model_id: str = "model",
            skipped: dict[str, list[Skipped]] | None = None, llm_judge: LLMJudge | None = None,
            missing_splits: dict[str, list[str]] | None = None) -> EvalResult:
    """Score saved records again (no model, no dataset): the `--score-only` path.

    `skipped` (benchmark -> rows the loader could not read) and `missing_splits` (benchmark -> splits the data
    lacked) are carried into the metrics when known."""
    proto = with_judge(get_protocol(protocol), llm_judge)
    result = EvalResult(model=model_id, protocol=proto.summary())
    groups: dict[tuple[str, str], list[ItemRecord]] = {}
    for r in records:
        groups.setdefault((r.benchmark, r.mode), []).append(r)
    for (name, mode), items in groups.items():
        bench = benchmark_for(name)
        rescored = []
        for r in items:
            sample = sample_from_json(r.sample)
            if r.status in ("image_error", "generation_error"):
                rescored.append(dataclasses.replace(r, protocol=proto.name))
                continue
            # Keep what generation produced (rounds, judge scores, length); recompute everything scored.
            extra = {k: v for k, v in r.extra.items() if k in ("rounds", "judge_scores", "num_tokens")}
            texts = r.extra.get("candidates") or [r.response or ""]
            entry = CacheEntry(r.uid, r.uid, list(texts), [r.finish_reason or ""] * len(texts), [], extra)
            judge = llm_judge if bench.group != "reward" else None
            rescored.append(score_entry(bench, sample, proto, mode, r.prompt, Outcome(entry), r.sample, judge))
        result.results.append(aggregate(bench, rescored, proto, mode, (skipped or {}).get(name),
                                        (missing_splits or {}).get(name)))
    return result
