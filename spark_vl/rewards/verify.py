"""`verify(pred, gold)`: is an extracted answer right? Layers run cheapest first and the first that can decide does.

    verdict   yes_no / ab golds                   parse_verdict forms, case and wrapper insensitive
    choice    option letters / option text        letter sets; option text <-> letter through `choices`
    number    both sides parse as numbers         exact fractions, percent, units, degrees, rounding rules
    interval  inequalities / set-builder sets      rewritten as the interval they denote, then the layers below
    identity  same LaTeX up to spacing/wrappers    no parsing needed
    symbolic  everything else                      math-verify + sympy in a killable worker (symbolic.py)
    text      free-text golds                      lower case, no articles/punctuation/\\text{}

The number and choice layers never import sympy; only the symbolic layer does, in another process.
Bad input never raises: a non-string prediction is False; a gold that is empty, not a string or cannot be
parsed is False and is reported once (per sample uid from `score`, per gold string from `verify`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, replace

from spark_vl.rewards.choices import LETTERS, gold_letters, pred_letters
from spark_vl.rewards.extract import extract_answer
from spark_vl.rewards.normalize import (
    MAX_ANSWER_CHARS,
    clean_latex,
    interval_form,
    latex_key,
    latex_well_formed,
    normalize_text,
)
from spark_vl.rewards.numeric import Number, number_from_decimal_string, numbers_match, parse_number
from spark_vl.rewards.symbolic import symbolic_compare, worker
from spark_vl.rewards.verdict import normalize_verdict
from spark_vl.types import ANSWER_TYPES

logger = logging.getLogger("spark_vl.rewards")

DEFAULT_TIMEOUT_S = 2.0


# Bounds on what a dataset row may ask of the verifier (checked again at load, `spark_vl.data.rows.check_row`):
# rounding to 10^8 places or a tolerance of inf would make the numeric layer, which runs in the trainer's own
# process and outside the symbolic worker's time limit, compute without end.
MAX_PRECISION = 20  # decimal places
MAX_CHOICES = len(LETTERS)


@dataclass(frozen=True)
class Check:
    """The outcome of one verification: the verdict, the layer that decided it, and any problem with the gold."""

    correct: bool
    layer: str
    gold_error: str | None = None
    timeouts: int = 0  # symbolic comparisons that hit the time limit (the worker was killed)
    symbolic: bool = False  # the fast layers could not decide: the symbolic layer did (worker or remembered reply)


def comparison_problem(precision: object, tolerance: object) -> str | None:
    """Why `precision` / `tolerance` cannot be used to compare numbers, or None when they can."""
    if precision is not None and (isinstance(precision, bool) or not isinstance(precision, int)
                                  or not 0 <= precision <= MAX_PRECISION):
        return f"precision {precision!r} is not a whole number of decimal places in 0..{MAX_PRECISION}"
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
                                  or not math.isfinite(tolerance) or tolerance < 0):
        return f"tolerance {tolerance!r} is not a finite number >= 0"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Reporting unparsable golds once


_warned: set[str] = set()
_warned_lock = threading.Lock()
_MAX_WARNED = 100_000  # stop remembering (and warning) after this many distinct keys


def warn_gold_once(key: str, message: str) -> None:
    """Log `message` at WARNING the first time `key` (a sample uid or a gold string) is seen."""
    with _warned_lock:
        if key in _warned or len(_warned) >= _MAX_WARNED:
            return
        _warned.add(key)
    logger.warning(message)


# ---------------------------------------------------------------------------------------------------------------
# Answer type inference

_SINGLE_LETTER_GOLD_RE = re.compile(r"^\(?([A-Z])\)?$")
_MULTI_LETTER_GOLD_RE = re.compile(r"^\(?[A-Z]\)?(?:\s*(?:,|;|&|\band\b)\s*\(?[A-Z]\)?)+$")
_TEXT_GOLD_RE = re.compile(r"^[A-Za-z][A-Za-z\s'\-]*[A-Za-z]$")
# Words with sentence punctuation ("New York, NY", "Mr. Smith") are text too when a real word (2+ letters) is in
# them: "x, y" stays an expression.
_PUNCTUATED_TEXT_RE = re.compile(r"^[A-Za-z][A-Za-z\s'\-,.;:!?&]*[A-Za-z.!?]$")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_MATH_WORDS = {"pi", "infinity", "inf", "sqrt", "ln", "log", "sin", "cos", "tan", "e"}


def infer_answer_type(gold: str, choices: list[str] | None = None) -> str:
    """The answer type (one of ANSWER_TYPES, never "ab") of a bare gold answer.

    The one classifier: the verifier uses it when a sample's `answer_type` is None, and data preparation
    (`spark_vl.data.answers.normalize_gold`) stores its result, so a prepared row is scored as if untyped.

        yes / no (any case, final period)                           yes_no
        letters naming options in `choices`, or one option's text  mcq_letter / mcq_multi
        no choices: "C", "(C)"; "A, C", "A and C", "(A); (C)"        mcq_letter / mcq_multi ("AC" is text)
        a number (fraction, percent, unit, degrees, "x = 3")         integer (whole, no %) / float
        words only, not a maths word like "pi"                     text
        anything else                                               expression
    """
    g = clean_latex(gold).strip()
    if g.lower().rstrip(".") in ("yes", "no"):
        return "yes_no"
    if choices:
        letters = gold_letters(g, choices)
        if letters is not None:
            return "mcq_multi" if len(letters) > 1 else "mcq_letter"
    elif _SINGLE_LETTER_GOLD_RE.match(g):
        return "mcq_letter"
    elif _MULTI_LETTER_GOLD_RE.match(g):
        return "mcq_multi"
    num = parse_number(g)
    if num is not None:
        return "integer" if num.value.denominator == 1 and not num.percent else "float"
    if g.lower() not in _MATH_WORDS and (
        _TEXT_GOLD_RE.match(g) or (_PUNCTUATED_TEXT_RE.match(g) and _WORD_RE.search(g))
    ):
        return "text"
    return "expression"


# ---------------------------------------------------------------------------------------------------------------
# Layers


def _check_verdict(pred: str, gold: str, kind: str) -> Check:
    want = normalize_verdict(gold, kind)  # type: ignore[arg-type]
    if want is None:
        return Check(False, "verdict", f"gold {gold!r} is not a {kind} verdict")
    return Check(normalize_verdict(pred, kind) == want, "verdict")  # type: ignore[arg-type]


def _check_choice(pred: str, gold: str, kind: str, choices: list[str] | None) -> Check | str:
    """A Check, or the gold option's text when the prediction names no option (compare values instead)."""
    want = gold_letters(gold, choices)
    if want is None:
        if kind in ("mcq_letter", "mcq_multi"):
            n = f"{len(choices)} choices" if choices else "no choices"
            return Check(False, "choice", f"gold {gold!r} names no option letter ({n})")
        return gold  # a free-form gold next to a list of options: compare as a value
    got = pred_letters(pred, choices, multi_gold=len(want) > 1)
    if got is not None:
        return Check(got == want, "choice")
    if choices and len(want) == 1:
        return choices[LETTERS.index(next(iter(want)))]  # e.g. pred "\frac{\sqrt3}{2}" vs option text
    return Check(False, "choice")


def _check_text(pred: str, gold: str) -> Check:
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        return Check(numbers_match(p, g), "number")
    return Check(bool(normalize_text(gold)) and normalize_text(pred) == normalize_text(gold), "text")


_slow_golds: set[str] = set()  # golds whose comparison with 0 timed out: never sent again
_fast_golds: set[str] = set()  # golds probed after a timeout and found fine: the prediction was to blame
_MAX_REMEMBERED = 100_000


def _remember(golds: set[str], gold: str) -> None:
    if len(golds) < _MAX_REMEMBERED:
        golds.add(gold)


# The worker's replies, by (prediction, gold): the rollouts of a group often end in the same answer, and a prompt comes
# back every epoch, so each distinct pair is sent once (a comparison depends on the two strings alone). Failures are
# not kept. The oldest reply goes first when full. Single dict operations only (atomic under the GIL): no lock, so
# nothing for a forked child to inherit held.
_replies: dict[tuple[str, str], dict] = {}
_MAX_REPLIES = 50_000


def _symbolic_reply(pred: str, gold: str, timeout_s: float) -> dict | None:
    """`symbolic_compare`, remembered."""
    reply = _replies.get((pred, gold))
    if reply is None:
        reply = symbolic_compare(pred, gold, timeout_s)
        if reply is not None:
            if len(_replies) >= _MAX_REPLIES:
                try:
                    del _replies[next(iter(_replies))]
                except (KeyError, RuntimeError, StopIteration):
                    pass  # another thread changed the dict meanwhile (and made room itself)
            _replies[(pred, gold)] = reply
    return reply


_MATHY_RE = re.compile(r"[0-9\\π√∞^]|pi|sqrt|inf")
# A purely numeric power tower (9^{9^{9^{9}}}) makes sympy build an astronomically large integer: it would only
# ever end in the time limit and a worker restart, so it is refused up front.
_NESTED_POWER_RE = re.compile(r"\^\s*\{[^{}]*\^")
_NUMERIC_ONLY_RE = re.compile(r"^[\d\s^{}()+\-*/.]*$")


def _symbolic_number(value: list | None, written: Number | None) -> Number | None:
    """Our own parse when the side is a written number (it knows the decimal places), else the worker's value."""
    if written is not None:
        return written
    if not value or len(value) != 2:
        return None
    kind, text = value
    if kind == "rational":
        num = parse_number(text)
        return Number(num.value, places=None, terminating=num.terminating) if num is not None else None
    return number_from_decimal_string(text, exact_terminating=(kind == "float"))


def _check_symbolic(
    pred: str,
    gold: str,
    p_num: Number | None,
    g_num: Number | None,
    precision: int | None,
    tolerance: float | None,
    timeout_s: float,
) -> Check:
    if gold in _slow_golds:
        return Check(False, "slow-gold", f"gold {gold[:200]!r} alone exceeds the symbolic time limit")
    reply = _symbolic_reply(pred, gold, timeout_s)
    if reply is None:
        if worker().disabled:
            return Check(False, "symbolic-off")
        timeouts = 1
        if gold not in _fast_golds:
            # Was it the prediction or the gold? Compare the gold with a plain 0 once (with itself math-verify may
            # short-cut); a gold that times out there (9^{9^{9}}) would cost every rollout of its sample a full
            # time limit, every step, so it is never sent again.
            probe = symbolic_compare("0", gold, timeout_s)
            timeouts += probe is None
            _remember(_slow_golds if probe is None else _fast_golds, gold)
        return Check(False, "symbolic-timeout", timeouts=timeouts)
    return _read_reply(reply, gold, p_num, g_num, precision, tolerance)


def _read_reply(reply: dict, gold: str, p_num: Number | None, g_num: Number | None, precision: int | None,
                tolerance: float | None) -> Check:
    """The verdict on the worker's reply: math-verify's, or the number rules on both sides' values."""
    if not reply.get("gold_ok", True):
        return Check(False, "symbolic", f"math-verify could not parse gold {gold[:200]!r}")
    p_val = _symbolic_number(reply.get("pred_value"), p_num)
    g_val = _symbolic_number(reply.get("gold_value"), g_num)
    if p_val is not None and g_val is not None and (precision is not None or tolerance is not None):
        return Check(numbers_match(p_val, g_val, precision=precision, tolerance=tolerance), "symbolic-number")
    if reply.get("equal"):
        return Check(True, "symbolic")
    if p_val is not None and g_val is not None:
        return Check(numbers_match(p_val, g_val), "symbolic-number")
    return Check(False, "symbolic")


def _unwrap(answer: str) -> str:
    """Tolerate a whole boxed/tagged string where a bare answer was expected."""
    if "\\box" in answer or "\\fbox" in answer or "<answer>" in answer.lower():
        inner = extract_answer(answer, "last", fallback=False)
        if inner is not None:
            return inner
    return answer.strip()


def check(
    pred: object,
    gold: object,
    *,
    answer_type: str | None = None,
    choices: list[str] | None = None,
    precision: int | None = None,
    tolerance: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Check:
    """Like `verify`, but says which layer decided and what was wrong with the gold (nothing is logged)."""
    try:
        return _check(pred, gold, answer_type, choices, precision, tolerance, timeout_s)
    except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError, AttributeError, IndexError) as err:
        # A bug in a fast layer must cost one reward, not a training run; log it so it gets fixed.
        logger.warning("verifier error (%s: %s) on pred %.80r gold %.80r", type(err).__name__, err, pred, gold)
        return Check(False, "error")


def _check(
    pred: object,
    gold: object,
    answer_type: str | None,
    choices: list[str] | None,
    precision: int | None,
    tolerance: float | None,
    timeout_s: float,
) -> Check:
    if not isinstance(gold, str) or not gold.strip():
        return Check(False, "input", f"gold {gold!r} is empty or not a string")
    if not isinstance(pred, str) or not pred.strip():
        return Check(False, "input")
    problem = comparison_problem(precision, tolerance)
    if problem is not None:
        return Check(False, "input", problem)
    if len(pred) > 4 * MAX_ANSWER_CHARS and "\\box" not in pred:
        return Check(False, "too-long")
    pred, gold = _unwrap(pred), _unwrap(gold)
    if not pred:
        return Check(False, "input")
    if len(pred) > MAX_ANSWER_CHARS:
        return Check(False, "too-long")
    if not latex_well_formed(pred):
        return Check(False, "malformed")  # "1}}}}" or "\left( 1" is broken output, not an answer
    if choices is not None and not (isinstance(choices, list | tuple) and all(isinstance(c, str) for c in choices)):
        choices = None  # malformed options are ignored rather than trusted
    kind = answer_type if answer_type in ANSWER_TYPES else infer_answer_type(gold, choices)

    if kind in ("yes_no", "ab"):
        return _check_verdict(pred, gold, kind)
    if kind in ("mcq_letter", "mcq_multi") or choices:
        decided = _check_choice(pred, gold, kind, list(choices) if choices else None)
        if isinstance(decided, Check):
            return decided
        gold = decided
        if infer_answer_type(gold, None) == "text":
            # Option text that is a word ("triangle") is compared as text; math-verify would only fail to parse it.
            return _check_text(pred, gold)
    if not latex_well_formed(gold):
        return Check(False, "input", f"gold {gold[:200]!r} is malformed LaTeX (unbalanced braces or environments)")
    if kind == "text":
        return _check_text(pred, gold)
    # "1 < x \\leq 3", "\\{x \\mid x < 2\\}" and "\\varnothing" are compared as the intervals / empty set they denote.
    p_int, g_int = interval_form(pred), interval_form(gold)
    if p_int is not None or g_int is not None:
        pred, gold = p_int or pred, g_int or gold

    g_num, p_num = parse_number(gold), parse_number(pred)
    if g_num is not None and p_num is not None:
        return Check(numbers_match(p_num, g_num, precision=precision, tolerance=tolerance), "number")
    if precision is None and tolerance is None and latex_key(pred) == latex_key(gold):
        return Check(True, "identity")
    if g_num is not None and _MATHY_RE.search(pred) is None:
        return Check(False, "number")  # a numeric gold and a prediction without anything numeric in it
    if _NESTED_POWER_RE.search(pred) and _NUMERIC_ONLY_RE.match(pred):
        return Check(False, "guard")
    return replace(_check_symbolic(pred, gold, p_num, g_num, precision, tolerance, timeout_s), symbolic=True)


def verify(
    pred: object,
    gold: object,
    *,
    answer_type: str | None = None,
    choices: list[str] | None = None,
    precision: int | None = None,
    tolerance: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """True when the extracted answer `pred` matches `gold` under the conventions in docs/VERIFIERS.md.

    Args:
        pred: the extracted answer (a whole response with a box also works; the box is read).
        gold: the bare gold answer.
        answer_type: one of ANSWER_TYPES; None infers it from the gold (and `choices`).
        choices: option texts in letter order A, B, ... for multiple choice.
        precision: decimal places both numbers are rounded to before comparing (MathVista).
        tolerance: absolute numeric tolerance (DynaMath uses 1e-3).
        timeout_s: hard limit for the symbolic comparison.
    Never raises. An unusable gold returns False and is logged once per gold string.
    """
    result = check(
        pred,
        gold,
        answer_type=answer_type,
        choices=choices,
        precision=precision,
        tolerance=tolerance,
        timeout_s=timeout_s,
    )
    if result.gold_error is not None:
        warn_gold_once(f"gold:{gold!r}"[:500], f"verifier: {result.gold_error}; scored as wrong")
    return result.correct
