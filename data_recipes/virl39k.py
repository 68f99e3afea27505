"""ViRL39K (TIGER-Lab/ViRL39K, MIT): SPARK's training pool, 38,870 verifiable image QA pairs.

Source layout: `problem` (text, may hold <image> placeholders), `images` (a list: relative paths into
the released images folder, or HF image structs), `answer` (always wrapped in \\boxed{}), `category`,
`qid`/`id`, `source` and the difficulty columns `PassRate_32BTrained` / `PassRate_7BUntrained` (the
latter filled for about half the rows). The answer is unboxed into `answer` (the boxed form stays in
`answer_raw`); pass rates go to `difficulty` as `passrate_32b` / `passrate_7b`, missing ones are left
out (unknown, not 0), so `spark-vl data difficulty --column passrate_7b` can use them directly.

    python -m data_recipes.virl39k --source ~/hf/ViRL39K --image-root ~/hf/ViRL39K --out data/virl39k
"""

from __future__ import annotations

import math
import sys

from spark_vl.prep.recipes import Recipe, RowContext, image_list, make_sample, run

PASSRATE_COLUMNS = {"PassRate_32BTrained": "passrate_32b", "PassRate_7BUntrained": "passrate_7b"}


def passrates(row: dict) -> dict[str, float] | None:
    rates = {}
    for column, key in PASSRATE_COLUMNS.items():
        value = row.get(column)
        if value in (None, ""):
            continue
        value = float(value)
        if not math.isnan(value):
            rates[key] = value
    return rates or None


def convert(row: dict, ctx: RowContext):
    rid = row.get("qid") or row.get("id") or ctx.row_id
    return make_sample(
        uid=f"virl39k-{rid}",
        problem=row["problem"],
        raw_answer=row["answer"],
        images=image_list(row["images"]),
        source="virl39k",
        category=row.get("category") or "",
        difficulty=passrates(row),
        meta={k: row[k] for k in ("source", "id", "qid") if row.get(k) not in (None, "")},
    )


RECIPE = Recipe(
    name="virl39k",
    description="ViRL39K: SPARK's RL training pool (boxed answers unboxed, PassRate columns kept).",
    licence="MIT",
    hub_id="TIGER-Lab/ViRL39K",
    layouts={"virl39k": ("problem", "answer", "images")},
    convert=convert,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.virl39k"))
