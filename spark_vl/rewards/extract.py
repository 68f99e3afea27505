"""Find the final answer in a model response: boxes, <answer> tags, "the answer is ...", the last line.

One function, `extract_answer`, is shared by the reward, the SPARK auxiliary builder, test-time
self-reflection and evaluation, so the policy is trained against the same rule it is measured with
(reference defect 9.6). `mode` picks the first or the last occurrence (SPARK trains on the last and
evaluates on the first; our default is last).

Order of sources (the first source that yields an answer wins, within it `mode` picks the occurrence):
  1. `<answer>...</answer>`; a box inside the tag is unwrapped.
  2. `\\boxed{..}`, `\\box{..}`, `\\fbox{..}`, `\\framebox{..}` with brace matching (nested boxes unwrap).
  3. "the answer is X" / "final answer: X" / "Answer: X" (only with `fallback=True`); a phrase nested in another
     (Minerva's "Final Answer: The final answer is X. I hope it is correct.") gives X.
  4. the last non-empty line, trimmed to what follows its last "=" or " is " (only with `fallback=True`).
When a response has a `</think>` and its tail holds a box or tag, only the tail is searched.
A box is final: prose after the chosen box ("\\boxed{5}. Wait, that is wrong, it is 6.") is never parsed, so a
retraction in prose does not change the answer (the last box, or the first with mode="first", wins).

Everything here is linear in the response length: braces are matched in one stack pass (not with a
recursive regex), so a 200k-character response or 10,000 nested braces cost milliseconds.
"""

from __future__ import annotations

import re
from typing import Literal

from spark_vl.rewards.normalize import MAX_ANSWER_CHARS, strip_final_punctuation, strip_math_delimiters

Mode = Literal["first", "last"]

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox|box)\s*\{")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+(?:correct\s+|final\s+)?(?:answer|option|choice)|answer)\s*(?:is|:)\s*:?\s*([^\n]{1,300})",
    re.IGNORECASE,
)
_SENTENCE_END_RE = re.compile(r"\.\s|\.$")
_LAST_LINE_MAX_CHARS = 200  # a longer last line is prose, not an answer


def _match_braces(text: str, start: int) -> dict[int, int]:
    """Map the index of every `{` at or after `start` to its closing `}` (unclosed ones are absent).

    Escaped braces (`\\{`, `\\}`) are LaTeX literals, not groups, so they are skipped.
    """
    closing: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}":
            if stack:
                closing[stack.pop()] = m.start()
    return closing


def box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every outermost, properly closed box, in document order; `text[start:end]` is the
    whole box. The content is stripped and a box that is only another box is unwrapped; it may be empty.
    """
    first = _BOX_RE.search(text)
    if first is None:
        return []
    closing = _match_braces(text, first.start())
    spans: list[tuple[int, int, str]] = []
    end_of_previous = -1
    for m in _BOX_RE.finditer(text, first.start()):
        if m.start() < end_of_previous:
            continue  # inside the previous box
        open_at = m.end() - 1
        close_at = closing.get(open_at)
        if close_at is None:
            continue  # never closed: not an answer (a later, closed box may still be)
        end_of_previous = close_at
        spans.append((m.start(), close_at + 1, _unwrap_single_box(text[open_at + 1 : close_at].strip())))
    return spans


def find_boxes(text: str) -> list[str]:
    """Contents of all outermost, properly closed and non-empty boxes, in document order.

    `\\boxed{\\boxed{5}}` yields "5" (a box that is only another box is unwrapped); a box nested inside
    a larger box's content is part of that content, not a separate answer.
    """
    return [content for _, _, content in box_spans(text) if content]


def _unwrap_single_box(content: str) -> str:
    """`\\boxed{5}` -> `5` when the whole content is one box; otherwise unchanged. Bounded depth."""
    for _ in range(16):
        m = _BOX_RE.match(content)
        if m is None or not content.endswith("}"):
            return content
        inner = content[m.end() : -1]
        closing = _match_braces(content, 0)
        if closing.get(m.end() - 1) != len(content) - 1:
            return content  # "\boxed{1} + \boxed{2}" is not a single box
        content = inner.strip()
    return content


def find_answer_tags(text: str) -> list[str]:
    """Contents of `<answer>...</answer>` pairs (case-insensitive), in order, found with `str.find`."""
    lower = text.lower()
    out: list[str] = []
    pos = 0
    while True:
        open_at = lower.find("<answer>", pos)
        if open_at < 0:
            break
        close_at = lower.find("</answer>", open_at + 8)
        if close_at < 0:
            break  # no later tag can close either
        out.append(text[open_at + 8 : close_at].strip())
        pos = close_at + 9
    return out


def _pick(items: list[str], mode: Mode) -> str | None:
    if not items:
        return None
    return items[0] if mode == "first" else items[-1]


def _from_tags_or_boxes(text: str, mode: Mode) -> str | None:
    tags = [t for t in find_answer_tags(text) if t]
    tag = _pick(tags, mode)
    if tag is not None:
        inner = _pick(find_boxes(tag), mode)
        return inner if inner is not None else tag
    return _pick(find_boxes(text), mode)


def _from_phrase(text: str, mode: Mode) -> str | None:
    matches = list(_ANSWER_PHRASE_RE.finditer(text))
    if not matches:
        return None
    m = matches[0] if mode == "first" else matches[-1]
    candidate = m.group(1).strip()
    for _ in range(3):  # Minerva: "Final Answer: The final answer is $5$. I hope it is correct." -> "$5$. I hope ..."
        inner = _ANSWER_PHRASE_RE.match(candidate)
        if inner is None:
            break
        candidate = inner.group(1).strip()
    cut = _SENTENCE_END_RE.search(candidate)  # "The answer is 5. Because ..." -> "5"
    if cut is not None:
        candidate = candidate[: cut.start()]
    return _trim(candidate) or None


def _from_last_line(text: str) -> str | None:
    tail = text.rstrip()[-4 * _LAST_LINE_MAX_CHARS :]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return None
    line = lines[-1]
    if len(line) > _LAST_LINE_MAX_CHARS:
        return None
    for sep in ("=", " is "):  # "So the area is 12." -> "12"; "x = 3" -> "3"
        if sep in line:
            line = line.rsplit(sep, 1)[1]
            break
    return _trim(line) or None


def _trim(s: str) -> str:
    s = s.strip().strip("*").strip()
    s = strip_math_delimiters(s)
    return strip_final_punctuation(s)


def extract_answer(response: object, mode: Mode = "last", *, fallback: bool = True) -> str | None:
    """The final answer in `response`, or None when there is none (or the input is not a string).

    Args:
        response: the model's response text (anything else yields None; bytes are not decoded).
        mode: "last" (default) or "first" occurrence, applied within the first source that matches.
        fallback: also read "the answer is ..." phrases and the last line when no tag or box exists.
    """
    if not isinstance(response, str) or not response.strip():
        return None
    if mode not in ("first", "last"):
        raise ValueError(f"extract mode must be 'first' or 'last', got {mode!r}")
    text = response
    think_end = text.lower().rfind("</think>")
    tail = text[think_end + 8 :] if think_end >= 0 else text
    found = _from_tags_or_boxes(tail, mode)
    if found is None and think_end >= 0:
        found = _from_tags_or_boxes(text, mode)
    if found is None and fallback:
        # Prose fallbacks read the part after the reasoning when there is one.
        scope = tail if tail.strip() else text
        found = _from_phrase(scope, mode)
        if found is None:
            found = _from_last_line(scope)
    if found is None:
        return None
    found = found.strip()
    # An "answer" the length of an essay is not verifiable; keep a prefix for logging only.
    return found[: MAX_ANSWER_CHARS * 4] if found else None

