"""Shared scoring pieces: answer extraction per protocol, the verifier call, and small matching rules.

Benchmark adapters combine these; none of them ever raises on a bad response. A response without a
readable answer is `no_answer` (scored wrong, counted and listed); a benchmark's official rule that
would guess at random is NOT applied to the headline — the expected value of the guess is reported as
a separate metric instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from spark_vl.eval.protocols import EvalProtocol
from spark_vl.rewards import check, extract_answer, parse_verdict
from spark_vl.rewards.choices import LETTERS, letter_for_text, parse_letters
from spark_vl.types import Sample


@dataclass
class Score:
    """The outcome of scoring one response."""

    correct: bool
    extracted: str | None
    status: str = "ok"  # "ok" | "no_answer"
    decided_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def extract(response: str | None, protocol: EvalProtocol) -> str | None:
    """The answer the protocol reads from a response (first/last box; fallbacks only if the protocol allows)."""
    if not response:
        return None
    return extract_answer(response, protocol.extract, fallback=protocol.extract_fallback)


def verifier(sample: Sample, pred: str, **overrides: Any) -> tuple[bool, str]:
    """(correct, deciding layer) from the spark-vl verifier with the sample's answer type, options and rules."""
    kwargs = {
        "answer_type": sample.answer_type,
        "choices": sample.choices,
        "precision": sample.precision,
        "tolerance": sample.tolerance,
    }
    kwargs.update(overrides)
    result = check(pred, sample.answer, **kwargs)  # `check` also names the verifier layer that decided
    return bool(result.correct), f"verifier:{result.layer}"


def verifier_score(sample: Sample, response: str | None, protocol: EvalProtocol, **overrides: Any) -> Score:
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    correct, layer = verifier(sample, pred, **overrides)
    return Score(correct, pred, "ok", layer)


# ---------------------------------------------------------------------------------------------------------------
# Small rules used by the official scorers


def letters(text: str | None, num_options: int, *, multi: bool = False) -> frozenset[str] | None:
    """The option letter(s) named in `text` (A.. for `num_options` options), or None."""
    if not text:
        return None
    allowed = LETTERS[: num_options] if num_options > 0 else LETTERS
    return parse_letters(text, allowed, allow_compact=multi)


def letters_or_option(text: str | None, choices: list[str] | None, *, multi: bool = False) -> frozenset[str] | None:
    """Letters named in `text`, else the letter of the single option whose text `text` equals."""
    found = letters(text, len(choices or []), multi=multi)
    if found is None and text and choices:
        letter = letter_for_text(text, choices)
        found = frozenset(letter) if letter else None
    return found


_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def first_float(text: str | None) -> float | None:
    """The value of `text` as a float: the whole string if it parses, else its first number ("12 cm" -> 12)."""
    if not text:
        return None
    s = text.strip().replace("$", "").replace("\\%", "%").rstrip("%").strip()
    try:
        return float(s.replace(",", ""))
    except ValueError:
        pass
    m = _NUMBER_RE.search(s)
    if m is None:
        return None
    try:
        return float(m.group().replace(",", ""))
    except ValueError:
        return None


def strict_float(text: str | None) -> float | None:
    """`text` as a float only when the whole string is a number ("1,000", "-2.5"); else None."""
    try:
        return float((text or "").strip().replace(",", ""))
    except ValueError:
        return None


def all_floats(text: str | None) -> list[float]:
    return [float(m.replace(",", "")) for m in _NUMBER_RE.findall(text or "") if m.replace(",", "").strip("-.")]


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), O(len(a) * len(b))."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def norm_text(text: str) -> str:
    """Lower case, no \\text{}, $, surrounding spaces or a final period."""
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", text).replace("$", "")
    return s.strip().rstrip(".").strip().lower()


# ---------------------------------------------------------------------------------------------------------------
# Pairwise judge verdicts (reward benchmarks)

_ANSWER_N_BETTER = re.compile(r"answer\s*\(?([12])\)?\s*is\s*(?:the\s*)?(?:slightly\s*|much\s*|clearly\s*)?better",
                              re.IGNORECASE)
_BOXED_12 = re.compile(r"\\box(?:ed)?\s*\{\s*(?:\\text\{)?\s*(?:answer\s*)?([12])\s*\}?\s*\}", re.IGNORECASE)
_DOUBLE_BRACKET = re.compile(r"\[\[\s*([A-D])\s*\]\]")


def parse_numbered_verdict(response: str | None) -> int | None:
    """1 or 2 from "Overall Judgment: Answer 2 is better" (the last such statement), or a boxed 1/2; else None."""
    if not response:
        return None
    text = response.replace("*", "")
    hits = _ANSWER_N_BETTER.findall(text)
    if hits:
        return int(hits[-1])
    boxed = _BOXED_12.findall(text)
    return int(boxed[-1]) if boxed else None


def parse_bracket_verdict(response: str | None, options: str = "AB") -> str | None:
    """The option letter from the last "[[X]]" token naming one of `options` ("AB", or "ABCD" for four-way
    judges), else the project's verdict parser (boxes, "Answer: C", "C is better", ...); None when neither finds one.

    The bracket token comes first: a judge comparing math replies often quotes their `\\boxed{}` answers, which the
    verdict parser would read as a (non-)verdict before reaching the requested "[[X]]" line."""
    if not response:
        return None
    hits = [h for h in _DOUBLE_BRACKET.findall(response) if h in options]
    if hits:
        return hits[-1]
    verdict = parse_verdict(response, kind="ab" if options == "AB" else "abcd")
    return verdict if verdict is not None and verdict in options else None
