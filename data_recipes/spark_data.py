"""Spark-Data (internlm/Spark-Data, CC-BY-NC-4.0): the exact SPARK training files, chat-message layout.

Source layout (JSON array): `message` = an OpenAI-style chat serialised as a JSON string, whose user turn
holds an image item {"type": "image", "image": "file://...", "max_pixels": ...} and a text item (question
+ a boxed-answer instruction), and `answer` = the gold. The question becomes `problem` with an <image>
placeholder where the image item was, and the trailing format instruction is removed (spark-vl adds its
own at prompt time): pass the exact text with --suffix, or let the recipe drop a final sentence that
asks for \\boxed{}. The removed text is kept in meta["suffix"].

Image paths point at the authors' storage: --image-root remaps them onto a local folder (ViRL39K's
images) by trying the path's trailing components under that folder, then the unique file name.
The merged evaluation files (`benchmark_combine*.json`: dataset, problem, answer, image_path) are
benchmarks, not training data: they are accepted only with --eval-file (e.g. to build a
decontamination reference or an evaluation set).

    python -m data_recipes.spark_data --source infer_data_ViRL_19k_h.json --image-root ~/hf/ViRL39K --out data/spark19k
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from spark_vl.data.sources import RowSource, SourceError
from spark_vl.prep.recipes import Recipe, RowContext, SkipRow, make_sample, run

# A final line or sentence that instructs the model to box its answer (an empty \boxed{} is an instruction).
_SUFFIX = re.compile(r"(?:\n+|(?<=[.?!:])\s+|^)[^\n]*\\boxed\{\}[^\n]*$")


def add_arguments(parser) -> None:
    parser.add_argument("--suffix", default=None, help="the exact format instruction to strip from each question")
    parser.add_argument("--eval-file", action="store_true", help="accept the merged benchmark files (eval layout)")


def setup(args, source: RowSource) -> dict:
    if "image_path" in source.columns and "message" not in source.columns and not args.eval_file:
        raise SourceError(f"{source.description} is a merged *evaluation* file (dataset, problem, answer, "
                          "image_path); pass --eval-file to prepare it anyway, never for training")
    return {"index": None}


def strip_suffix(text: str, suffix: str | None) -> tuple[str, str]:
    """(question, removed instruction)."""
    if suffix:
        if text.rstrip().endswith(suffix.strip()):
            cut = text.rstrip()[: -len(suffix.strip())]
            return cut.rstrip(), suffix.strip()
        return text.strip(), ""
    m = _SUFFIX.search(text)
    if m and m.start() > 0:
        return text[: m.start()].rstrip(), text[m.start() :].strip()
    return text.strip(), ""


def local_image(path: str, root: Path | None, state: dict) -> str:
    """Map an authors'-storage path onto a file under `root` (tail match, then unique basename)."""
    path = path[len("file://") :] if path.startswith("file://") else path
    if root is None or Path(path).is_file():
        return path
    parts = Path(path).parts
    for k in range(1, len(parts)):
        candidate = Path(*parts[k:])
        if (root / candidate).is_file():
            return str(candidate)
    if state["index"] is None:  # build the basename index once, on the first miss
        index: dict[str, list[str]] = {}
        for folder, _, files in os.walk(root):
            for name in files:
                index.setdefault(name, []).append(os.path.relpath(os.path.join(folder, name), root))
        state["index"] = index
    hits = state["index"].get(Path(path).name, [])
    return hits[0] if len(hits) == 1 else path  # unresolved: validation reports it as a missing image


def parse_message(message) -> list[dict]:
    """The content items of the (last) user turn."""
    chat = json.loads(message) if isinstance(message, str) else message
    if isinstance(chat, dict):
        chat = [chat]
    users = [m for m in chat if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise SkipRow("message has no user turn")
    content = users[-1].get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise SkipRow(f"user content is a {type(content).__name__}")
    return content


def convert(row: dict, ctx: RowContext):
    if ctx.layout == "eval":
        return make_sample(
            uid=f"spark-eval-{row.get('dataset', 'x')}-{ctx.row_id}",
            problem=row["problem"], raw_answer=row["answer"],
            images=[local_image(row["image_path"], ctx.root, ctx.state)] if row.get("image_path") else [],
            source="spark_data_eval", category=str(row.get("dataset") or ""), meta={"eval_split": True},
        )
    try:
        items = parse_message(row["message"])
    except json.JSONDecodeError as err:
        raise SkipRow(f"message is not JSON: {err.msg}") from None
    pieces, images, meta = [], [], {}
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "image" or (kind is None and isinstance(item, dict) and "image" in item):
            images.append(local_image(str(item.get("image") or item.get("image_url") or ""), ctx.root, ctx.state))
            pieces.append("<image>")
            if "max_pixels" in item:
                meta["max_pixels"] = item["max_pixels"]
        elif kind == "text":
            pieces.append(str(item.get("text", "")))
    text, suffix = strip_suffix("\n".join(p for p in pieces if p), ctx.args.suffix)
    if suffix:
        meta["suffix"] = suffix
    return make_sample(
        uid=f"spark-{row.get('id', ctx.row_id)}",
        problem=text,
        raw_answer=row["answer"],
        images=images,
        source="spark_data",
        meta=meta,
    )


RECIPE = Recipe(
    name="spark_data",
    description="Spark-Data training files (chat message + answer), images remapped to a local folder.",
    licence="CC-BY-NC-4.0",
    hub_id="internlm/Spark-Data",
    layouts={"train": ("message", "answer"), "eval": ("problem", "answer", "image_path")},
    convert=convert,
    setup=setup,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.spark_data"))
