"""The recipe runner: source rows -> convert -> validate -> prepared dataset, with one report.

A recipe (a module of the `data_recipes` package) is a `Recipe` value: its name, licence, the column layouts it
accepts and a `convert(row, ctx)` function returning a `Sample` (or raising `SkipRow` with the reason; the
converter vocabulary, shared with the benchmark adapters, is `spark_vl.data.rows`).
Everything else is shared here, so a fix lands in every recipe at once:

    python data_recipes/geometry3k.py --source ~/hf/geometry3k@train --out data/geo3k-train
    spark-vl data prepare geometry3k --source ~/hf/geometry3k@train --out data/geo3k-train

Recipes are found by name in `RECIPES` (name -> `data_recipes.<name>:RECIPE`), or as
"package.module:attr" naming a Recipe (or a function returning one) for user code.

A source that does not exist, or lacks the columns of every layout, fails before any row is read,
naming the columns found and expected. A row that fails `convert` is skipped, counted and listed;
a run over 40k rows never stops for one bad row. `--strict` turns any dropped row into exit code 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_vl.data.answers import normalize_gold, parse_options
from spark_vl.data.prepared import MANIFEST
from spark_vl.data.rows import MALFORMED, RowContext, Skipped, SkipRow, image_list
from spark_vl.data.sources import RowSource, SourceError, open_source
from spark_vl.plugins import PluginError, resolve
from spark_vl.prep.validate import Report, ValidationConfig, Validator, check_images
from spark_vl.prep.writer import PreparedWriter
from spark_vl.types import Sample

RECIPES: dict[str, str] = {
    name: f"data_recipes.{name}:RECIPE"
    for name in ("virl39k", "geometry3k", "geoqa8k", "mmk12", "clevr_count", "thinklite_vl", "spark_data",
                 "mathv360k", "generic", "synthetic")
}
__all__ = ["RECIPES", "Recipe", "RowContext", "SkipRow", "find_recipe", "image_list", "make_sample", "run"]


@dataclass
class Recipe:
    name: str
    description: str
    licence: str
    # Returns the sample, None for a row the options deliberately leave out, or raises SkipRow.
    convert: Callable[[dict[str, Any], RowContext], Sample | None] | None
    # layout name -> required columns; or a function of the options (the generic recipe's column flags)
    layouts: dict[str, tuple[str, ...]] | Callable[[argparse.Namespace], dict[str, tuple[str, ...]]] = field(
        default_factory=dict
    )
    hub_id: str | None = None  # the usual source, for --help and `spark-vl data list`
    version: str = "1"
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    setup: Callable[[argparse.Namespace, RowSource], dict[str, Any]] | None = None
    generate: Callable[[argparse.Namespace], Iterable[Sample]] | None = None  # recipes without a source


# ------------------------------------------------------------------------------------------ helpers


def make_sample(
    uid: str,
    problem: str,
    raw_answer: Any,
    images: list[Any],
    *,
    source: str,
    category: str = "",
    choices: list[str] | None = None,
    answer_type: str | None = None,
    difficulty: dict[str, float] | None = None,
    solution: str | None = None,
    group_key: str | None = None,
    meta: dict[str, Any] | None = None,
    parse_choices: bool = True,
) -> Sample:
    """A canonical sample: gold normalised (boxes stripped, letters resolved), the shipped gold kept.

    Without `choices`, option lines in the problem ("(A) 3", "A. 3") become the choices unless
    `parse_choices` is False (a free-form setting whose problem must not turn into a letter question).
    """
    if not isinstance(problem, str):
        raise SkipRow(f"question is {type(problem).__name__}, not text")
    if raw_answer is None or (isinstance(raw_answer, str) and not raw_answer.strip()):
        raise SkipRow("the gold answer is empty", kind="missing_answer")
    if choices:
        choices = [str(c) for c in choices]
    elif parse_choices:
        choices = parse_options(problem)
    gold = normalize_gold(raw_answer, choices)
    return Sample(
        uid=uid,
        problem=problem.strip(),
        answer=gold.answer,
        images=images,
        choices=choices,
        answer_type=answer_type or gold.answer_type,
        source=source,
        category=category or "",
        answer_raw=str(raw_answer),
        solution=solution,
        difficulty=difficulty,
        group_key=group_key,
        meta=meta or {},
    )


def find_recipe(name: str) -> Recipe:
    """A recipe by name (RECIPES) or by "package.module:attr" naming a Recipe or a function returning one.

    Raises PluginError (a ValueError) naming the recipe and listing the known names.
    """
    found = resolve(RECIPES.get(name, name), RECIPES, "recipe", expect=lambda v: isinstance(v, Recipe) or callable(v))
    recipe = found if isinstance(found, Recipe) else found()
    if not isinstance(recipe, Recipe):
        raise PluginError(f"recipe {name!r} gives a {type(recipe).__name__}, not a spark_vl.prep.recipes.Recipe")
    return recipe


# ------------------------------------------------------------------------------------------ command line


def build_parser(recipe: Recipe, prog: str | None = None) -> argparse.ArgumentParser:
    hub = f" Usual source: {recipe.hub_id}." if recipe.hub_id else ""
    parser = argparse.ArgumentParser(
        prog=prog or f"spark-vl data prepare {recipe.name}",
        description=f"{recipe.description} Licence: {recipe.licence}.{hub}",
    )
    if recipe.generate is None:
        parser.add_argument(
            "--source", required=True,
            help="hub id, datasets folder, parquet/json/jsonl file or folder; `path@split` picks a split",
        )
        parser.add_argument("--split", default=None, help="split of a datasets folder / hub id (default: train)")
        parser.add_argument("--image-root", default=None, help="folder that relative image paths resolve against")
    parser.add_argument("--out", required=True, help="output folder (the prepared dataset)")
    parser.add_argument("--images", choices=("files", "embed"), default="files",
                        help="store images as files alongside the shards (default) or embedded in them")
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="convert at most this many source rows")
    parser.add_argument("--strict", action="store_true", help="exit 1 (and write no manifest) if any row is dropped")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing prepared dataset in --out")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding/validating images")
    parser.add_argument("--min-image-side", type=int, default=ValidationConfig.min_image_side)
    parser.add_argument("--max-image-pixels", type=int, default=ValidationConfig.max_image_pixels)
    parser.add_argument("--no-answer-check", action="store_true", help="do not ask the verifier to parse each gold")
    parser.add_argument("--keep-duplicates", action="store_true")
    if recipe.add_arguments is not None:
        recipe.add_arguments(parser)
    return parser


# ------------------------------------------------------------------------------------------ running


@dataclass
class PrepareResult:
    out: Path
    manifest: dict[str, Any] | None  # None when --strict failed
    report: Report

    @property
    def ok(self) -> bool:
        return self.manifest is not None


def choose_layout(recipe: Recipe, source: RowSource, args: argparse.Namespace) -> str:
    """The first layout whose required columns the source has; SourceError listing found vs expected."""
    layouts = recipe.layouts(args) if callable(recipe.layouts) else recipe.layouts
    for layout, required in layouts.items():
        if all(col in source.columns for col in required):
            return layout
    expected = " | ".join(f"{name}: {', '.join(cols)}" for name, cols in layouts.items())
    raise SourceError(
        f"{source.description} has columns {sorted(source.columns)}; recipe {recipe.name} expects one of "
        f"these column sets: {expected}"
    )


def _converted(recipe: Recipe, args: argparse.Namespace, validator: Validator):
    """Yield (sample, root) pairs; skipped rows go straight into the report."""
    if recipe.generate is not None:
        for sample in recipe.generate(args):
            yield sample, None
        return
    source = open_source(args.source, args.split, args.image_root)
    layout = choose_layout(recipe, source, args)
    state = recipe.setup(args, source) if recipe.setup else {}
    print(f"[{recipe.name}] reading {source.description} ({source.num_rows or '?'} rows, layout {layout})",
          file=sys.stderr)
    for index, (row_id, row) in enumerate(source.rows()):
        if args.limit is not None and index >= args.limit:
            break
        ctx = RowContext(row_id, index, root=source.root, layout=layout, args=args, state=state)
        try:
            if "__error__" in row:
                raise SkipRow(row["__error__"])
            sample = recipe.convert(row, ctx)
            if sample is None:
                validator.report.rows_filtered += 1
                continue
        except SkipRow as err:
            validator.skip(Skipped(row_id, err.kind, str(err)))
            continue
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            validator.skip(Skipped(row_id, MALFORMED, f"{type(err).__name__}: {err}"))
            continue
        yield sample, source.root


def _batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prepare(recipe: Recipe, args: argparse.Namespace, command: str | None = None) -> PrepareResult:
    """Run `recipe` with parsed `args`; writes the prepared dataset (or only report.json with --strict)."""
    out = Path(args.out)
    if (out / MANIFEST).exists() and not args.overwrite:
        raise SourceError(f"{out} already holds a prepared dataset; pass --overwrite to replace it")
    cfg = ValidationConfig(
        min_image_side=args.min_image_side,
        max_image_pixels=args.max_image_pixels,
        check_answers=not args.no_answer_check,
        dedupe=not args.keep_duplicates,
    )
    validator = Validator(cfg)
    writer = PreparedWriter(out, image_mode=args.images, rows_per_shard=args.rows_per_shard)
    uids: set[str] = set()
    pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    try:
        from tqdm import tqdm

        progress = tqdm(desc=f"prepare {recipe.name}", unit=" rows", disable=None, file=sys.stderr)
        for batch in _batched(_converted(recipe, args, validator), 64):
            jobs = [(s.images, root, cfg) for s, root in batch]
            checked = pool.map(check_images, *zip(*jobs, strict=True)) if pool else (check_images(*j) for j in jobs)
            for (sample, root), images in zip(batch, checked, strict=True):
                uid, k = sample.uid, 1
                while sample.uid in uids:  # ids must be unique: they key groups, trackers and dedup
                    k += 1
                    sample.uid = f"{uid}#{k}"
                kept = validator.check(sample, root, images)
                if kept is not None:
                    uids.add(sample.uid)
                    writer.add(sample, kept)
            progress.update(len(batch))
        progress.close()
    finally:
        if pool is not None:
            pool.shutdown()
    report = validator.report
    print(f"[{recipe.name}] {report.summary()}", file=sys.stderr)
    if args.strict and report.counts:
        writer._flush()
        report.write(out / "report.json")
        print(f"[{recipe.name}] --strict: {report.rows_dropped} rows dropped; see {out / 'report.json'}; "
              "no manifest written", file=sys.stderr)
        return PrepareResult(out, None, report)
    manifest = writer.finish(
        name=out.name,
        source=getattr(args, "source", None) or f"generated by {recipe.name}",
        licence=getattr(args, "licence", None) or recipe.licence,
        recipe=recipe.name,
        recipe_version=recipe.version,
        command=command or shlex.join(["python", sys.argv[0], *sys.argv[1:]]),
        report=report,
        extra={"validation": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}},
    )
    return PrepareResult(out, manifest, report)


def run(recipe: Recipe, argv: list[str] | None = None, prog: str | None = None, command: str | None = None) -> int:
    """Command-line entry shared by the recipe scripts and `spark-vl data prepare`; returns the exit code."""
    parser = build_parser(recipe, prog)
    args = parser.parse_args(argv)
    try:
        result = prepare(recipe, args, command)
    except SourceError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    if not result.ok:
        return 1
    print(f"[{recipe.name}] wrote {result.manifest['counts']['rows']} rows to {result.out}", file=sys.stderr)
    return 0
