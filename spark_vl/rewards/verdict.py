"""Read a judge's verdict: Yes/No (pointwise) or A/B (pairwise) in every form models write it.

SPARK's reference reward only understood `\\boxed{Yes}` and bare `A`/`B`, so a judge that obeyed its own
`\\box{}` instruction, or copied the `(B)` option format, scored 0 (reference defects 9.1, 9.2). Here:

- yes_no: `\\boxed{Yes}`, `\\box{yes}`, `\\fbox{YES}`, `\\boxed{\\text{No}}`, `\\boxed{No.}`, "Answer: Yes",
  "Verdict: no", "the answer is yes", a last line "Yes."; true/correct/right -> Yes, false/incorrect/wrong -> No.
- ab (and abcd for four-way judges): `\\boxed{B}`, `\\boxed{(B)}`, `(B)`, `B.`, "Answer: B", "[[A]]",
  "Answer 2 is better", "Response A is better", "Overall Judgment: Answer 1 is better"; 1/2 -> A/B.

Priority: boxes (first or last per `mode`), then `[[X]]`, then "X is better", then a labelled verdict
("Answer:", "Verdict:", "the answer is"), then a short last line. A box that holds no verdict yields None
rather than a guess from the surrounding text: the model's explicit final answer was not a verdict.
"""

from __future__ import annotations

import re
from typing import Literal

from spark_vl.rewards.extract import find_answer_tags, find_boxes
from spark_vl.rewards.normalize import clean_latex

VerdictKind = Literal["yes_no", "ab", "abcd"]

_YES = {"yes", "y", "true", "correct", "right", "accept", "accepted", "valid", "是", "对"}
_NO = {"no", "n", "false", "incorrect", "wrong", "reject", "rejected", "invalid", "not", "否", "错"}
_LETTERS = {"ab": "AB", "abcd": "ABCD"}

# Lead words before a verdict, including the option names our own templates use (Candidate A, Proposed answer A,
# Statement A, Option A) and "the correct/better one is".
_LEAD_RE = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+|overall\s+|my\s+|correct\s+|better\s+|right\s+|true\s+|best\s+|matching\s+)?"
    r"(?:proposed\s+|candidate\s+|submitted\s+|claimed\s+)?"
    r"(?:answer|verdict|judgment|judgement|decision|choice|option|response|output|conclusion|assistant|candidate|"
    r"statement|solution|one)\s*(?:is|:)?\s*)+",
    re.IGNORECASE,
)
# "A is correct", "Candidate (B) is the correct one", "Statement A is true". A bare digit needs a noun before it
# ("Answer 2 is correct"), so "x = 2 is correct" in the reasoning is not read as B.
_CORRECT_RE = re.compile(
    r"(?:\b(?i:answer|response|output|option|candidate|statement|solution|assistant)\s*\(?([A-Da-d1-4])\)?"
    r"|\(([A-D])\)|\b([A-D]))\s+(?i:is\s+(?:the\s+)?(?:correct|right|true)\b)"
)
# "The correct one is A.", "The better response is (A).", "the matching answer is B": the chosen option in prose.
_CHOSEN_RE = re.compile(
    r"(?i:\bthe\s+(?:better|correct|right|true|best|preferred|matching)\s+(?:proposed\s+)?"
    r"(?:one|answer|response|candidate|option|choice|statement|solution|output)\s+is\s*:?\s*\**\s*)"
    r"\(?([A-D])\)?(?![A-Za-z0-9])"
)
# A verdict that names both options is a hedge, never one of them: "Yes or No", "A and B", "(A)/(B)", "A, B". Read
# at the start of the verdict (after lead words), so "B. 1/2" (an option text) and "Yes, no doubt" stay verdicts.
_YN_WORD = r"(yes|no|true|false|correct|incorrect)"
_HEDGE_YES_NO_RE = re.compile(
    rf"^{_YN_WORD}\s*(?:(?:or|/|&)\s*{_YN_WORD}\b|(?:,|and)\s*{_YN_WORD}$)", re.IGNORECASE
)
_HEDGE_LETTER_RE = re.compile(
    r"^\(?([A-D1-4])\)?\s*(?:or|and|/|&|,|vs\.?)\s*\(?([A-D1-4])\)?(?![A-Za-z0-9])", re.IGNORECASE
)
# yes_no stated as a sentence: "the student is correct", "the proposed answer is not right".
_IS_CORRECT_RE = re.compile(r"\bis\s+(not\s+)?(correct|right|true|incorrect|wrong|false)\b", re.IGNORECASE)
_STRIP_CHARS = " \t\n\"'`*_()[]{}<>.,:;!"
_WORD_RE = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
_DOUBLE_BRACKET_RE = re.compile(r"\[\[\s*([A-Da-d1-4])\s*\]\]")
_BETTER_RE = re.compile(
    r"(?:answer|response|output|option|assistant|solution)?\s*\(?\b([A-Da-d1-4])\b\)?\s+is\s+(?:the\s+)?"
    r"(?:better|preferred|best|superior|more\s+\w+)",
    re.IGNORECASE,
)
_LABEL_RE = re.compile(
    r"(?:final\s+answer|answer|verdict|judgment|judgement|decision|conclusion|choice)\s*(?:is|:|：)\s*:?\s*"
    r"\**\s*([^\n]{1,60})",
    re.IGNORECASE,
)


def _letter_kind_token(token: str, kind: str) -> str | None:
    letters = _LETTERS[kind]
    t = token.strip(_STRIP_CHARS)
    if len(t) == 1:
        if t.upper() in letters:
            return t.upper()
        if t in "123456789"[: len(letters)]:  # ASCII only: "¹".isdigit() is True but int("¹") fails
            return letters[int(t) - 1]
    return None


def normalize_verdict(text: str, kind: VerdictKind) -> str | None:
    """Map one short verdict string ("\\text{Yes}.", "(B)", "Answer 2 is better") to Yes/No or a letter."""
    if not isinstance(text, str) or kind not in ("yes_no", "ab", "abcd"):
        return None
    s = clean_latex(text).strip(_STRIP_CHARS)
    if not s or len(s) > 200:
        return None
    if _is_hedge(s, kind):
        return None
    if kind != "yes_no":
        m = _DOUBLE_BRACKET_RE.search(s) or _BETTER_RE.search(s) or _CORRECT_RE.search(s) or _CHOSEN_RE.search(s)
        if m is not None:
            return _letter_kind_token(next(g for g in m.groups() if g), kind)
    s = _LEAD_RE.sub("", s).strip(_STRIP_CHARS)
    tokens = _WORD_RE.findall(s)
    if not tokens:
        return None
    first = tokens[0]
    if kind == "yes_no":
        word = first.lower()
        if word in _YES:
            return "Yes"
        if word in _NO:
            return "No"
        m = _IS_CORRECT_RE.search(s)
        if m is not None:
            positive = m.group(2).lower() in ("correct", "right", "true")
            return "Yes" if positive != bool(m.group(1)) else "No"
        return None
    # A lone letter, or a letter followed only by punctuation or by its option text ("B. 8/11").
    if len(tokens) == 1 or not tokens[1].isalpha():
        return _letter_kind_token(first, kind)
    return None


def _is_hedge(s: str, kind: str) -> bool:
    """True when the verdict `s` starts by joining two different verdicts ("Yes or No", "A and B", "(A)/(B)")."""
    s = _LEAD_RE.sub("", s).strip(_STRIP_CHARS)
    if kind == "yes_no":
        m = _HEDGE_YES_NO_RE.match(s)
        if m is None:
            return False
        first, second = m.group(1), m.group(2) or m.group(3)
        return (first.lower() in ("yes", "true", "correct")) != (second.lower() in ("yes", "true", "correct"))
    m = _HEDGE_LETTER_RE.match(s)
    return m is not None and _letter_kind_token(m.group(1), kind) != _letter_kind_token(m.group(2), kind)


def _pick(items: list, mode: str):
    return items[0] if mode == "first" else items[-1]


def parse_verdict(
    response: object, kind: VerdictKind, mode: Literal["first", "last"] = "last", *, fallback: bool = True
) -> str | None:
    """The verdict in a judge response: "Yes"/"No" for kind "yes_no", "A"/"B" for "ab" ("A".."D" for "abcd").

    `fallback=False` (reward.extract_fallback: false) reads only boxes and answer tags, as `extract_answer` does.
    Returns None for non-strings, unknown kinds and responses that state no verdict.
    """
    if not isinstance(response, str) or kind not in ("yes_no", "ab", "abcd") or not response.strip():
        return None
    text = response
    think_end = text.lower().rfind("</think>")
    tail = text[think_end + 8 :] if think_end >= 0 else text
    for scope in (tail, text) if think_end >= 0 else (text,):
        explicit = [t for t in find_answer_tags(scope) if t] or find_boxes(scope)
        if explicit:
            return normalize_verdict(_pick(explicit, mode), kind)
    if not fallback:
        return None
    if kind != "yes_no":
        for pattern in (_DOUBLE_BRACKET_RE, _BETTER_RE, _CORRECT_RE, _CHOSEN_RE):
            hits = [next(g for g in m.groups() if g) for m in pattern.finditer(tail)]
            if hits:
                return _letter_kind_token(_pick(hits, mode), kind)
    labels = [m.group(1) for m in _LABEL_RE.finditer(tail)]
    for label in labels if mode == "first" else reversed(labels):
        verdict = normalize_verdict(label, kind)
        if verdict is not None:
            return verdict
    lines = [ln for ln in tail[-2000:].splitlines() if ln.strip()]
    if lines and len(lines[-1].strip()) <= 40:
        return normalize_verdict(lines[-1], kind)
    return None
