"""`spark-vl eval`: evaluate a model, re-score saved predictions, compare runs, list benchmarks.

    spark-vl eval --model <hf dir | run dir | checkpoint | builtin:tiny-qwen2.5-vl> \\
        --benchmarks mathvista,mathverse,wemath --data mathvista=/data/MathVista [--protocol spark] \\
        [--self-reflect] [--best-of-n 8] [--limit 100] [--out runs/eval/my-model]
    spark-vl eval --score-only runs/eval/my-model [--protocol official] [--out runs/eval/my-model-official]
    spark-vl eval compare runs/eval/base runs/eval/spark-step-400 [--out runs/eval/compare]
    spark-vl eval list

Exit codes: 0 done; 2 a usage problem (unknown benchmark or protocol, unreadable data, bad file) reported in
one line. Items with a missing image or no readable answer never stop a run; they are counted in the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from spark_vl.eval.benchmarks import BENCHMARKS, UnknownBenchmarkError, get_benchmark
from spark_vl.eval.protocols import PROTOCOLS, UnknownProtocolError, get_protocol
from spark_vl.plugins import PluginError, resolve

logger = logging.getLogger("spark_vl.eval")


class UsageError(ValueError):
    """A command-line problem reported in one line with exit code 2."""


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag} {item!r} must look like <benchmark>=<value>")
        out[name.strip()] = value.strip()
    return out


def _benchmark_names(text: str | list[str] | None) -> list[str]:
    if not text:
        return []
    parts = text if isinstance(text, list) else text.split(",")
    return [p.strip() for p in parts if p.strip()]


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spark-vl eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF model folder, hub id, run dir / checkpoint (exported on the fly) or builtin:*")
    p.add_argument("--model-name", help="name of the model in reports and the cache (default: the --model value)")
    p.add_argument("--benchmarks", help="comma-separated names (see `spark-vl eval list`) or prepared:<path>")
    p.add_argument("--protocol", help=f"one of {', '.join(PROTOCOLS)} (default spark)")
    p.add_argument("--data", action="append", metavar="NAME=PATH", help="local datasets folder / parquet / json")
    p.add_argument("--split", action="append", metavar="NAME=SPLIT", help="override a benchmark's split")
    p.add_argument("--limit", type=int, help="first N items per benchmark")
    p.add_argument("--batch-size", type=int, help="items per generate call")
    p.add_argument("--max-new-tokens", type=int, help="override the protocol's token budget (renames the protocol)")
    p.add_argument("--out", help="output folder (default runs/eval/<model name>)")
    p.add_argument("--cache-dir", help="generation cache (default <out>/cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the generation cache")
    p.add_argument("--self-reflect", action="store_true", default=None, help="add a self-reflection row")
    p.add_argument("--max-rounds", type=int, help="self-reflection rounds (default 2)")
    p.add_argument("--judge-input", choices=("answer", "cot"), help="what the self-judge sees (default answer)")
    p.add_argument("--best-of-n", type=int, help="add a best-of-N row picked by the model's own P(yes)")
    p.add_argument("--temperature", type=float, help="best-of-N sampling temperature (default 1.0)")
    p.add_argument("--both-orders", action="store_true", default=None,
                   help="reward benchmarks: also judge the flipped order (position consistency)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--backend", default="hf",
                   help="rollout engine: hf (transformers) or vllm (tensor parallel across the visible GPUs)")
    p.add_argument("--llm-judge", metavar="MODULE:ATTR", help="an optional LLM answer judge (spark_vl.eval.judge)")
    p.add_argument("--config", help="YAML preset whose model and eval sections give the defaults")
    p.add_argument("--score-only", metavar="FILE|DIR", help="re-score saved items (no model needed)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("overrides", nargs="*", help="section.key=value config overrides (with --config)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if argv and argv[0] == "compare":
            return _compare(argv[1:])
        if argv and argv[0] == "list":
            return _list()
        return _evaluate(_eval_parser().parse_args(argv))
    except (UsageError, UnknownBenchmarkError, UnknownProtocolError, FileNotFoundError) as err:
        print(f"spark-vl eval: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # unreadable data sources and bad prediction files name the file and the row
        print(f"spark-vl eval: {err}", file=sys.stderr)
        return 2


def _list() -> int:
    for name, bench in BENCHMARKS.items():
        hub = f"{bench.hub_id}" + (f" [{bench.hub_config}]" if bench.hub_config else "")
        print(f"{name:24s} {bench.label:16s} {hub} {'/'.join(s or '' for s in bench.splits)}\n{'':24s} {bench.notes}")
    print("\nprepared:<path>          any prepared dataset from the data recipes (verifier accuracy)")
    return 0


def _compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="spark-vl eval compare", description="Side-by-side table with deltas.")
    p.add_argument("dirs", nargs="+", help="evaluation output folders (the first is the baseline)")
    p.add_argument("--out", help="folder for compare.md / compare.json / compare.png")
    args = p.parse_args(argv)
    from spark_vl.eval.report import compare_runs

    text, _ = compare_runs(args.dirs, args.out)
    print(text)
    if args.out:
        print(f"\nwrote {Path(args.out) / 'compare.md'} and compare.png")
    return 0


def _settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """(EvalConfig, ModelConfig) from --config + overrides, then the explicit flags."""
    from spark_vl.config import Config, load_config

    cfg = load_config(args.config, args.overrides) if args.config or args.overrides else Config()
    ev = cfg.eval
    for flag, field in (("batch_size", "batch_size"), ("max_new_tokens", "max_new_tokens"), ("limit", "limit"),
                        ("self_reflect", "self_reflect"), ("max_rounds", "max_rounds"), ("judge_input", "judge_input"),
                        ("best_of_n", "best_of_n"), ("temperature", "best_of_n_temperature"),
                        ("both_orders", "reward_both_orders"), ("protocol", "protocol"), ("cache_dir", "cache_dir")):
        value = getattr(args, flag)
        if value is not None:
            setattr(ev, field, value)
    if args.benchmarks:
        ev.benchmarks = _benchmark_names(args.benchmarks)
    if args.model:
        cfg.model.path = args.model
    return ev, cfg.model


def _evaluate(args: argparse.Namespace) -> int:
    ev, model_cfg = _settings(args)
    protocol = get_protocol(ev.protocol)
    names = _benchmark_names(ev.benchmarks)
    benches = [get_benchmark(n) for n in names]  # unknown names fail here, before any loading
    data, splits = _pairs(args.data, "--data"), _pairs(args.split, "--split")
    if args.score_only:
        return _score_only(args, ev, protocol, benches, data, splits)
    if not benches:
        raise UsageError(f"--benchmarks is required; known: {', '.join(BENCHMARKS)}")
    if not args.model and not args.config:
        raise UsageError("--model is required (an HF folder, a run checkpoint or builtin:tiny-qwen2.5-vl)")
    from spark_vl.eval.loading import load_benchmark

    loaded = {}
    for bench in benches:
        source = data.get(bench.name) or data.get(names[benches.index(bench)])
        lb = load_benchmark(bench, source, split=splits.get(bench.name), limit=ev.limit)
        logger.info("%s: %d items from %s (%d rows skipped)", bench.name, len(lb.samples), lb.source, len(lb.skipped))
        if lb.missing_splits:
            logger.info("%s: evaluating %d of %d splits; missing: %s", bench.name,
                        len(lb.splits) - len(lb.missing_splits), len(lb.splits), ", ".join(lb.missing_splits))
        loaded[bench.name] = lb
    if args.backend == "vllm" and (ev.self_reflect or ev.best_of_n > 1):
        raise UsageError("--self-reflect and --best-of-n judge with the model's own P(yes), a transformers forward "
                         "pass: run them with --backend hf")
    model_id = args.model_name or model_cfg.path
    out = Path(args.out or Path("runs/eval") / _safe_name(model_id))
    engine = _engine(model_cfg, args.device, ev.batch_size, out, args.backend)
    from spark_vl.eval.cache import GenerationCache
    from spark_vl.eval.report import write_report
    from spark_vl.eval.runner import evaluate

    cache = None if args.no_cache else GenerationCache(ev.cache_dir or out / "cache", model_id)
    result = evaluate(
        engine, loaded, protocol, model_id=model_id, batch_size=ev.batch_size,
        max_new_tokens=ev.max_new_tokens if ev.max_new_tokens != protocol.max_new_tokens else None,
        cache=cache, self_reflect=ev.self_reflect, max_rounds=ev.max_rounds, judge_input=ev.judge_input,
        best_of_n=ev.best_of_n, best_of_n_temperature=ev.best_of_n_temperature,
        reward_both_orders=ev.reward_both_orders, llm_judge=_llm_judge(args.llm_judge), progress=args.progress,
    )
    paths = write_report(result, out, chart=not args.no_chart)
    print(paths["table"].read_text())
    print(f"generated {result.generated} items; wrote {out}/ (metrics.json, results.md, items/, results.png)")
    return 0


def _safe_name(model_id: str) -> str:
    from spark_vl.eval.cache import slug

    return slug(model_id.rstrip("/").split("/")[-1] if "/" in model_id else model_id)


def _llm_judge(spec: str | None):
    """`package.module:attr` -> the judge object (a class is instantiated without arguments)."""
    if not spec:
        return None
    try:
        value = resolve(spec, {}, "--llm-judge")
    except PluginError as err:
        raise UsageError(str(err)) from None
    judge = value() if isinstance(value, type) else value
    if not callable(judge) or not getattr(judge, "name", None):
        raise UsageError(f"--llm-judge {spec}: needs a callable with a `name` (see spark_vl/eval/judge.py)")
    return judge


def _engine(model_cfg, device: str, batch_size: int, out: Path, backend: str = "hf"):
    import torch

    from spark_vl.config import RolloutConfig
    from spark_vl.models import load_model
    from spark_vl.rollout import make_engine

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_cfg.path = _resolve_model(model_cfg.path, out)
    if backend == "vllm":
        return _vllm_engine(model_cfg, batch_size, device)
    model, processor = load_model(model_cfg, device)
    try:
        return make_engine(RolloutConfig(backend=backend, generation_batch_size=batch_size), model, processor)
    except (NotImplementedError, ValueError) as err:
        raise UsageError(str(err)) from None


def _vllm_engine(model_cfg, batch_size: int, device: str):
    """vLLM for evaluation: no training process, the weights read from the model folder, tensor parallel across the
    visible GPUs (the largest power of two dividing the heads). Same prompts, images and scoring as `hf`."""
    import torch

    from spark_vl.config import RolloutConfig
    from spark_vl.models import BUILTIN_PREFIX, load_model, load_processor, resolve_dtype
    from spark_vl.rollout import engine_class

    try:
        engine_class("vllm")
    except ValueError as err:
        raise UsageError(str(err)) from None
    from spark_vl.rollout.vllm import VLLMEngine, tensor_parallel_for

    model, path, heads = None, model_cfg.path, 1
    if path.startswith(BUILTIN_PREFIX):  # no folder to read: the engine writes the tiny model out itself
        model, processor = load_model(model_cfg, "cpu")
    else:
        from transformers import AutoConfig

        processor = load_processor(model_cfg)
        config = AutoConfig.from_pretrained(path)
        heads = getattr(getattr(config, "text_config", config), "num_attention_heads", 1)
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    cfg = RolloutConfig(backend="vllm", generation_batch_size=batch_size, vllm_enable_sleep=False,
                        vllm_tensor_parallel_size=tensor_parallel_for(heads, gpus) if gpus else 1,
                        vllm_gpu_memory_utilization=0.85)
    return VLLMEngine(model, processor, cfg, model_path=None if model is not None else path,
                      dtype=resolve_dtype(model_cfg.dtype, device))


def _resolve_model(spec: str, out: Path) -> str:
    """A run dir or training checkpoint is exported to <out>/model once; anything else loads as is."""
    path = Path(spec)
    if not path.is_dir() or (path / "config.json").is_file():
        return spec
    if (path / "trainer_state.pt").is_file() or (path / "checkpoints").is_dir():
        from spark_vl.models.export import export_hf

        target = out / "model"
        if not (target / "config.json").is_file():
            logger.info("exporting checkpoint %s to %s", path, target)
            export_hf(path, target)
        return str(target)
    return spec


# ---------------------------------------------------------------------------------------------------------------
# --score-only


def _score_only(args, ev, protocol, benches, data, splits) -> int:
    from spark_vl.eval.records import ItemRecord
    from spark_vl.eval.report import read_items, write_report
    from spark_vl.eval.runner import rescore

    source = Path(args.score_only)
    if not source.exists():
        raise UsageError(f"--score-only {source}: no such file or folder")
    skipped: dict[str, list] = {}
    missing: dict[str, list[str]] = {}
    if source.is_file() and not _has_samples(source):
        records: list[ItemRecord] = _records_from_predictions(source, benches, data, splits, ev.limit, protocol,
                                                              skipped, missing)
    else:
        records = read_items(source)
    if benches:
        keep = {b.name for b in benches}
        records = [r for r in records if r.benchmark in keep]
    model_id = args.model_name or _model_of(source) or "predictions"
    result = rescore(records, protocol, model_id=model_id, skipped=skipped, llm_judge=_llm_judge(args.llm_judge),
                     missing_splits=missing)
    default_out = source.parent / f"{source.stem}-rescored" if source.is_file() else source / "rescored"
    out = Path(args.out or default_out)
    paths = write_report(result, out, chart=not args.no_chart)
    print(paths["table"].read_text())
    print(f"re-scored {len(records)} items; wrote {out}/")
    return 0


def _has_samples(path: Path) -> bool:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return "sample" in json.loads(line)
                except json.JSONDecodeError:
                    raise UsageError(f"{path}: first line is not JSON") from None
    return False


def _model_of(source: Path) -> str | None:
    metrics = (source if source.is_dir() else source.parent.parent) / "metrics.json"
    if metrics.is_file():
        try:
            return json.loads(metrics.read_text()).get("model")
        except json.JSONDecodeError:
            return None
    return None


def _records_from_predictions(path: Path, benches, data, splits, limit, protocol, skipped: dict[str, list],
                              missing: dict[str, list[str]] | None = None):
    """Plain predictions ({"uid", "response"[, "benchmark"]} per line) joined with the benchmark's samples."""
    from spark_vl.eval.loading import load_benchmark
    from spark_vl.eval.records import ItemRecord, sample_to_json

    preds: dict[tuple[str | None, str], str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                preds[(row.get("benchmark"), str(row["uid"]))] = row.get("response") or ""
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UsageError(f"{path}:{lineno}: expected a JSON object with 'uid' and 'response'") from None
    if not benches:
        names = {b for b, _ in preds if b}
        benches = [get_benchmark(n) for n in sorted(names)]
    if not benches:
        raise UsageError("plain predictions need --benchmarks (or a 'benchmark' field per line) and --data")
    records = []
    for bench in benches:
        lb = load_benchmark(bench, data.get(bench.name), split=splits.get(bench.name), limit=limit)
        skipped[bench.name] = lb.skipped
        if missing is not None and lb.missing_splits:
            missing[bench.name] = lb.missing_splits
        for s in lb.samples:
            response = preds.get((bench.name, s.uid), preds.get((None, s.uid)))
            status = "ok" if response is not None else "generation_error"
            records.append(ItemRecord(
                benchmark=bench.name, uid=s.uid, mode="greedy", protocol=protocol.name,
                prompt=bench.render(s, protocol), response=response, extracted=None, correct=False, status=status,
                error=None if response is not None else "no prediction for this item", sample=sample_to_json(s),
            ))
    return records
