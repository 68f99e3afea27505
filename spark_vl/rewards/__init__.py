"""Answer verification and rewards: one extraction rule and one verifier for training, SPARK and evaluation.

    extract_answer(response, mode="last")       the final answer (box, <answer> tag, phrase, last line)
    verify(pred, gold, answer_type=..., ...)    True/False under the conventions in docs/VERIFIERS.md
    parse_verdict(response, kind)               "Yes"/"No" or "A"/"B" from a judge response, or None
    score(response, sample, cfg)                RewardOutput with parts accuracy and format
    score_batch(responses, samples, cfg)        the same for a step, in a persistent process pool
    score_groups(groups, cfg, judge=None)       set rollout.reward for a step (judge: P(Yes) for gold-less rows)
    REWARDS                                     "math"; cfg.name may also be "package.module:function"

Importing this package does not import torch or sympy; sympy only ever runs in the symbolic worker process.
"""

from spark_vl.rewards.extract import extract_answer
from spark_vl.rewards.formats import format_score
from spark_vl.rewards.score import REWARDS, GoldSpec, close_pool, has_gold, score, score_batch, score_groups
from spark_vl.rewards.verdict import normalize_verdict, parse_verdict
from spark_vl.rewards.verify import Check, check, infer_answer_type, verify

__all__ = [
    "REWARDS",
    "Check",
    "GoldSpec",
    "check",
    "close_pool",
    "extract_answer",
    "format_score",
    "has_gold",
    "infer_answer_type",
    "normalize_verdict",
    "parse_verdict",
    "score",
    "score_batch",
    "score_groups",
    "verify",
]
