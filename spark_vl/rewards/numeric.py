"""Fast numeric layer: parse a written number exactly and compare two numbers under our conventions.

No sympy here: values are `fractions.Fraction`, so 1/3, 0.1 and 2 1/2 are exact and rounding is
decided without binary floating point surprises (2.45 rounds to 2.5 at one place).

What `parse_number` reads (after `clean_latex`): integers, decimals, thousands separators (`1,000`,
`1{,}000`, `1\\,000`), scientific notation (`1.2e5`, `1.2 \\times 10^{5}`, `10^{-3}`), fractions (`3/4`,
`\\frac{3}{4}`, `\\frac34`), mixed numbers (`2 1/2`, `2\\frac{1}{2}`), signs (`-`, unicode minus), a
leading currency sign, a trailing percent (`%`, `\\%`, "percent"), degrees (`30^\\circ`, `30°`,
"30 degrees"), units (`5 cm`, `5\\text{ cm}^2`, `12 m/s`), an assignment prefix (`x = 3`, `x \\approx 3`)
and the number words zero..twenty. Everything else returns None and goes to the next layer.

Comparison conventions (documented in docs/VERIFIERS.md):
  - `precision` set (MathVista): both sides rounded half-up to that many places, then equal.
  - `tolerance` set (DynaMath 1e-3): |pred - gold| <= tolerance (absolute).
  - otherwise: equal (integers and fractions exactly; a relative 1e-6 when either side is written with
    decimals, for float noise); a gold written with d >= 1 decimal
    places also accepts a *more precise* prediction that rounds to it (gold 5.7, pred 5.657 or 4√2); a
    prediction written with d >= 2 places is accepted for an exact gold whose decimal expansion does not
    terminate (gold 1/3, pred 0.333; gold π, pred 3.14).
  - percent: a number written with % on ONE side is read as its value or as value/100 (50% matches 50 and 0.5;
    the /100 reading has two more decimal places, so 33.3% matches 1/3 as 0.333 does); with % on both sides the
    written values are compared (50% vs 0.5% is wrong). The same rule applies whichever side is the gold.
  - units: never converted. When both sides carry a unit and the units differ (after aliases: "hours" = "h",
    "centimeters" = "cm", plurals, "square cm" = "cm^2"), the numbers do not match (6 minutes vs 6 hours); a
    unit on one side only, or the generic "units", is ignored (5 cm vs 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction

_MAX_DIGITS = 400  # longer digit strings are not parsed here (int() of huge strings is slow or refused)
_MAX_EXPONENT = 400  # |exponent| cap for scientific notation, so "1e999999999" cannot build a huge Fraction
DEFAULT_REL_TOL = Fraction(1, 10**6)


@dataclass(frozen=True)
class Number:
    """A parsed number and how it was written.

    value: the exact value as written.
    places: decimal places as written ("3.14" -> 2, "7" -> 0, "1.2e-3" -> 4); None for exact forms that
        are not decimals (fractions, mixed numbers, symbolic values evaluated by the symbolic layer).
    terminating: False when the value's decimal expansion does not end (1/3, or an irrational value).
    percent: written with a percent sign.
    unit: a trailing unit that was removed to read the number (None when there was none).
    approx: the value is a numeric evaluation (e.g. of sqrt(2)), so equality allows a 1e-12 relative slack.
    """

    value: Fraction
    places: int | None = 0
    terminating: bool = True
    percent: bool = False
    approx: bool = False
    unit: str | None = None  # the trailing unit as written, normalised by `unit_key` ("hours" -> "h")


_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}

_ASSIGN_RE = re.compile(r"^(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?|\\[a-zA-Z]+)\s*(?:=|\\approx|≈)\s*")
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$|£|€|¥|US\$|USD\s*|Rs\.?\s*)")
_DEGREE_RE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree|\s*degrees?\b|\s*deg\b)\s*$", re.IGNORECASE)
_PERCENT_RE = re.compile(r"\s*(?:\\%|%|\s*percent\b|\s*per\s*cent\b)\s*$", re.IGNORECASE)
# A trailing unit: a word of >= 2 letters (or a known one-letter unit) after whitespace, optionally with a power
# and a "/unit" or " per unit" denominator; attached short units (5cm, 3kg) are listed explicitly because "2x" is
# an expression, not 2 units of x.
_UNIT_WORD = (
    r"(?!(?:pi|sqrt|ln|log|sin|cos|tan|exp|times|cdot|and|or|to)\b)(?:[a-zA-Z]{2,}|[mgsLlhNJWVAK])(?:\^\{?\d\}?|²|³)?"
)
_UNIT_TAIL_RE = re.compile(
    rf"\s+(?:sq\.?\s+|square\s+|cubic\s+)?{_UNIT_WORD}(?:\s*(?:/|\s+per\s+)\s*{_UNIT_WORD})*\s*$", re.IGNORECASE
)
_ATTACHED_UNIT_RE = re.compile(
    r"(?<=\d)(?:mm|cm|km|m|kg|mg|g|ml|mL|L|s|ms|min|h|hr|hrs|N|J|W|kW|V|A|Hz|kHz|MHz|Pa|kPa|mol|K|ft|in|yd|mi|lb|lbs|oz)"
    r"(?:\^\{?\d\}?|²|³)?(?:/(?:s|h|min|m|cm|kg|g|L|mol)(?:\^\{?\d\}?|²)?)?$"
)

_DEC_RE = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d+))?$")
_SCI_E_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)$")
_SCI_TIMES_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?$")
_POW10_RE = re.compile(r"^10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?$")
_SLASH_FRAC_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)$")
_LATEX_FRAC_RE = re.compile(r"^\\frac\s*(?:\{\s*([^{}]+?)\s*\}|(\d))\s*(?:\{\s*([^{}]+?)\s*\}|(\d))$")
_MIXED_SLASH_RE = re.compile(r"^(\d+)\s+(\d+)\s*/\s*(\d+)$")
_MIXED_LATEX_RE = re.compile(r"^(\d+)\s*(\\frac.*)$")


_UNIT_ALIASES = {
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "min"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), "ms"),
    **dict.fromkeys(("day", "days"), "day"),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), "m"),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), "cm"),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), "mm"),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), "km"),
    **dict.fromkeys(("g", "gram", "grams"), "g"),
    **dict.fromkeys(("kg", "kilogram", "kilograms", "kilo", "kilos"), "kg"),
    **dict.fromkeys(("l", "liter", "liters", "litre", "litres"), "l"),
    **dict.fromkeys(("ml", "milliliter", "milliliters", "millilitre", "millilitres"), "ml"),
    **dict.fromkeys(("ft", "foot", "feet"), "ft"),
    **dict.fromkeys(("in", "inch", "inches"), "in"),
    **dict.fromkeys(("mi", "mile", "miles"), "mi"),
    **dict.fromkeys(("lb", "lbs", "pound", "pounds"), "lb"),
    **dict.fromkeys(("unit", "units"), "units"),
}
_UNIT_TOKEN_RE = re.compile(r"[a-z]+")


def unit_key(unit: str) -> str | None:
    """A comparable form of a written unit: "square centimeters" -> "cm^2", "meters per second" -> "m/s"."""
    u = unit.strip().lower().replace("²", "^2").replace("³", "^3").replace("{", "").replace("}", "")
    u = re.sub(r"\s+per\s+", "/", u)
    u = re.sub(r"^(?:sq\.?|square)\s+([a-z]+)", r"\1^2", u)
    u = re.sub(r"^cubic\s+([a-z]+)", r"\1^3", u)

    def alias(m: re.Match) -> str:
        word = m.group()
        if word in _UNIT_ALIASES:
            return _UNIT_ALIASES[word]
        return word[:-1] if len(word) > 3 and word.endswith("s") else word  # "apples" -> "apple"

    u = _UNIT_TOKEN_RE.sub(alias, re.sub(r"\s+", "", u))
    return u or None


def _units_differ(a: str | None, b: str | None) -> bool:
    """Both sides name a unit and they are not the same one ("units" is a placeholder that matches any)."""
    if a is None or b is None or "units" in (a, b) or a.startswith("units") or b.startswith("units"):
        return False
    return a != b


def _terminates(q: Fraction) -> bool:
    """True when q has a finite decimal expansion (denominator of the form 2^a 5^b)."""
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _decimal(text: str) -> Number | None:
    """'1,234.50' -> Number(1234.5, places=2). Thousands groups must be exactly three digits."""
    m = _DEC_RE.match(text)
    if m is None or (m.group(1) is None and m.group(2) is None):
        return None
    whole = (m.group(1) or "0").replace(",", "")
    frac = m.group(2) or ""
    if len(whole) + len(frac) > _MAX_DIGITS:
        return None
    value = Fraction(int(whole + frac), 10 ** len(frac)) if frac else Fraction(int(whole))
    return Number(value, places=len(frac))


def _scientific(text: str) -> Number | None:
    m = _SCI_E_RE.match(text) or _SCI_TIMES_RE.match(text)
    if m is not None:
        mantissa = _decimal(m.group(1) if not m.group(1).endswith(".") else m.group(1)[:-1])
        exponent = int(m.group(2)) if len(m.group(2)) < 6 else _MAX_EXPONENT + 1
    else:
        m = _POW10_RE.match(text)
        if m is None:
            return None
        mantissa = Number(Fraction(1), places=0)
        exponent = int(m.group(1)) if len(m.group(1)) < 6 else _MAX_EXPONENT + 1
    if mantissa is None or abs(exponent) > _MAX_EXPONENT:
        return None
    value = mantissa.value * Fraction(10) ** exponent
    places = max(0, (mantissa.places or 0) - exponent)
    return Number(value, places=places)


def _simple_number(text: str) -> Number | None:
    """A signed decimal or scientific number with nothing around it."""
    text = text.strip()
    sign = 1
    if text and text[0] in "+-":  # note: "" in "+-" is True, hence the explicit emptiness check
        sign = -1 if text[0] == "-" else 1
        text = text[1:].strip()
    if not text:
        return None
    num = _decimal(text) or _scientific(text)
    if num is None:
        return None
    return replace(num, value=sign * num.value)


def _fraction(text: str) -> Number | None:
    """3/4, 1.5/2, \\frac{3}{4}, \\frac34, \\frac{-3}{4} -> exact Fraction (places=None)."""
    m = _SLASH_FRAC_RE.match(text)
    if m is not None:
        num, den = _simple_number(m.group(1)), _simple_number(m.group(2))
    else:
        m = _LATEX_FRAC_RE.match(text)
        if m is None:
            return None
        num = _simple_number(m.group(1) or m.group(2))
        den = _simple_number(m.group(3) or m.group(4))
    if num is None or den is None or den.value == 0:
        return None
    value = num.value / den.value
    return Number(value, places=None, terminating=_terminates(value))


def _mixed(text: str) -> Number | None:
    """2 1/2 and 2\\frac{1}{2} -> 5/2 (an integer directly before a fraction is a mixed number)."""
    m = _MIXED_SLASH_RE.match(text)
    if m is not None:
        whole, frac = int(m.group(1)), _fraction(f"{m.group(2)}/{m.group(3)}")
    else:
        m = _MIXED_LATEX_RE.match(text)
        if m is None:
            return None
        whole, frac = int(m.group(1)) if len(m.group(1)) <= _MAX_DIGITS else None, _fraction(m.group(2))
    if whole is None or frac is None or frac.value < 0 or frac.value >= 1:
        return None
    value = whole + frac.value
    return Number(value, places=None, terminating=_terminates(value))


def _strip_decorations(text: str) -> tuple[str, bool, str | None]:
    """Remove an assignment prefix, currency, degrees, percent and units. Returns (core, is_percent, unit)."""
    s = text.strip()
    if "=" in s or "approx" in s or "≈" in s:
        s = _ASSIGN_RE.sub("", s, count=1)
        if "=" in s:  # "x = 2 + 1 = 3": the last side is the answer
            s = s.rsplit("=", 1)[1].strip()
    s = _CURRENCY_RE.sub("", s).strip()
    s = _DEGREE_RE.sub("", s)
    percent, unit = False, None
    m = _PERCENT_RE.search(s)
    if m is not None:
        s, percent = s[: m.start()], True
    else:
        m = _UNIT_TAIL_RE.search(s) or _ATTACHED_UNIT_RE.search(s)
        if m is not None:
            s, unit = s[: m.start()], unit_key(m.group())
        s = _DEGREE_RE.sub("", s)
        m = _PERCENT_RE.search(s)  # "50 % of it" is not handled, "50\% " after units is
        if m is not None:
            s, percent = s[: m.start()], True
    return s.strip(), percent, unit


def parse_number(text: object) -> Number | None:
    """Parse a written number (see the module docstring) or return None. Never raises, never uses sympy."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    if not s or len(s) > 200:
        return None
    from spark_vl.rewards.normalize import clean_latex, strip_final_punctuation  # cheap, avoids an import cycle

    s = strip_final_punctuation(clean_latex(s))
    s = s.replace("{,}", ",").replace("\\ ", "").replace("−", "-")
    lowered = s.lower()
    if lowered in _WORDS:
        return Number(Fraction(_WORDS[lowered]))
    s, percent, unit = _strip_decorations(s)
    if not s:
        return None
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:].strip()
    if not s:
        return None
    if s.startswith("(") and s.endswith(")") and s.count("(") == 1:  # "(-3)" but never a tuple
        inner = parse_number(s[1:-1])
        if inner is None or "," in s:
            return None
        num = inner
    else:
        # A space between digit groups ("1 000") is ambiguous, so only a LaTeX thin space was removed above.
        num = _simple_number(s) or _fraction(s) or _mixed(s)
    if num is None:
        return None
    return replace(num, value=sign * num.value, percent=percent or num.percent, unit=unit or num.unit)


def round_half_up(value: Fraction, places: int) -> Fraction:
    """Round to `places` decimal places, halves away from zero (the school rule benchmarks use)."""
    scale = Fraction(10) ** places
    scaled = abs(value) * scale
    rounded = int(scaled + Fraction(1, 2))
    return (rounded if value >= 0 else -rounded) / scale


def _candidates(num: Number) -> list[Number]:
    # 50% may mean 50 (the question asks "what percent") or 0.5 (the question asks for a rate); 33.3% as a rate is
    # 0.333, written with two more decimal places.
    if not num.percent:
        return [num]
    places = num.places + 2 if num.places is not None else None
    return [num, replace(num, value=num.value / 100, places=places)]


def _equal(p: Fraction, pred: Number, g: Fraction, gold: Number) -> bool:
    if p == g:
        return True
    approx = pred.approx or gold.approx
    if approx and abs(p - g) <= Fraction(1, 10**12) * max(1, abs(g)):
        return True
    # Float noise (0.30000000000000004) only comes with written decimals; integers and fractions are exact.
    inexact = approx or bool(pred.places) or bool(gold.places)
    return inexact and g != 0 and abs(p - g) <= DEFAULT_REL_TOL * abs(g)


def _close(
    p: Fraction, pred: Number, g: Fraction, gold: Number, precision: int | None, tolerance: float | None
) -> bool:
    if precision is not None:
        return round_half_up(p, precision) == round_half_up(g, precision)
    if tolerance is not None:
        return abs(p - g) <= Fraction(tolerance) + Fraction(1, 10**12)
    if _equal(p, pred, g, gold):
        return True
    # A gold written with d places is a rounded value: a more precise prediction that rounds to it is right.
    if gold.places is not None and gold.places >= 1 and (pred.places is None or pred.places > gold.places):
        if round_half_up(p, gold.places) == g:
            return True
    # An exact gold that has no finite decimal (1/3, pi) accepts a prediction rounded to >= 2 places.
    if pred.places is not None and pred.places >= 2 and gold.places is None and not gold.terminating:
        if round_half_up(g, pred.places) == p:
            return True
    return False


def numbers_match(pred: Number, gold: Number, *, precision: int | None = None, tolerance: float | None = None) -> bool:
    """Compare two parsed numbers under the conventions in the module docstring."""
    if _units_differ(pred.unit, gold.unit):
        return False
    if pred.percent and gold.percent:  # both written as percentages: compare what is written
        return _close(pred.value, pred, gold.value, gold, precision, tolerance)
    return any(
        _close(p.value, p, g.value, g, precision, tolerance) for p in _candidates(pred) for g in _candidates(gold)
    )


def number_from_decimal_string(text: str, *, exact_terminating: bool) -> Number | None:
    """A Number for a value evaluated elsewhere (the symbolic worker sends a 30-digit decimal string)."""
    exponent = text.lower().partition("e")[2].lstrip("+-")
    if len(text) > 200 or len(exponent) > 3 or (exponent.isdigit() and int(exponent) > _MAX_EXPONENT):
        return None  # "1.0e+100000000" from sympy would build a 10^8-digit integer here, outside any time limit
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return Number(value, places=None, terminating=exact_terminating, approx=not exact_terminating)
