"""SPARK: the policy learns to be its own generative judge from the rollouts it already produced.

- `recycle`: one step's scored policy groups -> judge (pointwise/pairwise) and reflection prompts.
- `AuxQueue`: FIFO of auxiliary prompts with a maximum age and checkpointable state.
- `judge_metrics`, `expected_calibration_error`: judge accuracy, position bias, fix rate, calibration.
- `judge_score`, `best_of_n`: P(Yes) / P(A) read from the logits at the verdict position (one forward pass).
- `RewardJudge`: RewardDance-style P(Yes) rewards (policy or a separate frozen judge), batched and cached.
- `self_reflect`: the test-time answer -> self-judge -> reflect loop.
See docs/SPARK.md for the rules, the knobs and what differs from the reference code.
"""

from spark_vl.spark.aux_queue import AuxQueue, QueueStats, prompt_from_state, prompt_to_state
from spark_vl.spark.judge import best_of_n, judge_prompts, judge_score
from spark_vl.spark.metrics import (
    JudgeMetrics,
    brier_score,
    expected_calibration_error,
    judge_metrics,
    verdict_separation,
)
from spark_vl.spark.recycle import RecycleResult, RecycleStats, recycle
from spark_vl.spark.reward_judge import RewardJudge, make_reward_judge
from spark_vl.spark.templates import TemplateSet, load_judge_template, load_templates
from spark_vl.spark.tts import ReflectionRound, ReflectionTrace, self_reflect, trace_summary

__all__ = [
    "AuxQueue",
    "JudgeMetrics",
    "QueueStats",
    "RecycleResult",
    "RecycleStats",
    "RewardJudge",
    "ReflectionRound",
    "ReflectionTrace",
    "TemplateSet",
    "best_of_n",
    "brier_score",
    "expected_calibration_error",
    "verdict_separation",
    "judge_metrics",
    "judge_prompts",
    "judge_score",
    "load_judge_template",
    "load_templates",
    "make_reward_judge",
    "prompt_from_state",
    "prompt_to_state",
    "recycle",
    "self_reflect",
    "trace_summary",
]
