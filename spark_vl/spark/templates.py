"""SPARK prompt templates and the construction of auxiliary (judge / reflection) prompts.

Templates are text files in `spark_vl/templates/spark/<kind>/*.txt` (or a folder named by
`spark.templates` with the same layout), several paraphrases per kind:

    kind               slots                                  verdict / label
    pointwise_yes_no   {question} {answer}                    Yes = the answer is correct, No = it is not
    pointwise_ab       {question} {answer}                    A = the answer is correct, B = it is not
    pairwise           {question} {answer_a} {answer_b}       the letter of the correct answer
    reflect_cot        {question} {solution}                  the gold answer
    reflect_answer     {question} {answer}                    the gold answer

Reward-judge templates (`reward.judge_template`, RewardDance-style P(Yes) rewards) are single files in
`spark_vl/templates/judge/` (or any path), read by `load_judge_template`:

    judge/pointwise    {question} {answer}                    Yes = the answer is correct
    judge/pairwise     {question} {answer} {reference}       Yes = the answer matches the reference answer

Judge templates must ask for the verdict in `\\boxed{}` (checked on load; the reference asked for `\\box{}`
while its verifier read only `\\boxed{}`, defect 9.1). Reflection templates whose file name starts with
`assertive` tell the model the shown work is wrong; the others are neutral ("confirm or fix") and are the
only ones used for reflection prompts built from correct rollouts.

Slots are filled in one regex pass, so braces or slot names inside a question or a model response are
never substituted twice. An auxiliary prompt re-attaches the policy prompt's decoded images in the same
chat structure: images first when the policy prompt put them first, or at the question's `<image>`
placeholders when the policy prompt interleaved them; the policy prompt's system turn is kept.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_vl.data.prompts import IMAGE_PLACEHOLDER, TEMPLATE_DIR, strip_image_placeholders
from spark_vl.types import Prompt, PromptKind, Sample

SPARK_TEMPLATE_DIR = TEMPLATE_DIR / "spark"

SLOTS: dict[str, tuple[str, ...]] = {
    "pointwise_yes_no": ("question", "answer"),
    "pointwise_ab": ("question", "answer"),
    "pairwise": ("question", "answer_a", "answer_b"),
    "reflect_cot": ("question", "solution"),
    "reflect_answer": ("question", "answer"),
}
JUDGE_KINDS = ("pointwise_yes_no", "pointwise_ab", "pairwise")
VERDICT_KIND = {"pointwise_yes_no": "yes_no", "pointwise_ab": "ab", "pairwise": "ab"}
POSITIVE_VERDICT = {"yes_no": "Yes", "ab": "A"}
NEGATIVE_VERDICT = {"yes_no": "No", "ab": "B"}

_SLOT_RE = re.compile(r"\{(question|answer|answer_a|answer_b|solution|reference)\}")
# Marks an image position inside filled text; a NUL cannot come from a tokenizer-decoded response.
_IMAGE_MARK = "\x00image\x00"


@dataclass(frozen=True)
class Template:
    kind: str
    name: str  # file stem, e.g. "grader"
    text: str

    @property
    def assertive(self) -> bool:
        """True for reflection templates that state the shown work is wrong."""
        return self.name.startswith("assertive")


@dataclass(frozen=True)
class TemplateSet:
    """All SPARK templates by kind, each list sorted by file name (so a seeded choice is reproducible)."""

    root: str
    by_kind: dict[str, tuple[Template, ...]]

    def get(self, kind: str, *, neutral_only: bool = False) -> tuple[Template, ...]:
        items = self.by_kind.get(kind, ())
        return tuple(t for t in items if not t.assertive) if neutral_only else items


@functools.lru_cache(maxsize=8)
def load_templates(root: str | None = None) -> TemplateSet:
    """Read and check every template under `root` (default: the packaged spark_vl/templates/spark).

    Raises FileNotFoundError when a kind has no template and ValueError naming the file when a template lacks
    one of its slots or (judge kinds) does not ask for `\\boxed{}`.
    """
    base = Path(root) if root else SPARK_TEMPLATE_DIR
    by_kind: dict[str, tuple[Template, ...]] = {}
    for kind, slots in SLOTS.items():
        files = sorted((base / kind).glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no SPARK templates of kind {kind!r}: expected {base / kind}/*.txt")
        items = []
        for path in files:
            text = path.read_text().strip("\n")
            missing = [s for s in slots if "{" + s + "}" not in text]
            if missing:
                raise ValueError(f"template {path} lacks the slot(s) {', '.join('{' + s + '}' for s in missing)}")
            if kind in JUDGE_KINDS and "\\boxed{" not in text:
                raise ValueError(f"judge template {path} must ask for the verdict in \\boxed{{}}")
            items.append(Template(kind=kind, name=path.stem, text=text))
        by_kind[kind] = tuple(items)
    return TemplateSet(root=str(base), by_kind=by_kind)


JUDGE_TEMPLATE_DIR = TEMPLATE_DIR / "judge"
# reward.judge_form -> (template kind, slots); both forms read P(Yes)
REWARD_JUDGE_SLOTS = {"pointwise": ("pointwise_yes_no", ("question", "answer")),
                      "pairwise": ("reference", ("question", "answer", "reference"))}


def load_judge_template(spec: str, form: str) -> Template:
    """A reward-judge template: `spec` is a file stem in spark_vl/templates/judge/ ("" = the file named after
    `form`) or a path. Raises FileNotFoundError / ValueError naming the file when it is missing, lacks a slot of
    `form` or does not ask for the verdict in `\\boxed{}`."""
    if form not in REWARD_JUDGE_SLOTS:
        raise ValueError(f"judge form must be one of {', '.join(REWARD_JUDGE_SLOTS)}, got {form!r}")
    kind, slots = REWARD_JUDGE_SLOTS[form]
    is_path = spec.endswith(".txt") or "/" in spec
    path = Path(spec) if is_path else JUDGE_TEMPLATE_DIR / f"{spec or form}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in JUDGE_TEMPLATE_DIR.glob("*.txt")))
        raise FileNotFoundError(f"judge template {path} does not exist (file stems in {JUDGE_TEMPLATE_DIR}: {known})")
    text = path.read_text().strip("\n")
    missing = [s for s in slots if "{" + s + "}" not in text]
    if missing:
        slots_text = ", ".join("{" + s + "}" for s in missing)
        raise ValueError(f"judge template {path} ({form}) lacks the slot(s) {slots_text}")
    if "\\boxed{" not in text:
        raise ValueError(f"judge template {path} must ask for the verdict in \\boxed{{}}")
    return Template(kind=kind, name=path.stem, text=text)


def fill(template: str, **values: str) -> str:
    """Substitute `{slot}` occurrences in one pass; slots without a value are left as they are."""
    return _SLOT_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def interleaves_images(prompt: Prompt) -> bool:
    """Whether the policy prompt placed its images at `<image>` placeholders rather than all first."""
    n = len(prompt.images)
    if n == 0 or len(IMAGE_PLACEHOLDER.findall(prompt.sample.problem)) != n:
        return False
    for message in prompt.messages:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        seen_text = False
        for part in content:
            if part.get("type") == "text" and str(part.get("text", "")).strip():
                seen_text = True
            elif part.get("type") == "image" and seen_text:
                return True
    return False


def question_text(prompt: Prompt, *, keep_image_marks: bool = False) -> str:
    """The original question as shown in auxiliary prompts: no format suffix, no placeholder tokens.

    With `keep_image_marks`, each `<image>` placeholder becomes an internal mark that `aux_messages` turns
    back into an image part at that position.
    """
    problem = prompt.sample.problem
    if not keep_image_marks:
        return strip_image_placeholders(problem)
    pieces = [strip_image_placeholders(p) for p in IMAGE_PLACEHOLDER.split(problem)]
    return f" {_IMAGE_MARK} ".join(pieces).strip()


def clean_shown(text: str) -> str:
    """Model text shown inside a template: internal marks removed, surrounding whitespace trimmed."""
    return text.replace("\x00", "").strip()


def aux_messages(origin: Prompt, filled: str, interleave: bool) -> list[dict[str, Any]]:
    """Chat messages of an auxiliary prompt: the origin's system turn, then one user turn with its images."""
    messages: list[dict[str, Any]] = [dict(m) for m in origin.messages if m.get("role") == "system"][:1]
    n = len(origin.images)
    content: list[dict[str, Any]] = []
    if interleave and filled.count(_IMAGE_MARK) == n:
        pieces = filled.split(_IMAGE_MARK)
        for i, piece in enumerate(pieces):
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
            if i < n:
                content.append({"type": "image"})
    else:
        content = [{"type": "image"} for _ in range(n)]
        content.append({"type": "text", "text": filled.replace(_IMAGE_MARK, " ").strip()})
    messages.append({"role": "user", "content": content})
    return messages


def make_aux_prompt(
    origin: Prompt,
    template: Template,
    *,
    uid: str,
    kind: PromptKind,
    label: str,
    answer_type: str | None,
    meta: dict[str, Any],
    **values: str,
) -> Prompt:
    """An auxiliary prompt from `template` filled with `values` plus the origin's question and images.

    The derived sample keeps the origin's question, images, source and (for reflection, where `label` is the
    gold answer) its choices, precision and tolerance, so the verifier checks the response exactly as it
    checked the policy rollouts.
    """
    interleave = interleaves_images(origin)
    shown = {k: clean_shown(v) for k, v in values.items()}
    text = fill(template.text, question=question_text(origin, keep_image_marks=interleave), **shown)
    src = origin.sample
    reflect = kind == "reflect"
    sample = Sample(
        uid=uid,
        problem=src.problem,
        answer=label,
        images=list(src.images),
        choices=src.choices if reflect else None,
        answer_type=answer_type,
        precision=src.precision if reflect else None,
        tolerance=src.tolerance if reflect else None,
        source=src.source,
        category=src.category,
        meta={"origin_uid": src.uid},
    )
    full_meta = {"origin_uid": origin.uid, "template": f"{template.kind}/{template.name}", **meta}
    return Prompt(
        uid=uid,
        messages=aux_messages(origin, text, interleave),
        images=list(origin.images),
        sample=sample,
        kind=kind,
        meta=full_meta,
    )


def prompt_text(prompt: Prompt) -> str:
    """All user text of a prompt joined (for tests and logging)."""
    parts = []
    for message in prompt.messages:
        content = message.get("content")
        if message.get("role") != "user":
            continue
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [str(p.get("text", "")) for p in content if p.get("type") == "text"]
    return "\n".join(parts)
