"""Gold-answer normalisation and question keys shared by every recipe.

    normalize_gold("\\boxed{17^\\circ}")            -> Gold("17^\\circ", "expression")
    normalize_gold("(B)", choices=["3", "4", "5"])  -> Gold("B", "mcq_letter")
    normalize_gold("4", choices=["3", "4", "5"])    -> Gold("B", "mcq_letter")   (option text resolved)
    parse_options("Find x.\\nChoices:\\n(A) 3\\n(B) 4") -> ["3", "4"]
    question_key("<image>What is  X?")            -> "what is x"

The canonical `answer` is the bare gold the verifier compares against; recipes keep the shipped form
in `answer_raw`. Option lists stay inside the problem text (the model must see them); `parse_options`
only tells the verifier which texts the letters stand for. Rules are deliberately conservative: an
answer we cannot classify is kept verbatim as `text`, never guessed into another type.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
_BOX_OPENERS = ("\\boxed{", "\\fbox{", "\\box{")
_INT = re.compile(r"^[+-]?\d+$")
_INT_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)$")
_LETTER_FORMS = re.compile(r"^\(?([A-J])\)?(?:[.:)]\s*.*)?$", re.DOTALL)
_OPTION_WORD = re.compile(r"^(?:option|choice|answer)\s*:?\s*\(?([A-J])\)?\.?$", re.IGNORECASE)
_MULTI = re.compile(r"^\(?[A-J]\)?(?:\s*(?:,|and|&|/|\s)\s*\(?[A-J]\)?)+$")
_MATHY = re.compile(r"[\\^_=<>+*/√π∞°]|\d")
# Option lines: "(A) 3", "A. 3", "A: 3", "A) 3" at the start of a line.
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[).:]\s*(.+?)\s*$")
_INLINE_OPTION = re.compile(r"(?:^|\s)\(?([A-J])[).:]\s*")
_PLACEHOLDER = re.compile(r"<image\s*\d*>")
_ANSWER_TAG = re.compile(r"<answer>(.*)</answer>", re.DOTALL)


@dataclass(frozen=True)
class Gold:
    """A normalised gold answer and its type (one of spark_vl.types.ANSWER_TYPES)."""

    answer: str
    answer_type: str


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every top-level brace-matched \\boxed{...} / \\fbox{...} in `text`."""
    boxes = []
    i = 0
    while i < len(text):
        opener = next((o for o in _BOX_OPENERS if text.startswith(o, i)), None)
        if opener is None:
            i += 1
            continue
        depth, j = 1, i + len(opener)
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:  # unbalanced: not a box
            break
        boxes.append((i, j, text[i + len(opener) : j - 1]))
        i = j
    return boxes


def unbox(text: str) -> str:
    """Strip outer \\boxed{} wrappers; several boxes and nothing else become "a, b". Other text is kept."""
    text = text.strip()
    boxes = find_boxes(text)
    if not boxes:
        return text
    rest = text
    for start, end, _ in reversed(boxes):
        rest = rest[:start] + rest[end:]
    if rest.strip(" \t\n$.,;:").lower() in ("", "the answer is", "answer", "final answer"):
        return ", ".join(content.strip() for _, _, content in boxes)
    return text


def _strip_wrappers(text: str) -> str:
    text = text.strip()
    for _ in range(3):
        before = text
        if len(text) >= 2 and text[0] == text[-1] == "$":
            text = text.strip("$").strip()
        if text.startswith("\\(") and text.endswith("\\)"):
            text = text[2:-2].strip()
        m = re.fullmatch(r"\\(?:text|mathrm|textbf)\{(.*)\}", text, re.DOTALL)
        if m and "{" not in m.group(1):
            text = m.group(1).strip()
        if text != before:
            continue
        break
    return text


def _norm_option(text: str) -> str:
    return re.sub(r"\s+", " ", _strip_wrappers(text)).strip().rstrip(".").lower()


def resolve_letter(answer: str, choices: list[str] | None) -> str | None:
    """The option letter `answer` denotes ("(B)", "B.", "Option B", "B: text" or an option's text), if any."""
    text = answer.strip()
    n = len(choices) if choices else len(LETTERS)
    m = _LETTER_FORMS.match(text) or _OPTION_WORD.match(text)
    if m and LETTERS.index(m.group(1)) < n:
        # "B: text" only counts when no option text equals the whole answer (an option may itself start so).
        if choices is None or len(text) <= 3 or not any(_norm_option(c) == _norm_option(text) for c in choices):
            return m.group(1)
    if choices:
        key = _norm_option(text)
        hits = [i for i, c in enumerate(choices) if _norm_option(c) == key]
        if len(hits) == 1:
            return LETTERS[hits[0]]
    return None


def infer_answer_type(answer: str, choices: list[str] | None = None) -> str:
    """Classify a bare gold answer (see ANSWER_TYPES)."""
    text = answer.strip()
    if choices and resolve_letter(text, choices):
        return "mcq_letter"
    if choices and _MULTI.match(text):
        return "mcq_multi"
    if re.fullmatch(r"[A-J]", text):
        return "mcq_letter"
    if text.lower() in ("yes", "no"):
        return "yes_no"
    if _INT.match(text) or _INT_GROUPED.match(text):
        return "integer"
    if _FLOAT.match(text):
        return "float"
    if _MATHY.search(text):
        return "expression"
    return "text"


def normalize_gold(raw: str | int | float, choices: list[str] | None = None) -> Gold:
    """The canonical bare answer and its type from a gold answer as a dataset shipped it."""
    if isinstance(raw, bool):
        raw = "Yes" if raw else "No"
    text = str(raw).strip()
    tag = _ANSWER_TAG.fullmatch(text)
    if tag:  # R1-V layout: "<answer> 3 </answer>"
        text = tag.group(1).strip()
    text = _strip_wrappers(unbox(text))
    if choices:
        letter = resolve_letter(text, choices)
        if letter:
            return Gold(letter, "mcq_letter")
        if _MULTI.match(text):
            letters = sorted(set(re.findall(r"[A-J]", text)))
            if all(LETTERS.index(x) < len(choices) for x in letters):
                return Gold(", ".join(letters), "mcq_multi")
    kind = infer_answer_type(text, choices)
    if kind == "mcq_letter":
        text = resolve_letter(text, choices) or text
    elif kind == "yes_no":
        text = text.capitalize()
    elif kind == "integer":
        text = text.replace(",", "")
    return Gold(text, kind)


def parse_options(problem: str) -> list[str] | None:
    """Option texts listed in a problem as consecutive lettered lines (A, B, ...), or None.

    Recognises one option per line ("(A) 3", "A. 3", "A: 3") and a single inline run
    ("Choices: A. 3 B. 4 C. 5"). Letters must start at A and be consecutive; at least two options.
    """
    options: list[str] = []
    for line in problem.splitlines():
        m = _OPTION_LINE.match(line)
        if m and LETTERS.index(m.group(1)) == len(options):
            options.append(m.group(2))
        elif m and m.group(1) == "A":  # a second list restarts: keep the last one
            options = [m.group(2)]
    if len(options) >= 2:
        return options
    # Inline: split the text after the last "A." marker that is followed by B., C. ...
    marks = list(_INLINE_OPTION.finditer(problem))
    for k, mark in enumerate(marks):
        if mark.group(1) != "A":
            continue
        run = [mark]
        for nxt in marks[k + 1 :]:
            if LETTERS.index(nxt.group(1)) == len(run):
                run.append(nxt)
        if len(run) >= 2:
            texts = [problem[a.end() : b.start()] for a, b in zip(run, run[1:], strict=False)]
            tail = problem[run[-1].end() :].strip()
            texts.append(tail.splitlines()[0] if tail else "")
            texts = [t.strip(" ;,\n") for t in texts]
            if all(texts):
                return texts
    return None


def question_key(text: str) -> str:
    """A normalised question for duplicate and contamination checks.

    Drops image placeholders, a leading "Hint: ... Question:" block, the option list, LaTeX dollar signs,
    punctuation, case and repeated whitespace, so the same question shipped by two datasets matches.
    """
    text = unicodedata.normalize("NFKC", _PLACEHOLDER.sub(" ", text))
    m = list(re.finditer(r"question\s*:", text, re.IGNORECASE))
    if m:
        text = text[m[-1].end() :]
    cut = re.search(r"(?:^|\n)\s*(?:choices|options)\s*:|(?:^|\n)\s*\(?A[).:]\s", text, re.IGNORECASE)
    if cut and cut.start() > 0:
        text = text[: cut.start()]
    text = text.replace("$", " ").lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()
