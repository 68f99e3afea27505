"""Multiple-choice layer: read option letters (or option text) from an answer and compare letter sets.

Forms read as a letter: `B`, `b`, `(B)`, `[B]`, `B.`, `B)`, `B:`, `\\text{(B)}`, `**B**`, "Option B",
"the answer is (B)", and letter + text (`B. 8/11`, `(B) 8/11`; the letter wins if the text disagrees).
Several letters (`A, C`, `A and C`, `{A, C}`, `A/C`, and `AC` when the gold has several letters) form a
set; a multi-letter gold is compared as a set, and a single-letter gold never matches a set of two.
Option text (`8/11` for choice B) maps to its letter when exactly one option matches, by normalised text
or by value (so `0.5` picks the option `\\frac{1}{2}`).
"""

from __future__ import annotations

import re

from spark_vl.rewards.normalize import clean_latex, normalize_text, strip_final_punctuation
from spark_vl.rewards.numeric import numbers_match, parse_number

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_PREFIX_RE = re.compile(
    r"^(?:the\s+)?(?:correct\s+|final\s+|best\s+|right\s+)?(?:answer|option|choice)s?\s*(?:is|are|:)?\s*:?\s*",
    re.IGNORECASE,
)
_SINGLE_RE = re.compile(r"^[\(\[]?\s*([A-Za-z])\s*[\)\]]?$")
_LETTER_TEXT_RES = (
    re.compile(r"^[\(\[]\s*([A-Z])\s*[\)\]]\s*[.:]?\s*(.+)$", re.DOTALL),
    re.compile(r"^([A-Z])\s*[.:)]\s+(.+)$", re.DOTALL),
)
_SPLIT_RE = re.compile(r"\s*(?:,|;|/|&|\band\b|\s)\s*")
_MULTI_PART_RE = re.compile(r"^[\(\[]?([A-Z])[\)\]]?$")
_COMPACT_RE = re.compile(r"^[A-Z]{2,}$")
_CHOICE_PREFIX_RE = re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:]\s*")


def allowed_letters(choices: list[str] | None) -> str:
    """Letters that name an option: A.. for the given choices, any capital letter without choices."""
    return LETTERS[: len(choices)] if choices else LETTERS


def _clean(text: str) -> str:
    s = strip_final_punctuation(clean_latex(text))
    s = _PREFIX_RE.sub("", s, count=1).strip()
    return strip_final_punctuation(s.replace("\\{", "{").replace("\\}", "}"))


def parse_letters(text: str, allowed: str = LETTERS, *, allow_compact: bool = False) -> frozenset[str] | None:
    """The option letter(s) an answer names, or None when it names none (or names one not `allowed`)."""
    s = _clean(text)
    if not s or len(s) > 200:
        return None
    m = _SINGLE_RE.match(s)
    if m is not None:
        letter = m.group(1).upper()
        return frozenset(letter) if letter in allowed else None
    body = s[1:-1].strip() if s[:1] in "{[(" and s[-1:] in "}])" else s
    for candidate in (s, body):  # "(A), (C)" splits as is; "{A, C}" after removing the outer braces
        parts = [p for p in _SPLIT_RE.split(candidate) if p]
        letters = [_MULTI_PART_RE.match(p) for p in parts]
        if len(parts) >= 2 and all(letters):
            found = frozenset(m.group(1) for m in letters if m is not None)
            return found if all(c in allowed for c in found) else None
    for pattern in _LETTER_TEXT_RES:
        m = pattern.match(s)
        if m is not None:
            return frozenset(m.group(1)) if m.group(1) in allowed else None
    if allow_compact and _COMPACT_RE.match(body) and len(set(body)) == len(body):
        return frozenset(body) if all(c in allowed for c in body) else None
    return None


def choice_text(choice: str, index: int) -> str:
    """An option's text without a leading copy of its own letter ("(B) 8" stored as option B -> "8")."""
    m = _CHOICE_PREFIX_RE.match(choice)
    if m is not None and m.group(1) == LETTERS[index]:
        return choice[m.end() :]
    return choice


def letter_for_text(text: str, choices: list[str]) -> str | None:
    """The letter of the single option whose text (or value) equals `text`; None if none or several match."""
    key = normalize_text(text)
    value = parse_number(text)
    hits: list[str] = []
    for i, choice in enumerate(choices[: len(LETTERS)]):
        if not isinstance(choice, str):
            continue
        option = choice_text(choice, i)
        if key and normalize_text(option) == key:
            hits.append(LETTERS[i])
            continue
        if value is not None:
            option_value = parse_number(option)
            if option_value is not None and numbers_match(value, option_value):
                hits.append(LETTERS[i])
    return hits[0] if len(set(hits)) == 1 else None


def _as_letters(text: str, choices: list[str] | None, compact: bool) -> frozenset[str] | None:
    """Letters ("B", "A, C"; "AC" when `compact`), else the text of exactly one option, as a letter set."""
    letters = parse_letters(text, allowed_letters(choices), allow_compact=compact)
    if letters is not None:
        return letters
    letter = letter_for_text(text, choices) if choices else None
    return frozenset(letter) if letter is not None else None


def gold_letters(gold: str, choices: list[str] | None, *, allow_compact: bool | None = None) -> frozenset[str] | None:
    """Gold as a letter set: from letters ("B", "(B)", "A, C", "A and C") or from an option's text.

    The compact form "AC" counts as two letters only with `choices` (without them it may be a segment name),
    unless `allow_compact` says otherwise (a benchmark whose golds are known to be letter sets).
    """
    return _as_letters(gold, choices, compact=bool(choices) if allow_compact is None else allow_compact)


def pred_letters(pred: str, choices: list[str] | None, *, multi_gold: bool) -> frozenset[str] | None:
    """Prediction as a letter set: letters first, else the text of exactly one option."""
    return _as_letters(pred, choices, compact=multi_gold)
