"""How many labelled judgments does a builtin model need to judge a synthetic task? (docs/SPARK.md §11)

Trains only the pointwise verdict, with plain cross-entropy on the two verdict logits that `judge_score` reads,
on balanced items (the row's gold answer, or another row's gold for the same task), and prints the held-out
judge AUC / accuracy that training logs as eval/judge_*. No rollouts, no RL: an upper bound on how fast the
SPARK demo's judge can learn the same task.

    python scripts/judge_probe.py --tasks color --steps 300
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.tiny import build_tiny
from spark_vl.spark.judge import judge_prompts, judge_score, verdict_logits, verdict_rows
from spark_vl.spark.metrics import verdict_separation
from spark_vl.trainer.spark_phase import wrong_answers


def held_out_judge(model, processor, prompts) -> tuple[float, float]:
    """(AUC, accuracy) of P(Yes) on gold vs another row's answer, as SparkPhase.evaluate_judge computes them."""
    pairs = wrong_answers(prompts)
    shown = [p for p, _ in pairs]
    right = judge_score(model, processor, shown, [p.sample.answer for p in shown])
    wrong = judge_score(model, processor, shown, [w for _, w in pairs])
    accuracy, auc = verdict_separation(right, wrong)
    return auc, accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-qwen2.5-vl")
    ap.add_argument("--tasks", default="color", help="comma-separated synthetic tasks")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=50)
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    torch.manual_seed(0)
    model, processor = build_tiny(args.model)
    train = [build_prompt(s) for s in synthetic_samples(2000, seed=0, tasks=tasks)]
    held = [build_prompt(s) for s in synthetic_samples(64, seed=0, start=100_000, tasks=tasks)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng, start = random.Random(0), time.time()
    print(f"step 0: held-out judge AUC {held_out_judge(model, processor, held)[0]:.3f}", flush=True)
    for step in range(1, args.steps + 1):
        batch = rng.sample(train, args.batch)
        shown, targets = [], []
        for p in batch:
            others = [q.sample.answer for q in rng.sample(train, 40)
                      if q.sample.category == p.sample.category and q.sample.answer != p.sample.answer]
            correct = rng.random() < 0.5 or not others
            shown.append(p.sample.answer if correct else others[0])
            targets.append(0 if correct else 1)  # index into (positive, negative) logits
        logits = verdict_logits(model, processor, verdict_rows(processor, judge_prompts(batch, shown)))
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            auc, acc = held_out_judge(model, processor, held)
            print(f"step {step} ({step * args.batch} judgments, {time.time() - start:.0f} s): loss {loss.item():.3f}, "
                  f"held-out judge AUC {auc:.3f}, accuracy {acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
