"""Geometry3K in EasyR1's layout (hiyouga/geometry3k, MIT): 2,101 train / 300 validation / 601 test.

Source layout: `images` (a list of HF images), `problem` (with an <image> placeholder), `answer` (a short
value or LaTeX), `id`, `choices` (4 option texts) and `ground_truth` (the correct letter).
Two modes, never mixed silently (the verifier must know which one it checks):
  --mode free (default): gold = `answer`, no choices (EasyR1's free-form setting);
  --mode mcq: the options are appended to the problem as "Choices: (A) ...", gold = the letter.

    python -m data_recipes.geometry3k --source hiyouga/geometry3k@train --out data/geo3k-train
"""

from __future__ import annotations

import sys

from spark_vl.data.answers import LETTERS
from spark_vl.prep.recipes import Recipe, RowContext, SkipRow, image_list, make_sample, run


def add_arguments(parser) -> None:
    parser.add_argument("--mode", choices=("free", "mcq"), default="free",
                        help="free: gold = answer; mcq: options shown, gold = ground_truth letter")


def convert(row: dict, ctx: RowContext):
    uid = f"geometry3k-{row.get('id', ctx.row_id)}"
    images = image_list(row["images"])
    if ctx.args.mode == "free":
        return make_sample(uid, row["problem"], row["answer"], images, source="geometry3k", category="geometry",
                           parse_choices=False, meta={"mode": "free"})
    choices = [str(c) for c in (row.get("choices") or [])]
    if len(choices) < 2:
        raise SkipRow(f"mcq mode needs a choices list, got {row.get('choices')!r}")
    letter = str(row.get("ground_truth") or "").strip()
    if letter not in LETTERS[: len(choices)]:
        raise SkipRow(f"ground_truth {letter!r} is not one of the {len(choices)} option letters")
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    problem = f"{row['problem'].rstrip()}\nChoices:\n{options}"
    return make_sample(uid, problem, letter, images, source="geometry3k", choices=choices, category="geometry",
                       meta={"mode": "mcq", "answer_text": str(row.get("answer", ""))})


RECIPE = Recipe(
    name="geometry3k",
    description="Geometry3K (EasyR1 layout), free-form or multiple-choice.",
    licence="MIT",
    hub_id="hiyouga/geometry3k",
    layouts={"easyr1": ("images", "problem", "answer")},
    convert=convert,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.geometry3k"))
