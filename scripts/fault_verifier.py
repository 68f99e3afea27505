"""Adversarial verifier inputs and how long each takes (docs/RELIABILITY.md, item 1).

    python scripts/fault_verifier.py

Every call goes through `spark_vl.rewards.check` in this process, as the trainer's reward phase does with
`reward.num_workers: 0`; symbolic work runs in the killable worker under `timeout_s` (2 s, the default).
"""

from __future__ import annotations

import time

from spark_vl.rewards import check
from spark_vl.rewards.symbolic import symbolic_compare

CASES = [
    ("precision 10^8 from a row", dict(pred="1.5", gold="1.5", precision=100_000_000)),
    ("tolerance inf from a row", dict(pred="1.5", gold="2.5", tolerance=float("inf"))),
    ("tolerance NaN from a row", dict(pred="1.5", gold="2.5", tolerance=float("nan"))),
    ("python power 10**10**10 vs 101010", dict(pred="10**10**10", gold="101010")),
    ("exponent 1e999999999", dict(pred="1e999999999", gold="1")),
    ("power tower 9^{9^{9^{9}}}", dict(pred="9^{9^{9^{9}}}", gold="3")),
    ("symbolic tower x^{9^{9^{9}}} vs y", dict(pred="x^{9^{9^{9}}}", gold="y")),
    ("prediction 9^{9^{9}}+x, gold 3 (probe: gold fine)", dict(pred="9^{9^{9}}+x", gold="3")),
    ("the same gold again, other prediction", dict(pred="9^{9^{9}}+y", gold="3")),
    ("gold 9^{9^{9}}, first rollout (timeout + probe)", dict(pred="x+1", gold="9^{9^{9}}")),
    ("gold 9^{9^{9}}, every later rollout", dict(pred="x+2", gold="9^{9^{9}}")),
    ("10,000-character answer", dict(pred="1" * 10_000, gold="1")),
    ("deeply nested braces", dict(pred="{" * 5000 + "1" + "}" * 5000, gold="1")),
]


def main() -> None:
    symbolic_compare("1", "1", 60.0)  # start the worker (imports sympy) before timing
    print(f"{'input':48s} {'verdict':8s} {'layer':18s} {'timeouts':>8s} {'seconds':>8s}")
    for name, kwargs in CASES:
        start = time.monotonic()
        result = check(kwargs.pop("pred"), kwargs.pop("gold"), timeout_s=2.0, **kwargs)
        elapsed = time.monotonic() - start
        print(f"{name:48s} {str(result.correct):8s} {result.layer:18s} {result.timeouts:8d} {elapsed:8.3f}")


if __name__ == "__main__":
    main()
