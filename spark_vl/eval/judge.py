"""The place for an LLM answer judge (optional; nothing in spark-vl requires one).

Official MathVista / MathVerse / MathVision / WeMath numbers use a GPT extractor or judge; spark-vl's
protocols are rule-based. To add a judge, pass any object with a `name` and a call

    judge(sample: Sample, response: str, extracted: str | None) -> bool | None

to `evaluate(..., llm_judge=judge)` or `rescore(..., llm_judge=judge)`. It is asked about every scored
reasoning item (never the reward benchmarks); True/False overrides the rule verdict, None keeps it. The
record keeps the rule verdict (`extra.rule_correct`) and names the judge in `decided_by`, and the protocol is
renamed `<protocol>+judge:<name>` so judged numbers are never mistaken for rule-based ones. Judges are
evaluation-only: never use one as a training reward here.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from spark_vl.eval.protocols import EvalProtocol
from spark_vl.types import Sample


class LLMJudge(Protocol):
    name: str

    def __call__(self, sample: Sample, response: str, extracted: str | None) -> bool | None: ...


def with_judge(protocol: EvalProtocol, judge: LLMJudge | None) -> EvalProtocol:
    """The protocol renamed after the judge (unchanged without one)."""
    if judge is None:
        return protocol
    return dataclasses.replace(protocol, name=f"{protocol.name}+judge:{judge.name}",
                               description=f"{protocol.description}; LLM judge {judge.name} overrides rule verdicts")
