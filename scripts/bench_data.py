"""Data throughput: preparing (decode + validate + write) and loading prepared data into prompts.

    python scripts/bench_data.py                       # 1,000 rows of 448 px images, 1 and 2 workers
    python scripts/bench_data.py --rows 500 --image-size 768 --content photo --json bench.json

1. Builds a source parquet in the hub layout (HF image structs with PNG bytes, boxed answers) from the
   procedural generator, outside the timings.
2. prepare: runs the `generic` recipe on it (image header checks, full decode, pixel hash, verifier
   check of every gold, duplicate detection, parquet + image files written); rows/s per worker count.
3. load: `load_samples(prepared)` alone (no image decoded), then load + `build_prompt` (decodes the
   images) + `prompt_length` with the builtin tiny Qwen2.5-VL processor at the demo's pixel bounds.
The last figure is compared with what the CPU demo consumes (8 prompts per rollout step of 5-10 s,
i.e. at most 1.6 prompts/s): data loading must be at least 10x faster so it never stalls training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

DEMO_PROMPTS_PER_S = 8 / 5.0  # the demo's fastest step: 8 prompts per ~5 s


def photo(rng, size: int):
    """A photo-like JPEG-friendly picture: a smooth random colour field plus grain (compresses like a photo)."""
    from PIL import Image

    small = Image.frombytes("RGB", (6, 5), bytes(rng.randrange(256) for _ in range(6 * 5 * 3)))
    img = small.resize((size, size * 3 // 4), Image.Resampling.BICUBIC)
    grain = Image.effect_noise(img.size, 24).convert("RGB")
    return Image.blend(img, grain, 0.15)


def build_source(path: Path, rows: int, image_size: int, content: str) -> float:
    """A hub-layout parquet source; returns the mean encoded image size in bytes."""
    import io
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_recipes import synthetic as procedural

    rng = random.Random(0)
    out, image_bytes = [], 0
    for i in range(rows):
        s = procedural.procedural_sample(i, seed=1, image_size=image_size, solutions=False)
        buf = io.BytesIO()
        if content == "photo":
            photo(rng, image_size).save(buf, format="JPEG", quality=90)
        else:
            s.images[0].save(buf, format="PNG")
        image_bytes += buf.tell()
        out.append({"id": s.uid, "problem": s.problem, "answer": f"\\boxed{{{s.answer}}}",
                    "images": [{"bytes": buf.getvalue(), "path": f"{s.uid}.png"}]})
    pq.write_table(pa.Table.from_pylist(out), path)
    return image_bytes / rows


def bench_prepare(source: Path, out: Path, workers: int) -> dict:
    from spark_vl.prep.recipes import build_parser, find_recipe, prepare

    recipe = find_recipe("generic")
    args = build_parser(recipe).parse_args(["--source", str(source), "--out", str(out), "--workers", str(workers),
                                            "--overwrite", "--keep-duplicates"])
    start = time.perf_counter()
    result = prepare(recipe, args, command="bench")
    seconds = time.perf_counter() - start
    return {"workers": workers, "rows": result.report.rows_seen, "kept": result.report.rows_kept,
            "seconds": round(seconds, 2), "rows_per_s": round(result.report.rows_seen / seconds, 1)}


def bench_load(prepared: Path) -> dict:
    from spark_vl.data.prepared import load_samples
    from spark_vl.data.prompts import build_prompt, prompt_length
    from spark_vl.models.tiny import build_processor

    processor = build_processor("tiny-qwen2.5-vl", min_pixels=3136, max_pixels=12544)  # the demo's bounds
    start = time.perf_counter()
    result = load_samples(str(prepared))
    load_s = time.perf_counter() - start
    lengths = []
    start = time.perf_counter()
    for sample in result.samples:
        prompt = build_prompt(sample, "boxed", image_root=result.root)
        lengths.append(prompt_length(prompt, processor))
    prompt_s = time.perf_counter() - start
    n = len(result.samples)
    return {
        "rows": n,
        "load_s": round(load_s, 3),
        "load_rows_per_s": round(n / load_s),
        "prompts_s": round(load_s + prompt_s, 2),
        "prompts_per_s": round(n / (load_s + prompt_s), 1),
        "mean_prompt_tokens": round(sum(lengths) / n, 1),
        "vs_demo_consumption": round(n / (load_s + prompt_s) / DEMO_PROMPTS_PER_S, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=448, help="image width in pixels")
    parser.add_argument("--content", choices=("procedural", "photo"), default="procedural",
                        help="procedural drawings as PNG, or photo-like JPEGs (width x 3/4 width)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict = {
        "command": shlex.join(["python", "scripts/bench_data.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mean_bytes = build_source(tmp / "source.parquet", args.rows, args.image_size, args.content)
        results["mean_image_bytes"] = round(mean_bytes)
        results["prepare"] = [bench_prepare(tmp / "source.parquet", tmp / "prepared", w) for w in args.workers]
        results["load"] = bench_load(tmp / "prepared")
    print(json.dumps(results, indent=1))
    print("\n| step | rows/s |\n|---|---|")
    for p in results["prepare"]:
        print(f"| prepare ({p['workers']} worker{'s' if p['workers'] > 1 else ''}) | {p['rows_per_s']} |")
    load = results["load"]
    print(f"| load_samples (no decode) | {load['load_rows_per_s']} |")
    print(f"| load + build_prompt + prompt_length | {load['prompts_per_s']} "
          f"({load['vs_demo_consumption']}x the demo's 1.6 prompts/s) |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
