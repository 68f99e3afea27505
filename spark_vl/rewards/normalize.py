"""String clean-up shared by every verification layer: LaTeX wrappers, spacing, text normalisation.

All functions are pure, linear (or bounded) in the input length and never import sympy. They work on
*extracted* answers, which the callers cap at `MAX_ANSWER_CHARS`; longer strings are never normalised.

Simplifications: we do not parse LaTeX. We strip the wrappers models put around a final answer
(`$..$`, `\\text{..}`, `\\mathrm{..}`, `\\left`/`\\right`, spacing commands) and leave the rest to the
numeric parser or to the symbolic layer.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 1000  # longer "answers" are not answers; they are never normalised or parsed

# Commands whose argument is kept as plain text: \text{cm} -> cm.
_TEXT_COMMANDS = (
    "text",
    "textbf",
    "textit",
    "textrm",
    "texttt",
    "textup",
    "textsf",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mathnormal",
    "boldsymbol",
    "bm",
    "mbox",
    "hbox",
    "operatorname",
    "emph",
)
_TEXT_CMD_RE = re.compile(r"\\(?:" + "|".join(_TEXT_COMMANDS) + r")\s*\{([^{}]*)\}")
_MAX_UNWRAP_ROUNDS = 8  # nesting depth of \text{\textbf{..}} we unwrap; deeper input is left as is

_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\\limits|~")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?=[^a-zA-Z])")
_MATH_DELIMS_RE = re.compile(r"^\s*(?:\$\$|\$|\\\(|\\\[)(.*?)(?:\$\$|\$|\\\)|\\\])\s*$", re.DOTALL)
# Bold/italic markers next to a space or the string's ends, and backticks; `10**10**10` (a power) stays.
_MARKDOWN_RE = re.compile(r"(?<![\w)}])(?:\*\*|__)|(?:\*\*|__)(?![\w({])|`")
_WS_RE = re.compile(r"\s+")


def strip_math_delimiters(s: str) -> str:
    """Remove one pair of `$..$`, `$$..$$`, `\\(..\\)` or `\\[..\\]` around the whole string."""
    m = _MATH_DELIMS_RE.match(s)
    return m.group(1).strip() if m else s.strip()


def unwrap_text_commands(s: str) -> str:
    """`\\text{left}` -> `left`, `\\mathbf{\\text{B}}` -> `B` (innermost first, bounded rounds)."""
    for _ in range(_MAX_UNWRAP_ROUNDS):
        new = _TEXT_CMD_RE.sub(lambda m: m.group(1), s)
        if new == s:
            break
        s = new
    return s


def clean_latex(s: str) -> str:
    """Strip presentation-only LaTeX: delimiters, text commands, spacing, \\left/\\right, \\dfrac.

    The result is still LaTeX (fractions, roots and powers are kept) but without the noise that makes
    two equal answers differ as strings.
    """
    s = strip_math_delimiters(s)
    s = _MARKDOWN_RE.sub("", s)
    s = unwrap_text_commands(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = _SPACING_RE.sub(" ", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = s.replace("\u2212", "-").replace("\u2013", "-")  # unicode minus and en dash
    return _WS_RE.sub(" ", s).strip()


def strip_final_punctuation(s: str) -> str:
    """Drop a sentence-final period/comma/semicolon and surrounding quotes ("5." -> "5")."""
    s = s.strip()
    while s and s[-1] in ".,;!" and not (len(s) >= 2 and s[-1] == "." and s[-2] == "."):
        s = s[:-1].rstrip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


_ARTICLE_RE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_TEXT_PUNCT_RE = re.compile(r"[\s.,;:!?\"'`*]+")


def normalize_text(s: str) -> str:
    """Canonical form for free-text answers: clean LaTeX, lower case, no articles, no punctuation runs.

    "The Left." -> "left", "\\text{red cube}" -> "red cube".
    """
    s = clean_latex(s)
    s = strip_final_punctuation(s).lower()
    s = _ARTICLE_RE.sub("", s)
    return _TEXT_PUNCT_RE.sub(" ", s).strip()


_LATEX_NOISE_RE = re.compile(r"\s+|\\!|\\,|\\;|\\:")


def latex_key(s: str) -> str:
    """A whitespace-free LaTeX string for cheap identity checks (`\\frac{1}{2}` == `\\frac {1} {2}`)."""
    s = clean_latex(s)
    s = strip_final_punctuation(s)
    s = s.replace("\\{", "{").replace("\\}", "}")
    return _LATEX_NOISE_RE.sub("", s)


_LEFT_RE = re.compile(r"\\left(?![a-zA-Z])")
_RIGHT_RE = re.compile(r"\\right(?![a-zA-Z])")
_BEGIN_RE = re.compile(r"\\begin\s*\{")
_END_RE = re.compile(r"\\end\s*\{")


def latex_well_formed(s: str) -> bool:
    """Cheap structural check: balanced braces, \\left/\\right and \\begin/\\end counts agree."""
    if not braces_balanced(s):
        return False
    if "\\left" in s or "\\right" in s:
        if len(_LEFT_RE.findall(s)) != len(_RIGHT_RE.findall(s)):
            return False
    if "\\begin" in s or "\\end" in s:
        if len(_BEGIN_RE.findall(s)) != len(_END_RE.findall(s)):
            return False
    return True


def braces_balanced(s: str) -> bool:
    """True when `{`/`}` pair up (escaped `\\{`, `\\}` ignored); a cheap sign of broken LaTeX."""
    depth = 0
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


# ---------------------------------------------------------------------------------------------------------------
# Inequalities and set-builder notation as intervals

_EMPTY_SET_RE = re.compile(r"^(?:\\emptyset|\\varnothing|∅|\\\{\s*\\\}|\{\s*\})$")
_CMP_RE = re.compile(r"(<=|>=|<|>)")
_VAR_RE = re.compile(r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?$")
_SET_BUILDER_RE = re.compile(
    r"^\\\{\s*([a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?)(?:\s*\\in\s*\\mathbb\{R\})?\s*(?:\\mid|\||:)(.*)\\\}$"
)
_HAS_CMP_RE = re.compile(r"[<>≤≥]|\\[lg](?:e|t)(?![a-zA-Z])|\\[lg]eq")
_CMP_WORDS = (("\\leqslant", "<="), ("\\geqslant", ">="), ("\\leq", "<="), ("\\geq", ">="), ("\\le", "<="),
              ("\\ge", ">="), ("\\lt", "<"), ("\\gt", ">"), ("≤", "<="), ("≥", ">="))


def interval_form(s: str) -> str | None:
    """The interval an inequality or a set-builder set in one variable denotes, or None if `s` is neither.

    "1 < x \\leq 3" -> "(1, 3]", "x < 2" -> "(-\\infty, 2)", "x \\geq 0" -> "[0, \\infty)",
    "\\{x \\mid 1 < x \\leq 3\\}" -> "(1, 3]", "\\varnothing" / "\\{\\}" -> "\\emptyset". Linear in len(s).
    """
    t = clean_latex(s).strip().rstrip(".")
    if _EMPTY_SET_RE.match(t):
        return "\\emptyset"
    m = _SET_BUILDER_RE.match(t)
    if m is not None:
        t = m.group(2).strip()
    if _HAS_CMP_RE.search(t) is None:
        return None
    for word, op in _CMP_WORDS:
        t = re.sub(re.escape(word) + r"(?![a-zA-Z])", op, t)
    parts = [p.strip() for p in _CMP_RE.split(t)]
    if len(parts) == 3:  # x < b, x >= a, a < x, b > x
        left, op, right = parts
        if _VAR_RE.match(left) and right:
            bound, upper = right, op.startswith("<")
        elif _VAR_RE.match(right) and left:
            bound, upper = left, op.startswith(">")
        else:
            return None
        closed = op.endswith("=")
        if upper:
            return f"(-\\infty, {bound}{']' if closed else ')'}"
        return f"{'[' if closed else '('}{bound}, \\infty)"
    if len(parts) == 5 and _VAR_RE.match(parts[2]) and parts[0] and parts[4]:  # a < x <= b, b > x >= a
        a, op1, _, op2, b = parts
        if op1[0] != op2[0]:
            return None
        if op1.startswith(">"):
            a, op1, op2, b = b, op2, op1, a
        return f"{'[' if op1.endswith('=') else '('}{a}, {b}{']' if op2.endswith('=') else ')'}"
    return None

