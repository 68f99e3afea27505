"""Property-based tests (hypothesis): the verifier never raises, always returns in time, and agrees with arithmetic.

Budgets are modest (a few hundred examples per property) so the file runs in well under a minute on a
2-core box; the time-limit property uses LaTeX-like token soup so that many inputs reach the symbolic layer.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_vl.rewards import extract_answer, parse_verdict, verify
from spark_vl.rewards.numeric import parse_number
from spark_vl.rewards.symbolic import symbolic_compare

LIMIT_S = 1.0
SLACK_S = 1.5

TOKENS = [
    "\\boxed{", "\\box{", "\\fbox{", "{", "}", "\\frac", "\\sqrt", "^", "_", "1", "2", "9", "0.5", "x", "y", "=", "%",
    ",", ".", " ", "\n", "A", "B", "(", ")", "[", "]", "\\text{", "Yes", "No", "-", "/", "e", "\\pi", "\\left(",
    "\\right)", "<answer>", "</answer>", "<think>", "</think>", "The answer is ", "\\circ", "cm", "\\infty", "\\{",
    "\\}", "\\cdot", "\\times", "10^", "[[A]]", "$", "\\\\", "\\begin{pmatrix}", "&", "\\end{pmatrix}",
]  # fmt: skip
latexish = st.lists(st.sampled_from(TOKENS), max_size=24).map("".join)
any_text = st.one_of(st.text(max_size=200), latexish)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@pytest.fixture(scope="module", autouse=True)
def warm_worker():
    assert symbolic_compare("1", "1", 60.0) is not None


@SETTINGS
@given(
    pred=any_text, gold=any_text, answer_type=st.sampled_from([None, "expression", "integer", "mcq_letter", "text"])
)
def test_verify_never_raises_and_returns_in_time(pred, gold, answer_type):
    start = time.monotonic()
    result = verify(pred, gold, answer_type=answer_type, timeout_s=LIMIT_S)
    assert isinstance(result, bool)
    assert time.monotonic() - start < LIMIT_S + SLACK_S


@SETTINGS
@given(response=any_text, mode=st.sampled_from(["first", "last"]), fallback=st.booleans())
def test_extract_never_raises(response, mode, fallback):
    start = time.monotonic()
    found = extract_answer(response, mode, fallback=fallback)
    assert found is None or (isinstance(found, str) and found.strip() == found and found)
    assert time.monotonic() - start < 0.5


@SETTINGS
@given(response=any_text, kind=st.sampled_from(["yes_no", "ab", "abcd"]), mode=st.sampled_from(["first", "last"]))
def test_parse_verdict_returns_a_label_or_none(response, kind, mode):
    verdict = parse_verdict(response, kind, mode=mode)
    allowed = {"yes_no": {"Yes", "No"}, "ab": {"A", "B"}, "abcd": {"A", "B", "C", "D"}}[kind]
    assert verdict is None or verdict in allowed


@settings(max_examples=300, deadline=None)
@given(n=st.integers(min_value=-(10**12), max_value=10**12))
def test_integers_match_themselves_and_not_their_neighbours(n):
    assert verify(str(n), str(n))
    assert verify(f"{n:,}", str(n))  # thousands separators
    assert not verify(str(n + 1), str(n))


@settings(max_examples=300, deadline=None)
@given(num=st.integers(min_value=-999, max_value=999), den=st.integers(min_value=1, max_value=999))
def test_fractions_parse_exactly(num, den):
    value = Fraction(num, den)
    for written in (f"{num}/{den}", f"\\frac{{{num}}}{{{den}}}", f"\\dfrac{{{num}}}{{{den}}}"):
        parsed = parse_number(written)
        assert parsed is not None and parsed.value == value, written
    assert verify(f"\\frac{{{num}}}{{{den}}}", f"{num}/{den}")


@settings(max_examples=200, deadline=None)
@given(letters=st.sets(st.sampled_from("ABCDE"), min_size=1, max_size=5), data=st.data())
def test_letter_sets_match_in_any_order_and_separator(letters, data):
    gold = ", ".join(sorted(letters))
    order = data.draw(st.permutations(sorted(letters)))
    sep = data.draw(st.sampled_from([", ", ",", " and ", "; ", " "]))
    choices = ["1", "2", "3", "4", "5"]
    kind = "mcq_multi" if len(letters) > 1 else "mcq_letter"
    assert verify(sep.join(order), gold, answer_type=kind, choices=choices)
    missing = sorted(set("ABCDE") - letters)
    if missing:
        assert not verify(sep.join([*order, missing[0]]), gold, answer_type=kind, choices=choices)


@settings(max_examples=200, deadline=None)
@given(value=st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False))
def test_precision_rounding_accepts_values_that_round_to_gold(value):
    """MathVista rule: both sides rounded half-up to `precision` places, then compared."""
    gold = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert verify(f"{value:.3f}", f"{gold:.2f}", precision=2)
    assert not verify(f"{value + Decimal('0.01'):.3f}", f"{gold:.2f}", precision=2)
