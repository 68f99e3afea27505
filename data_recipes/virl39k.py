"""ViRL39K (TIGER-Lab/ViRL39K, MIT): SPARK's training pool, 38,870 verifiable image QA pairs.

The release (layout "release"): one parquet file, `39Krelease.parquet`, with columns `question`, `answer`
(always wrapped in \\boxed{}), `PassRate_32BTrained`, `PassRate_7BBase`, `category`, `source`, `qid` and `image`
(a list of image paths relative to the folder holding the parquet). The images ship as a zip; unzip it next to
the parquet (or pass --image-root to where it was unzipped):

    unzip images.zip -d ~/hf/ViRL39K          # ~/hf/ViRL39K/39Krelease.parquet + the unzipped image folder
    spark-vl data prepare virl39k --source ~/hf/ViRL39K --out data/virl39k
    python -m data_recipes.virl39k --source ~/hf/ViRL39K/39Krelease.parquet --out data/virl39k

Third-party conversions (layout "converted", e.g. the `Kun-Xiang/ViRL39K` mirror) name the columns `problem`
and `images` (paths or HF image structs) and `PassRate_7BUntrained`; they are read the same way.

The answer is unboxed into `answer` (the boxed form stays in `answer_raw`). The pass rates go to `difficulty` as
`passrate_32b` / `passrate_7b`, so `spark-vl data difficulty --column passrate_7b` uses them directly. The 7B
rate is annotated for only about half of the rows: `-1` (the release's "not annotated"), an empty cell, NaN or a
value outside [0, 1] is unknown and left out, never stored as a rate.
"""

from __future__ import annotations

import argparse
import math
import sys

from spark_vl.data.sources import RowSource, SourceError
from spark_vl.prep.recipes import Recipe, RowContext, image_list, make_sample, run

PASSRATE_COLUMNS = {
    "PassRate_32BTrained": "passrate_32b",
    "PassRate_7BBase": "passrate_7b",  # the release's name
    "PassRate_7BUntrained": "passrate_7b",  # the name in the dataset card text and third-party conversions
}
LAYOUTS = {"release": ("question", "answer", "image"), "converted": ("problem", "answer", "images")}


def passrate(value) -> float | None:
    """A pass rate in [0, 1], or None for "not annotated" (-1, empty, NaN, anything outside [0, 1])."""
    if value in (None, ""):
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return None
    return rate if not math.isnan(rate) and 0.0 <= rate <= 1.0 else None


def passrates(row: dict) -> dict[str, float] | None:
    rates: dict[str, float] = {}
    for column, key in PASSRATE_COLUMNS.items():
        rate = passrate(row.get(column))
        if rate is not None and key not in rates:
            rates[key] = rate
    return rates or None


def _check_image_folder(args: argparse.Namespace, source: RowSource) -> dict:
    """Fail before reading 39k rows when the release's image paths resolve to nothing (zip not unzipped)."""
    if source.root is None:
        return {}
    paths: list[str] = []
    for _, row in source.rows():
        paths += [p for p in image_list(row.get("image", row.get("images"))) if isinstance(p, str)]
        if len(paths) >= 20:
            break
    if paths and not any((source.root / p).is_file() for p in paths):
        raise SourceError(
            f"none of the first {len(paths)} image paths (e.g. {paths[0]!r}) exists under {source.root}: unzip the "
            "released images next to the parquet file, or pass --image-root <folder they were unzipped into>"
        )
    return {}


def convert(row: dict, ctx: RowContext):
    rid = row.get("qid") or row.get("id") or ctx.row_id
    release = ctx.layout == "release"
    return make_sample(
        uid=f"virl39k-{rid}",
        problem=row["question"] if release else row["problem"],
        raw_answer=row["answer"],
        images=image_list(row["image"] if release else row["images"]),
        source="virl39k",
        category=row.get("category") or "",
        difficulty=passrates(row),
        meta={k: row[k] for k in ("source", "id", "qid") if row.get(k) not in (None, "")},
    )


RECIPE = Recipe(
    name="virl39k",
    description="ViRL39K: SPARK's RL training pool (39Krelease.parquet + unzipped images; boxed answers unboxed, "
    "PassRate columns kept, -1 = unknown).",
    licence="MIT",
    hub_id="TIGER-Lab/ViRL39K",
    layouts=LAYOUTS,
    setup=_check_image_folder,
    convert=convert,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.virl39k"))
