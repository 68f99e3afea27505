"""Generation throughput of the `hf` and `vllm` rollout backends on the same prompts (tokens/s).

    .venv-vllm/bin/python scripts/bench_rollout.py                        # CPU: the tiny model (-hd64)
    python scripts/bench_rollout.py --model Qwen/Qwen2.5-VL-7B-Instruct --prompts 64 --n 8 --max-new-tokens 512

Both engines get the same prompts (the builtin synthetic picture tasks, one image each), group size and sampling
settings (temperature 1, top-p 1); tokens/s = generated tokens / wall seconds of `generate`, after one warm-up
call, the best of `--repeats`. vLLM's start-up is reported separately. Prints a markdown table row per backend
for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny-qwen2.5-vl-hd64")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--backends", default="hf,vllm")
    p.add_argument("--dtype", default="auto")
    args = p.parse_args()

    import torch

    from spark_vl.config import ModelConfig, RolloutConfig
    from spark_vl.data.prompts import build_prompt
    from spark_vl.data.synthetic import synthetic_samples
    from spark_vl.models import load_model
    from spark_vl.rollout import make_engine
    from spark_vl.types import SamplingParams

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = load_model(ModelConfig(path=args.model, dtype=args.dtype, max_pixels=12544), device)
    prompts = [build_prompt(s) for s in synthetic_samples(args.prompts, seed=3)]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    rows = []
    for backend in args.backends.split(","):
        t0 = time.perf_counter()
        engine = make_engine(RolloutConfig(backend=backend, generation_batch_size=args.prompts * args.n,
                                           vllm_max_model_len=1024, vllm_enable_sleep=False), model, processor)
        engine.wake()
        engine.generate(prompts[:2], 1, SamplingParams(max_new_tokens=4))  # warm-up (and vLLM's first push)
        startup = time.perf_counter() - t0
        best = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            groups = engine.generate(prompts, args.n, sampling)
            seconds = time.perf_counter() - t
            tokens = sum(len(r.token_ids) for g in groups for r in g.rollouts)
            if best is None or tokens / seconds > best[0] / best[1]:
                best = (tokens, seconds)
        tokens, seconds = best
        rows.append((backend, tokens, seconds, startup))
        del engine
    versions = f"torch {torch.__version__}"
    try:
        import vllm

        versions += f", vllm {vllm.__version__}"
    except ImportError:
        pass
    print(f"\nmodel {args.model}, {device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
          f"{versions}; {args.prompts} prompts x {args.n} samples, up to {args.max_new_tokens} new tokens, T=1\n")
    print("| backend | generated tokens | seconds | tokens/s | start-up + warm-up (s) |")
    print("|---|---:|---:|---:|---:|")
    for backend, tokens, seconds, startup in rows:
        print(f"| {backend} | {tokens} | {seconds:.2f} | {tokens / seconds:,.0f} | {startup:.1f} |")


if __name__ == "__main__":
    main()
