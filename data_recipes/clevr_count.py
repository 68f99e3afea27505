"""CLEVR counting: clevr_count_70k (BUAADreamer/clevr_count_70k, licence unverified) or CLEVR-Math.

Two layouts, both integer answers checked by exact match (a cheap, fully verifiable smoke-test task):
  easyr1:     `images` (list), `problem` ("<image>How many items are there in the image?"), `answer`
              (clevr_count_70k as EasyR1 trains on it with its default column keys; columns unverified)
  clevr_math: `image`, `question`, `label` (int), `template`, `id` (dali-does/clevr-math, CC-BY-4.0;
              its hub copy needs a loading script, so pass local parquet/json files)

    python -m data_recipes.clevr_count --source BUAADreamer/clevr_count_70k@train --out data/clevr-train
"""

from __future__ import annotations

import sys

from spark_vl.prep.recipes import Recipe, RowContext, SkipRow, image_list, make_sample, run


def convert(row: dict, ctx: RowContext):
    if ctx.layout == "easyr1":
        problem, gold, images, category = row["problem"], row["answer"], image_list(row["images"]), "count"
    else:
        problem, gold, images = row["question"], row["label"], image_list(row["image"])
        category = str(row.get("template") or "clevr-math")
    sample = make_sample(
        uid=f"clevr-{row.get('id', ctx.row_id)}",
        problem=problem,
        raw_answer=gold,
        images=images,
        source="clevr_count" if ctx.layout == "easyr1" else "clevr_math",
        category=category,
        parse_choices=False,
    )
    if sample.answer_type != "integer":
        raise SkipRow(f"gold {sample.answer_raw!r} is not an integer count")
    return sample


RECIPE = Recipe(
    name="clevr_count",
    description="CLEVR counting (clevr_count_70k) or CLEVR-Math arithmetic: integer answers.",
    licence="unverified (clevr_count_70k); CC-BY-4.0 (CLEVR-Math)",
    hub_id="BUAADreamer/clevr_count_70k",
    layouts={"easyr1": ("images", "problem", "answer"), "clevr_math": ("image", "question", "label")},
    convert=convert,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.clevr_count"))
