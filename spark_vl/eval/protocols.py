"""Named evaluation protocols: how a benchmark item is asked, decoded and scored.

Every number spark-vl reports carries the name of the protocol that produced it, because the same
checkpoint moves by several points between harnesses (docs/EVAL.md).

  spark     SPARK's protocol: the problem + a one-sentence boxed-answer instruction (our wording of SPARK's
            instruction, templates/format/spark.txt; not the reference's sentence, docs/SPARK.md §8), system prompt
            "You are a helpful assistant.", greedy, 2,048 new tokens, repetition penalty 1.05, the FIRST
            brace-matched \\boxed{} only (no box = no answer = wrong), scored by the spark-vl verifier
            layers (choice -> number -> identity -> math-verify/sympy -> text) with the item's answer
            type, options, precision and tolerance. Headline numbers are plain per-item accuracy.
  official  Same prompt and decoding, but each benchmark's own rule-based metric where one exists: the
            answer is read from the first box, else from "the answer is ..." or the last line, and matched
            by the benchmark's rule (MathVista normalisation with precision rounding and nearest option,
            DynaMath +-1e-3 and substring match, MMMU's candidate parsing, LogicVista letter sets, WeMath
            strict four-dimensional score as headline, DynaMath worst case as an extra column). No LLM
            extractor or judge: where the official metric uses GPT, this is its rule-based part only.

Reward benchmarks (VL-RewardBench, Multimodal RewardBench, RewardBench2) always use their per-benchmark judge
templates (spark_vl/templates/eval/*.txt) with greedy decoding under either protocol.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from spark_vl.types import SamplingParams

SPARK_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class EvalProtocol:
    """How items are prompted, decoded and scored; recorded next to every number."""

    name: str
    template: str = "spark"  # format template (spark_vl/templates/format/<name>.txt or a path) with {problem}
    system_prompt: str | None = SPARK_SYSTEM_PROMPT
    max_new_tokens: int = 2048
    repetition_penalty: float = 1.05
    extract: Literal["first", "last"] = "first"  # which \boxed{} counts when a response has several
    extract_fallback: bool = False  # read "the answer is ..." / the last line when there is no box
    scorer: Literal["verifier", "official"] = "verifier"
    description: str = ""

    def sampling(self) -> SamplingParams:
        """Greedy decoding with this protocol's length and repetition penalty."""
        return SamplingParams(
            temperature=0.0, max_new_tokens=self.max_new_tokens, repetition_penalty=self.repetition_penalty
        )

    def summary(self) -> dict[str, object]:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, EvalProtocol] = {
    "spark": EvalProtocol(
        name="spark",
        description="SPARK: boxed suffix, greedy, 2048 tokens, rep. penalty 1.05, first \\boxed{}, verifier layers",
    ),
    "official": EvalProtocol(
        name="official",
        extract_fallback=True,
        scorer="official",
        description="each benchmark's rule-based official metric (no LLM extractor/judge); spark prompt+decoding",
    ),
}


class UnknownProtocolError(KeyError):
    """A protocol name that is not in PROTOCOLS."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_protocol(name: str | EvalProtocol, **overrides) -> EvalProtocol:
    """A protocol by name, optionally with fields replaced (the replacement is named `<name>+custom`)."""
    if isinstance(name, EvalProtocol):
        base = name
    else:
        if name not in PROTOCOLS:
            raise UnknownProtocolError(f"unknown protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}")
        base = PROTOCOLS[name]
    changes = {k: v for k, v in overrides.items() if v is not None and getattr(base, k) != v}
    if not changes:
        return base
    if "name" not in changes:
        # A changed decoding or prompt is a different protocol: never let it masquerade under the base name.
        detail = ",".join(f"{k}={v}" for k, v in sorted(changes.items()))
        changes["name"] = f"{base.name}[{detail}]"
    return dataclasses.replace(base, **changes)
