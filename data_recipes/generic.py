"""Generic recipe: any JSON/JSONL/parquet/datasets source with a question, a gold answer and images.

Column names default to EasyR1's (`problem`, `answer`, `images`) and are set with flags, so a file in
EasyR1, TRL or R1-V layout, or your own, needs no code:

    python -m data_recipes.generic --source my.jsonl --image-root imgs/ --out data/mine \\
        --problem-key question --answer-key label --image-key image --id-key qid --licence CC-BY-4.0

Images may be paths (relative to --image-root, default: the source's folder), encoded bytes, HF image
structs, or lists of these; a missing image column means a text-only dataset unless --image-key was
given explicitly. Gold answers are normalised like every recipe (boxes and <answer> tags stripped,
option letters resolved against --choices-key or the options listed in the problem); --answer-type
forces a type instead of inferring it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spark_vl.prep.recipes import Recipe, RowContext, SkipRow, image_list, make_sample, run
from spark_vl.types import ANSWER_TYPES


def add_arguments(parser) -> None:
    parser.add_argument("--problem-key", default="problem")
    parser.add_argument("--answer-key", default="answer")
    parser.add_argument("--image-key", default=None, help="image column (default: images, if present)")
    parser.add_argument("--id-key", default="id")
    parser.add_argument("--choices-key", default=None, help="column with the option texts (a list)")
    parser.add_argument("--category-key", default=None)
    parser.add_argument("--solution-key", default=None, help="column with a worked solution (for CHORD / SFT)")
    parser.add_argument("--answer-type", choices=ANSWER_TYPES, default=None, help="force the answer type")
    parser.add_argument("--name", default=None, help="source name stored in each row (default: the file name)")
    parser.add_argument("--licence", default="unknown", help="licence of the source, recorded in the manifest")


def layouts(args) -> dict[str, tuple[str, ...]]:
    required = [args.problem_key, args.answer_key]
    if args.image_key:
        required.append(args.image_key)
    return {"columns": tuple(required)}


def convert(row: dict, ctx: RowContext):
    args = ctx.args
    image_key = args.image_key or "images"
    choices = row.get(args.choices_key) if args.choices_key else None
    if choices is not None and not isinstance(choices, list):
        raise SkipRow(f"{args.choices_key} is a {type(choices).__name__}, expected a list of option texts")
    name = args.name or Path(args.source.split("@")[0]).stem
    rid = row.get(args.id_key)
    return make_sample(
        uid=f"{name}-{rid if rid not in (None, '') else ctx.row_id}",
        problem=row[args.problem_key],
        raw_answer=row[args.answer_key],
        images=image_list(row.get(image_key)),
        source=name,
        category=str(row.get(args.category_key) or "") if args.category_key else "",
        choices=choices,
        answer_type=args.answer_type,
        solution=row.get(args.solution_key) if args.solution_key else None,
    )


RECIPE = Recipe(
    name="generic",
    description="Any JSON/JSONL/parquet/datasets source mapped by column flags (EasyR1 names by default).",
    licence="set with --licence",
    layouts=layouts,
    convert=convert,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.generic"))
