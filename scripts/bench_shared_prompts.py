"""The log-prob passes with and without `trainer.share_prompts`, on one micro-batch, in one process.

A micro-batch like issue 17's (`--prompts` synthetic picture prompts x `--rows` responses of `--tokens` random
tokens, the tiny Qwen2.5-VL by default), scored both ways, alternating, `--repeats` times: the reference pass (no
gradient, no entropy) and the update's forward and backward (log-probs and entropy). Prints the medians, the median of
the paired ratios, and the largest log-prob difference between the two.

    python scripts/bench_shared_prompts.py
    python scripts/bench_shared_prompts.py --model tiny-qwen3-vl --tokens 128
    python scripts/bench_shared_prompts.py --image-size 448   # a larger picture: more of each row is prompt
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spark_vl.algorithms.logprobs import sequence_logprobs
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.encode import attach_positions, encode_prompt
from spark_vl.models.tiny import build_tiny
from spark_vl.trainer.batch import Sequence, collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen2.5-vl")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rows", type=int, default=4, help="responses per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per response")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=None, help="picture side in pixels (default: the data's)")
    args = parser.parse_args()
    model, processor = build_tiny(args.model, seed=0)
    pad = processor.tokenizer.pad_token_id
    encoded = [encode_prompt(build_prompt(s), processor) for s in synthetic_samples(args.prompts, seed=5, **(
        {"image_size": args.image_size} if args.image_size else {}))]
    for e in encoded:
        attach_positions(model, e)
    vocab = [t for t in range(10, len(processor.tokenizer)) if t not in processor.tokenizer.all_special_ids]
    g = torch.Generator().manual_seed(0)
    seqs = [Sequence(e, [vocab[int(i)] for i in torch.randint(0, len(vocab), (args.tokens,), generator=g)])
            for e in encoded for _ in range(args.rows)]
    full, shared = collate(seqs, pad), collate(seqs, pad, share_prompts=True)

    def reference(batch):
        with torch.no_grad():
            return sequence_logprobs(model, batch, with_entropy=False)[0]

    def update(batch):
        model.zero_grad()
        logp, entropy = sequence_logprobs(model, batch)
        (logp * batch.response_mask).sum().backward()
        return logp.detach()

    on = full.response_mask.bool()
    lengths = sorted(len(e.input_ids) for e in encoded)
    print(f"# {args.model}, {args.prompts} prompts of {lengths} tokens x {args.rows} rows x {args.tokens} response "
          f"tokens, CPU fp32, {torch.get_num_threads()} threads, median of "
          f"{args.repeats}")
    for name, fn in (("reference pass", reference), ("update forward + backward", update)):
        for _ in range(3):
            fn(full), fn(shared)
        times, ratios = {"full": [], "shared": []}, []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = fn(full)
            t1 = time.perf_counter()
            b = fn(shared)
            t2 = time.perf_counter()
            times["full"].append(t1 - t0)
            times["shared"].append(t2 - t1)
            ratios.append((t2 - t1) / (t1 - t0))
        print(f"{name}: full rows {statistics.median(times['full']) * 1e3:.1f} ms, shared prompts "
              f"{statistics.median(times['shared']) * 1e3:.1f} ms, paired ratio {statistics.median(ratios):.2f}, "
              f"max |log-prob difference| {(a[on] - b[on]).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
