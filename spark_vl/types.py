"""Typed containers that flow through spark-vl.

    Sample ──► Prompt ──► Rollout (n per prompt, grouped in a RolloutGroup) ──► TrainBatch (trainer/batch.py)

Every stage passes these dataclasses, never string-keyed dicts of tensors. A `Prompt` always carries
the `Sample` its verifier checks against: for a policy prompt that is the dataset row, for a SPARK
auxiliary prompt it is a derived sample whose `answer` is the verdict label ("Yes"/"No", "A"/"B") or
the original gold answer (reflection), with `meta["origin_uid"]` pointing at the source row.

This module does not import torch (the reward pool workers import it); the tensor container `TrainBatch`
lives next to its only builder in `spark_vl.trainer.batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# An image reference as stored in a dataset row: a path (absolute, or relative to the dataset root),
# raw encoded bytes, an HF image struct {"bytes": ..., "path": ...}, or a decoded PIL image.
ImageRef = Any

# Answer types of the canonical record (see docs/DATA.md). "ab" is the A/B verdict of a judge prompt.
ANSWER_TYPES = ("mcq_letter", "mcq_multi", "integer", "float", "expression", "text", "yes_no", "ab")

PromptKind = Literal["policy", "judge", "reflect", "expert"]


@dataclass
class Sample:
    """One dataset row in the canonical schema. `problem` never contains a format instruction."""

    uid: str
    problem: str  # question text; may contain "<image>" placeholders, one per image, in order
    answer: str  # bare gold answer (outer \boxed{} removed)
    images: list[ImageRef] = field(default_factory=list)
    choices: list[str] | None = None  # option texts for multiple choice, in letter order A, B, ...
    answer_type: str | None = None  # one of ANSWER_TYPES, None = infer from the answer
    precision: int | None = None  # MathVista-style decimal places to round to before comparing
    tolerance: float | None = None  # absolute numeric tolerance override (DynaMath-style), see docs/VERIFIERS.md
    source: str = ""
    category: str = ""
    answer_raw: str | None = None  # the gold exactly as the source shipped it
    solution: str | None = None  # an expert worked solution (for the supervised term), if any
    difficulty: dict[str, float] | None = None  # e.g. {"passrate": 0.25}
    group_key: str | None = None  # e.g. DynaMath seed id, WeMath composite id
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prompt:
    """A rendered chat prompt plus everything needed to reward its rollouts."""

    uid: str  # unique per prompt; policy prompts reuse sample.uid, auxiliary prompts derive one
    messages: list[dict[str, Any]]  # chat messages; content parts {"type": "image"} / {"type": "text", ...}
    images: list[Any]  # decoded PIL images, in the order of the image parts in `messages`
    sample: Sample  # what the verifier checks the response against
    kind: PromptKind = "policy"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"judge_form": "pairwise", "origin_uid": ...}

    @property
    def label(self) -> str:
        """What the verifier compares against: the gold answer, "Yes"/"No" or "A"/"B"."""
        return self.sample.answer


@dataclass
class RewardOutput:
    """The reward of one response with its named parts (each in [0, 1] unless documented otherwise)."""

    overall: float
    parts: dict[str, float] = field(default_factory=dict)  # e.g. {"accuracy": 1.0, "format": 1.0}
    extracted: str | None = None  # the answer the verifier read from the response, for logging
    verifier_timeouts: int = 0  # symbolic comparisons that hit reward.timeout_s (logged per step)
    verifier_symbolic: bool = False  # the verifier's fast layers could not decide it: the symbolic layer did

    @property
    def correct(self) -> bool:
        return self.parts.get("accuracy", self.overall) >= 1.0


@dataclass
class SamplingParams:
    """Decoding settings shared by every rollout backend."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    repetition_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Rollout:
    """One sampled response to a prompt."""

    prompt: Prompt
    token_ids: list[int]  # response tokens only, including the final EOS when generation stopped on it
    text: str  # decoded response without special tokens
    logprobs: list[float] | None = None  # behaviour log-probs of token_ids under the sampler, if recorded
    finish_reason: str = "stop"  # "stop" (EOS or stop string) | "length"
    reward: RewardOutput | None = None


@dataclass
class RolloutGroup:
    """The n rollouts of one prompt."""

    prompt: Prompt
    rollouts: list[Rollout]

    @property
    def rewards(self) -> list[float]:
        return [r.reward.overall if r.reward is not None else 0.0 for r in self.rollouts]

    @property
    def num_correct(self) -> int:
        return sum(1 for r in self.rollouts if r.reward is not None and r.reward.correct)
