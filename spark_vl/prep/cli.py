"""`spark-vl data ...`: prepare, validate, decontaminate, filter by difficulty, inspect.

    spark-vl data list
    spark-vl data prepare <recipe> --source SRC --out DIR [recipe options]    (see --help of each recipe)
    spark-vl data validate SPEC [--report FILE] [--strict]
    spark-vl data decontaminate --data SPEC --against SPEC [SPEC ...] --out DIR
    spark-vl data difficulty --data SPEC --out DIR [--column passrate_7b] [--model M --n 8] [--keep "(0,1)"]
    spark-vl data show SPEC [-n 3]

SPEC is anything `spark_vl.data.prepared.load_samples` reads: a prepared folder, a parquet / json / jsonl file
or a `datasets` folder (`path@split`). Exit codes: 0 ok, 1 validation failed under --strict,
2 bad arguments, a missing path or a source without the expected columns (one line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from spark_vl.data.sources import SourceError
from spark_vl.plugins import PluginError

# Each subcommand imports what it needs inside its function, so `spark-vl data --help` (and `list`) never load
# torch or the model stack.


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` returns 2 with one line."""

    def error(self, message: str):
        raise SourceError(message)


def _command(argv: list[str]) -> str:
    return shlex.join(["spark-vl", "data", *argv])


def _list(argv: list[str]) -> int:
    from spark_vl.prep.recipes import RECIPES, find_recipe

    _Parser(prog="spark-vl data list", description="List the dataset recipes.").parse_args(argv)
    for name in RECIPES:
        try:
            recipe = find_recipe(name)
        except PluginError as err:
            print(f"{name:14s} (unavailable: {err})")
            continue
        print(f"{name:14s} {recipe.hub_id or '-':32s} {recipe.licence}\n{'':14s} {recipe.description}")
    return 0


def _prepare(argv: list[str]) -> int:
    from spark_vl.prep.recipes import RECIPES, find_recipe, run

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: spark-vl data prepare <recipe> --source SRC --out DIR [options]\n\nrecipes: "
              + ", ".join(RECIPES) + " (or package.module:attr)\n`spark-vl data prepare <recipe> --help` "
              "lists the options of one recipe.")
        return 0 if argv else 2
    try:
        recipe = find_recipe(argv[0])
    except PluginError as err:
        print(f"spark-vl data prepare: {err}", file=sys.stderr)
        return 2
    try:
        return run(recipe, argv[1:], prog=f"spark-vl data prepare {recipe.name}", command=_command(["prepare", *argv]))
    except SystemExit as err:  # argparse: --help (0) or a bad option (2)
        return int(err.code or 0)


def _validate(argv: list[str]) -> int:
    from spark_vl.data.prepared import load_samples
    from spark_vl.prep.validate import ValidationConfig, Validator

    p = _Parser(prog="spark-vl data validate", description="Validate a dataset and report every problem row.")
    p.add_argument("spec")
    p.add_argument("--report", help="write the full report (JSON) here")
    p.add_argument("--strict", action="store_true", help="exit 1 if any row has a problem")
    p.add_argument("--min-image-side", type=int, default=ValidationConfig.min_image_side)
    p.add_argument("--max-image-pixels", type=int, default=ValidationConfig.max_image_pixels)
    p.add_argument("--no-answer-check", action="store_true")
    args = p.parse_args(argv)
    result = load_samples(args.spec)
    validator = Validator(ValidationConfig(args.min_image_side, args.max_image_pixels,
                                           check_answers=not args.no_answer_check))
    for skipped in result.skipped:
        validator.skip(skipped)
    for sample in result.samples:
        validator.check(sample, result.root)
    report = validator.report
    print(report.summary())
    if args.report:
        report.write(args.report)
        print(f"report: {args.report}")
    return 1 if args.strict and report.counts else 0


def _decontaminate(argv: list[str]) -> int:
    from spark_vl.prep.decontaminate import DecontaminationConfig, run_decontamination

    p = _Parser(prog="spark-vl data decontaminate",
                description="Drop rows whose image or normalised question appears in evaluation sets.")
    p.add_argument("--data", required=True, help="the training data (any SPEC)")
    p.add_argument("--against", required=True, nargs="+", help="evaluation sets: files / folders (any SPEC)")
    p.add_argument("--out", required=True, help="output folder for the clean prepared dataset")
    p.add_argument("--perceptual", action="store_true", help="also match images by an identical 64-bit dHash")
    p.add_argument("--min-question-chars", type=int, default=DecontaminationConfig.min_question_chars)
    p.add_argument("--no-images", action="store_true", help="match questions only")
    p.add_argument("--no-questions", action="store_true", help="match images only")
    args = p.parse_args(argv)
    cfg = DecontaminationConfig(not args.no_images, not args.no_questions, args.perceptual, args.min_question_chars)
    outcome = run_decontamination(args.data, args.against, args.out, cfg, _command(["decontaminate", *argv]))
    print(json.dumps(outcome.summary(), indent=1))
    return 0


def _difficulty(argv: list[str]) -> int:
    from spark_vl.prep.difficulty import Band, DifficultyConfig, run_difficulty

    p = _Parser(prog="spark-vl data difficulty", description="Estimate pass rates and keep a difficulty band.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--keep", default="(0,1)", help='pass-rate interval to keep, e.g. "(0,1)" or "[0.25,0.75]"')
    p.add_argument("--column", default=None, help="precomputed rate in difficulty{} to use when present")
    p.add_argument("--model", default=None, help="model for rollouts (dir, hub id or builtin:tiny-qwen2.5-vl)")
    p.add_argument("--n", type=int, default=8, help="rollouts per row")
    p.add_argument("--template", default="boxed")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--prompts-per-batch", type=int, default=8)
    p.add_argument("--unknown", choices=("keep", "drop"), default="keep", help="rows without any rate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        band = Band.parse(args.keep)
    except ValueError as err:
        raise SourceError(f"--keep: {err}") from None
    cfg = DifficultyConfig(band, args.column, args.model, args.n, args.template, args.temperature,
                           args.max_new_tokens, args.prompts_per_batch, args.unknown, args.seed)
    report = run_difficulty(args.data, args.out, cfg, _command(["difficulty", *argv]))
    print(report.summary())
    return 0


def _show(argv: list[str]) -> int:
    from spark_vl.data.prepared import load_samples

    p = _Parser(prog="spark-vl data show", description="Print a dataset's manifest summary and first rows.")
    p.add_argument("spec")
    p.add_argument("-n", type=int, default=3)
    args = p.parse_args(argv)
    result = load_samples(args.spec)
    if result.manifest:
        m = result.manifest
        print(f"{m['name']}: {m['counts']['rows']} rows, recipe {m['recipe']} v{m['recipe_version']}, "
              f"licence {m['licence']}\n  answer types {m['answer_types']}\n  images {m['images']['count']} "
              f"({m['images']['storage']})\n  command: {m['command']}")
    else:
        print(f"{args.spec}: {len(result.samples)} rows ({len(result.skipped)} skipped)")
    for s in result.samples[: args.n]:
        print(f"- {s.uid} [{s.answer_type}] {s.problem[:100]!r} -> {s.answer!r} ({len(s.images)} images)")
    return 0


COMMANDS = {
    "list": _list,
    "prepare": _prepare,
    "validate": _validate,
    "decontaminate": _decontaminate,
    "difficulty": _difficulty,
    "show": _show,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"spark-vl data: unknown subcommand {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except SourceError as err:
        print(f"spark-vl data {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help
        return int(err.code or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
