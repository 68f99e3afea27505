"""Format part of the reward: does the response follow the requested output format?

    none         always 1.0 (nothing is checked; keep reward.format_weight at 0)
    boxed        a closed, non-empty \\boxed{} (\\box/\\fbox also count: judge prompts may say \\box)
    think_boxed  one <think>...</think> block first, then the box after it
    answer_tag   one <think>...</think> block, then one non-empty <answer>...</answer> that ends the response
With `single_answer` (RewardConfig.format_single_answer, default on) exactly one box (or one answer tag)
is allowed: several boxes are a hedge, not a final answer.
"""

from __future__ import annotations

import re

from spark_vl.rewards.extract import find_answer_tags, find_boxes

FORMATS = ("none", "boxed", "think_boxed", "answer_tag")

_THINK_FIRST_RE = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL | re.IGNORECASE)
_ENDS_WITH_ANSWER_RE = re.compile(r"</answer>\s*$", re.IGNORECASE)


def _count_ok(n: int, single_answer: bool) -> bool:
    return n == 1 if single_answer else n >= 1


def _think_split(response: str) -> tuple[str, str] | None:
    """(thinking, rest) when the response opens with exactly one closed <think> block."""
    lower = response.lower()
    if lower.count("<think>") != 1 or lower.count("</think>") != 1:
        return None
    m = _THINK_FIRST_RE.match(response)
    if m is None or not m.group(1).strip():
        return None
    return m.group(1), m.group(2)


def format_score(response: object, fmt: str, *, single_answer: bool = True) -> float:
    """1.0 when `response` follows format `fmt`, else 0.0. Unknown formats raise ValueError."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown reward format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "none":
        return 1.0
    if not isinstance(response, str):
        return 0.0
    if fmt == "boxed":
        return float(_count_ok(len(find_boxes(response)), single_answer))
    parts = _think_split(response)
    if parts is None:
        return 0.0
    _, rest = parts
    if fmt == "think_boxed":
        return float(_count_ok(len(find_boxes(rest)), single_answer))
    tags = [t for t in find_answer_tags(rest) if t]
    if not tags or _ENDS_WITH_ANSWER_RE.search(rest) is None:
        return 0.0
    return float(_count_ok(len(tags), single_answer))
