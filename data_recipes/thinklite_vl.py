"""ThinkLite-VL pools (russwang/ThinkLite-VL-70k and -hard-11k; licence unverified).

Source layout (parquet): `id`, `problem`, `answer` and `image`, which public converters read as the raw
encoded file (a binary column); an HF image struct or a path also works, as does a list in `images`.
The hard-11k subset was selected by how many MCTS iterations Qwen2.5-VL-7B needed; rows of it are
marked difficulty {"thinklite_hard": 1.0} (with --hard, or automatically when the source name says
"hard"), so a mixture can compare it with ViRL39K's pass-rate filter.

    python -m data_recipes.thinklite_vl --source ~/hf/ThinkLite-VL-hard-11k --out data/thinklite-hard
"""

from __future__ import annotations

import sys

from spark_vl.prep.recipes import Recipe, RowContext, image_list, make_sample, run


def add_arguments(parser) -> None:
    parser.add_argument("--hard", choices=("auto", "yes", "no"), default="auto",
                        help="mark rows as the hard-11k subset (auto: when the source name contains 'hard')")


def convert(row: dict, ctx: RowContext):
    hard = ctx.args.hard == "yes" or (ctx.args.hard == "auto" and "hard" in ctx.args.source.lower())
    images = image_list(row["image"] if ctx.layout == "image" else row["images"])
    return make_sample(
        uid=f"thinklite-{row.get('id', ctx.row_id)}",
        problem=row["problem"],
        raw_answer=row["answer"],
        images=images,
        source="thinklite_vl_hard" if hard else "thinklite_vl",
        difficulty={"thinklite_hard": 1.0} if hard else None,
    )


RECIPE = Recipe(
    name="thinklite_vl",
    description="ThinkLite-VL 70k / hard-11k pools.",
    licence="unverified",
    hub_id="russwang/ThinkLite-VL-hard-11k",
    layouts={"image": ("problem", "answer", "image"), "images": ("problem", "answer", "images")},
    convert=convert,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.thinklite_vl"))
