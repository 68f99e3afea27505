"""Evaluation: benchmark adapters, named protocols, cached batched generation, reports (docs/EVAL.md).

    from spark_vl.eval import evaluate, load_benchmark, get_benchmark, GenerationCache, write_report

    loaded = {"mathvista": load_benchmark(get_benchmark("mathvista"), "/data/MathVista", limit=100)}
    result = evaluate(engine, loaded, "spark", model_id="qwen2.5-vl-7b", cache=GenerationCache("cache", "qwen"))
    write_report(result, "runs/eval/qwen")

In training: `evaluate(engine, {"val": samples}, "spark", max_new_tokens=256).flat_metrics()`.
"""

from spark_vl.eval.benchmarks import BENCHMARKS, Benchmark, UnknownBenchmarkError, generic_benchmark, get_benchmark
from spark_vl.eval.cache import GenerationCache
from spark_vl.eval.loading import BenchmarkSourceError, load_benchmark
from spark_vl.eval.protocols import PROTOCOLS, EvalProtocol, get_protocol
from spark_vl.eval.records import BenchmarkResult, EvalResult, ItemRecord
from spark_vl.eval.report import compare_runs, read_items, write_report
from spark_vl.eval.runner import evaluate, rescore

__all__ = [
    "BENCHMARKS",
    "PROTOCOLS",
    "Benchmark",
    "BenchmarkResult",
    "BenchmarkSourceError",
    "EvalProtocol",
    "EvalResult",
    "GenerationCache",
    "ItemRecord",
    "UnknownBenchmarkError",
    "compare_runs",
    "evaluate",
    "generic_benchmark",
    "get_benchmark",
    "get_protocol",
    "load_benchmark",
    "read_items",
    "rescore",
    "write_report",
]
