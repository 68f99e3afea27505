"""MMK12 (FanqingM/MMK12, MM-EUREKA; licence unverified): K-12 maths and science questions with images.

Source layout: `id`, `subject`, `image` (one HF image), `question` (options, when any, inline in the text),
`answer` (short, human-verified). The subject becomes `category`; inline options become `choices`.
MMK12 *test* is one of SPARK's evaluation sets: preparing the test split needs --allow-test, and the
prepared rows are marked meta["eval_split"] = true so nobody mixes them into training by accident.

    python -m data_recipes.mmk12 --source FanqingM/MMK12@train --out data/mmk12-train
"""

from __future__ import annotations

import sys
from pathlib import Path

from spark_vl.data.sources import RowSource, SourceError, split_spec
from spark_vl.prep.recipes import Recipe, RowContext, image_list, make_sample, run


def add_arguments(parser) -> None:
    parser.add_argument("--allow-test", action="store_true",
                        help="allow preparing the test split (an evaluation set: never train on it)")


def _is_test(args) -> bool:
    split = args.split or split_spec(args.source)[1]
    return split == "test" or "test" in Path(split_spec(args.source)[0]).name.lower()


def setup(args, source: RowSource) -> dict:
    if _is_test(args) and not args.allow_test:
        raise SourceError("this looks like MMK12's test split, an evaluation set; pass --allow-test to prepare it "
                          "for evaluation (and keep it out of training mixtures)")
    return {"eval_split": _is_test(args)}


def convert(row: dict, ctx: RowContext):
    meta = {"eval_split": True} if ctx.state["eval_split"] else {}
    return make_sample(
        uid=f"mmk12-{row.get('id', ctx.row_id)}",
        problem=row["question"],
        raw_answer=row["answer"],
        images=image_list(row["image"]),
        source="mmk12",
        category=str(row.get("subject") or ""),
        meta=meta,
    )


RECIPE = Recipe(
    name="mmk12",
    description="MMK12 (MM-EUREKA) training split; subject kept as category.",
    licence="unverified",
    hub_id="FanqingM/MMK12",
    layouts={"mmk12": ("question", "answer", "image")},
    convert=convert,
    setup=setup,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.mmk12"))
