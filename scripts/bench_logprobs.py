"""Peak memory of per-token log-probs: chunked (spark-vl) vs naive (full logits, log_softmax, gather).

Each variant runs in a fresh subprocess on the same synthetic hidden states and LM head, so its peak RSS
is its own; the values are compared element by element.

    python scripts/bench_logprobs.py --batch 4 --seq 4096 --vocab 151646 --hidden 64
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> None:
    import torch

    from spark_vl.algorithms.logprobs import chunked_logprobs, naive_logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    hidden = torch.randn(args.batch, args.seq, args.hidden)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq))
    base = rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        if args.variant == "naive":
            logp = naive_logprobs(head(hidden), targets)
        else:
            logp, _ = chunked_logprobs(hidden, head, targets)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(logp, args.out)
    print(json.dumps({"variant": args.variant, "peak_mb": peak - base, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151646)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--variant", choices=["naive", "chunked"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.variant:
        worker(args)
        return
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("chunked", "naive"):
            out = Path(tmp) / f"{variant}.pt"
            cmd = [sys.executable, __file__, "--variant", variant, "--out", str(out), "--batch", str(args.batch),
                   "--seq", str(args.seq), "--vocab", str(args.vocab), "--hidden", str(args.hidden)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{variant} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[variant]["values"] = torch.load(out)
    diff = (results["chunked"]["values"] - results["naive"]["values"]).abs().max().item()
    ratio = results["chunked"]["peak_mb"] / results["naive"]["peak_mb"]
    print(f"# log-prob memory, batch {args.batch} x {args.seq} tokens x vocabulary {args.vocab} (fp32, no grad)")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads; date {date.today()}")
    print("| variant | peak memory above inputs | seconds |")
    print("|---|---|---|")
    for variant in ("naive", "chunked"):
        r = results[variant]
        print(f"| {variant} | {r['peak_mb']:.0f} MB | {r['seconds']:.2f} |")
    print(f"chunked / naive peak = {ratio:.4f} (target <= 0.125); max |difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
