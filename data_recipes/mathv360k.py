"""MathV360K (Zhiqiang007/MathV360K, Math-LLaVA; licence not stated): 360K QA pairs over 40K images.

Source layouts:
  json:    `train_samples_all_tuning.json` records {`id`, `image` (path relative to the unzipped
           data_images folder: pass it as --image-root), `conversations`: [{from: human, value},
           {from: gpt, value}]}
  parquet: the per-source subsets of lmms-lab/LLaVA-OneVision-Data ("GeoQA+(MathV360K)", ...): the same
           `conversations` with `image` as an HF image struct (and `data_source`)
The answers are free-form assistant turns, so RL needs a short verifiable gold per row: the recipe
takes a \\boxed{} value, an "Answer: X" / "the answer is X" tail, an option letter, or an answer that
is itself short (a number, a letter, yes/no, at most a few words); anything else is dropped and counted
as `no_short_answer`. The first human/gpt pair is used; format hints in the question ("Hint: Please
answer the question ... at the end.", "Answer the question using a single word or phrase.") are removed.
--subset NAME keeps rows whose image path or data_source mentions NAME (e.g. geoqa+, TabMWP, IconQA);
other rows are counted as not selected.

    python -m data_recipes.mathv360k --source train_samples_all_tuning.json --image-root data_images \\
        --subset geoqa+ --out data/mathv360k-geoqa
"""

from __future__ import annotations

import re
import sys

from spark_vl.data.answers import unbox
from spark_vl.prep.recipes import Recipe, RowContext, SkipRow, image_list, make_sample, run

_HINTS = (
    re.compile(r"^\s*Hint:\s*Please answer the question.*?(?:at the end\.?|$)", re.IGNORECASE | re.MULTILINE),
    re.compile(r"\s*Answer the question using a single (?:word|number) or phrase\.?", re.IGNORECASE),
    re.compile(r"\s*Answer with the option'?s letter from the given choices directly\.?", re.IGNORECASE),
)
_TAIL = re.compile(
    r"(?:final answer|the (?:correct )?answer|answer)\s*(?:is|:|：)\s*:?\s*(.+?)\s*\.?\s*$", re.IGNORECASE
)
_SHORT = re.compile(r"^\(?[A-J]\)?\.?$|^[+-]?[\d.,/]+\s*%?$|^(yes|no)\.?$", re.IGNORECASE)
MAX_SHORT_WORDS = 4


def add_arguments(parser) -> None:
    parser.add_argument("--subset", default=None, help="keep rows whose image path or data_source mentions this")


def short_answer(text: str) -> str | None:
    """A short verifiable answer from a free-form assistant turn, or None."""
    text = text.strip()
    boxed = unbox(text)
    if boxed != text:
        return boxed
    if "\\boxed{" in text:
        inner = re.findall(r"\\boxed\{([^{}]*)\}", text)
        return inner[-1].strip() if inner else None
    last = text.splitlines()[-1].strip() if text else ""
    m = _TAIL.search(last)
    if m and len(m.group(1).split()) <= MAX_SHORT_WORDS:
        return m.group(1).strip().rstrip(".")
    if _SHORT.match(last) or (len(text.splitlines()) == 1 and len(text.split()) <= MAX_SHORT_WORDS):
        return text.rstrip(".").strip()
    return None


def clean_question(text: str) -> str:
    for pattern in _HINTS:
        text = pattern.sub("", text)
    text = re.sub(r"^\s*Question:\s*", "", text.strip(), flags=re.IGNORECASE)
    text = re.sub(r"\n\s*Question:\s*", "\n", text, flags=re.IGNORECASE)
    return text.strip()


def _mentions(row: dict, name: str) -> bool:
    image = row.get("image")
    path = image.get("path") if isinstance(image, dict) else image
    fields = [str(path or ""), str(row.get("data_source") or ""), str(row.get("id") or "")]
    return any(name.lower() in f.lower() for f in fields)


def convert(row: dict, ctx: RowContext):
    if ctx.args.subset and not _mentions(row, ctx.args.subset):
        return None
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise SkipRow(f"conversations is a {type(turns).__name__}, not a list")
    human = next((t.get("value") for t in turns if t.get("from") == "human"), None)
    gpt = next((t.get("value") for t in turns if t.get("from") == "gpt"), None)
    if not human or not gpt:
        raise SkipRow("no human/gpt turn pair")
    answer = short_answer(gpt)
    if not answer:
        raise SkipRow(f"no short answer in the assistant turn {gpt[:60]!r}", kind="no_short_answer")
    images = image_list(row.get("image"))
    problem = clean_question(human)
    if images and "<image>" not in problem:
        problem = "<image>\n" + problem
    image = row.get("image")
    path = image.get("path") if isinstance(image, dict) else image
    return make_sample(
        uid=f"mathv360k-{row.get('id', ctx.row_id)}",
        problem=problem,
        raw_answer=answer,
        images=images,
        source="mathv360k",
        category=str(path).split("/")[0] if path else str(row.get("data_source") or ""),
        meta={"response": gpt} if len(gpt) < 2000 else {},
    )


RECIPE = Recipe(
    name="mathv360k",
    description="MathV360K subsets with a short answer extracted from each assistant turn.",
    licence="unverified (not stated on the dataset card)",
    hub_id="Zhiqiang007/MathV360K",
    layouts={"conversations": ("image", "conversations")},
    convert=convert,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.mathv360k"))
