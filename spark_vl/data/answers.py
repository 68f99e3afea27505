"""Gold-answer normalisation and question keys shared by every recipe.

    normalize_gold("\\boxed{3\\sqrt{2}}")            -> Gold("3\\sqrt{2}", "expression")
    normalize_gold("(B)", choices=["3", "4", "5"])  -> Gold("B", "mcq_letter")
    normalize_gold("4", choices=["3", "4", "5"])    -> Gold("B", "mcq_letter")   (option text resolved)
    parse_options("Find x.\\nChoices:\\n(A) 3\\n(B) 4") -> ["3", "4"]
    question_key("<image>What is  X?")            -> "what is x"

The canonical `answer` is the bare gold the verifier compares against; recipes keep the shipped form
in `answer_raw`. Option lists stay inside the problem text (the model must see them); `parse_options`
only tells the verifier which texts the letters stand for.

One vocabulary with the verifier: boxes are found by `rewards.extract.box_spans`, letters and option
text by `rewards.choices`, and the stored type is `rewards.verify.infer_answer_type` of the canonical gold,
so a prepared row is scored exactly as the same gold without a stored type would be.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from spark_vl.rewards.choices import LETTERS, gold_letters
from spark_vl.rewards.extract import box_spans
from spark_vl.rewards.verify import infer_answer_type

_INT_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+$")
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


def unbox(text: str) -> str:
    """Strip outer \\boxed{} wrappers; several boxes and nothing else become "a, b". Other text is kept."""
    text = text.strip()
    spans = box_spans(text)
    if not spans:
        return text
    rest = text
    for start, end, _ in reversed(spans):
        rest = rest[:start] + rest[end:]
    if rest.strip(" \t\n$.,;:").lower() in ("", "the answer is", "answer", "final answer"):
        return ", ".join(content for _, _, content in spans)
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


def normalize_gold(raw: str | int | float, choices: list[str] | None = None) -> Gold:
    """The canonical bare answer and its type from a gold answer as a dataset shipped it.

    Letters become "B" / "A, C" (sorted), an option's text becomes its letter, yes/no become "Yes"/"No" and
    grouped integers lose their separators; anything else is kept verbatim. The type is the verifier's
    `infer_answer_type` of the result.
    """
    if isinstance(raw, bool):
        raw = "Yes" if raw else "No"
    text = str(raw).strip()
    tag = _ANSWER_TAG.fullmatch(text)
    if tag:  # R1-V layout: "<answer> 3 </answer>"
        text = tag.group(1).strip()
    text = _strip_wrappers(unbox(text))
    kind = infer_answer_type(text, choices)
    if kind in ("mcq_letter", "mcq_multi"):
        letters = gold_letters(text, choices)
        if letters:
            text = ", ".join(sorted(letters))
    elif kind == "yes_no":
        text = text.rstrip(".").strip().capitalize()
    elif kind == "integer" and _INT_GROUPED.match(text):
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
