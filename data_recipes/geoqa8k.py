"""GeoQA-8K as used by R1-V and EasyR1 (leonardPKU/GEOQA_8K_R1V; licence not stated on the card).

Elementary geometry (Chinese questions) with numeric answers. Two layouts are accepted because the
columns were not confirmed against the hub copy (docs/DATA.md):
  easyr1: `images` (list), `problem`, `answer`   (EasyR1 trains on it with its default column keys)
  r1v:    `image`, `problem`, `solution` = "<answer> 3 </answer>" (R1-V's own layout)
The <answer> tags and boxes are stripped from the gold; the shipped form stays in `answer_raw`.

    python -m data_recipes.geoqa8k --source leonardPKU/GEOQA_8K_R1V@train --out data/geoqa8k-train
"""

from __future__ import annotations

import sys

from spark_vl.prep.recipes import Recipe, RowContext, image_list, make_sample, run


def convert(row: dict, ctx: RowContext):
    if ctx.layout == "easyr1":
        images, gold = image_list(row["images"]), row["answer"]
    else:
        images, gold = image_list(row["image"]), row["solution"]
    return make_sample(
        uid=f"geoqa8k-{row.get('id', ctx.row_id)}",
        problem=row["problem"],
        raw_answer=gold,
        images=images,
        source="geoqa8k",
        category="geometry",
    )


RECIPE = Recipe(
    name="geoqa8k",
    description="GeoQA-8K (R1-V / EasyR1 layouts), numeric geometry answers.",
    licence="unverified (not stated on the dataset card)",
    hub_id="leonardPKU/GEOQA_8K_R1V",
    layouts={"easyr1": ("images", "problem", "answer"), "r1v": ("image", "problem", "solution")},
    convert=convert,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.geoqa8k"))
