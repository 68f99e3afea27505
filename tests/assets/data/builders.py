"""Tiny stand-ins for the real training datasets, built in a temp dir from code (nothing is stored).

Each builder reproduces its source's columns and value types as documented in docs/DATA.md (HF image
features, lists of images, <image> placeholders, boxed answers, option lists, chat-message JSON),
with images of a few pixels. `hf_forms(rows, features, tmp)` writes one table both as a `datasets`
save_to_disk folder and as a parquet file, the two forms a recipe must accept.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "gray", "cyan", "pink", "brown", "navy"]


def png(colour: str = "red", size: tuple[int, int] = (24, 20), mark: int = 0) -> bytes:
    """A small PNG; `mark` paints one pixel so pictures of one colour still differ."""
    img = Image.new("RGB", size, colour)
    img.putpixel((mark % size[0], 0), (mark % 256, 7, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def truncated_png() -> bytes:
    data = png("blue", (64, 64), mark=3)
    return data[: len(data) // 2]


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares width x height pixels, with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def hf_forms(rows: list[dict], features, tmp: Path, name: str) -> dict[str, str]:
    """Write rows as a save_to_disk folder and a parquet file; {"disk": path, "parquet": path}."""
    from datasets import Dataset

    columns = {k: [r[k] for r in rows] for k in rows[0]}
    ds = Dataset.from_dict(columns, features=features)
    disk, parquet = tmp / f"{name}_disk", tmp / f"{name}.parquet"
    ds.save_to_disk(str(disk))
    ds.to_parquet(str(parquet))
    return {"disk": str(disk), "parquet": str(parquet)}


def _image_feature():
    from datasets import Image as HFImage

    return HFImage()


def virl39k(tmp: Path) -> dict[str, str]:
    """ViRL39K: boxed answers, a list of images, PassRate columns (7B one half empty)."""
    from datasets import Features, List, Value

    rows = []
    golds = ["\\boxed{17}", "\\boxed{B}", "\\boxed{\\frac{3}{4}}", "\\boxed{17^\\circ}", "\\boxed{Yes}",
             "\\boxed{2.5}"]
    for i, gold in enumerate(golds):
        problem = f"<image>Question {i}: what is the value asked for in figure {i}?"
        if gold == "\\boxed{B}":
            problem = "<image>Which option is right?\nChoices:\n(A) 3\n(B) 4\n(C) 5"
        rows.append({
            "problem": problem, "images": [png(COLOURS[i], mark=i)], "answer": gold, "category": "math",
            "qid": f"q{i}", "id": str(i), "source": "MMK12" if i % 2 else "R1-OneVision",
            "PassRate_32BTrained": i / 8, "PassRate_7BUntrained": None if i % 2 else i / 10,
        })
    rows.append(dict(rows[0], qid="q-dup", id="99"))  # duplicate of row 0
    feats = Features({
        "problem": Value("string"), "images": List(_image_feature()), "answer": Value("string"),
        "category": Value("string"), "qid": Value("string"), "id": Value("string"), "source": Value("string"),
        "PassRate_32BTrained": Value("float64"), "PassRate_7BUntrained": Value("float64"),
    })
    return hf_forms(rows, feats, tmp, "virl39k")


def virl39k_release(tmp: Path) -> dict[str, str]:
    """ViRL39K as TIGER-Lab releases it: `39Krelease.parquet` (plain parquet, `image` = a list of paths relative to
    its folder) next to the unzipped image folder; PassRate_7BBase is -1 where not annotated; one text-only row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp / "ViRL39K"
    (folder / "images").mkdir(parents=True)
    golds = ["\\boxed{17}", "\\boxed{B}", "\\boxed{\\frac{3}{4}}", "\\boxed{2.5}", "\\boxed{12}"]
    rate_7b = [0.5, -1.0, 0.0, 1.0, -1.0]
    rate_32b = [0.75, 0.25, 1.0, 0.5, 0.125]
    rows = []
    for i, gold in enumerate(golds):
        question = f"<image>Question {i}: what is the value asked for in figure {i}?"
        if gold == "\\boxed{B}":
            question = "<image>Which option is right?\nChoices:\n(A) 3\n(B) 4\n(C) 5"
        images = [f"images/{i}.png"]
        (folder / images[0]).write_bytes(png(COLOURS[i], mark=i))
        if i == 4:  # a text-only source row (DeepScaleR-style): no image at all
            question, images = "What is 5 + 7?", []
        rows.append({"question": question, "answer": gold, "PassRate_32BTrained": rate_32b[i],
                     "PassRate_7BBase": rate_7b[i], "category": "Spatial Reasoning" if i % 2 else "Math",
                     "source": "MM-Eureka" if i % 2 else "R1-OneVision", "qid": f"r{i}", "image": images})
    schema = pa.schema([("question", pa.string()), ("answer", pa.string()), ("PassRate_32BTrained", pa.float64()),
                        ("PassRate_7BBase", pa.float64()), ("category", pa.string()), ("source", pa.string()),
                        ("qid", pa.string()), ("image", pa.list_(pa.string()))])
    parquet = folder / "39Krelease.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), parquet)
    return {"folder": str(folder), "parquet": str(parquet)}


def geometry3k(tmp: Path) -> dict[str, str]:
    from datasets import Features, List, Value

    rows = [
        {"images": [png("red", mark=1)], "problem": "<image>Find x.", "answer": "3\\sqrt{2}", "id": "0",
         "choices": ["3", "3\\sqrt{2}", "6", "9"], "ground_truth": "B"},
        {"images": [png("blue", mark=2)], "problem": "<image>Find the measure of \\angle 2.", "answer": "64",
         "id": "1", "choices": ["26", "64", "116", "154"], "ground_truth": "B"},
        {"images": [png("green", mark=3)], "problem": "<image>Find y.", "answer": "12", "id": "2",
         "choices": ["6", "8", "10", "12"], "ground_truth": "D"},
    ]
    feats = Features({"images": List(_image_feature()), "problem": Value("string"), "answer": Value("string"),
                      "id": Value("string"), "choices": List(Value("string")), "ground_truth": Value("string")})
    return hf_forms(rows, feats, tmp, "geometry3k")


def geoqa8k(tmp: Path) -> dict[str, str]:
    from datasets import Features, List, Value

    rows = [{"images": [png(COLOURS[i], mark=i)], "problem": f"<image>如图,已知∠1={30 + i}°,求∠2的度数。",
             "answer": str(150 - i)} for i in range(3)]
    forms = hf_forms(rows, Features({"images": List(_image_feature()), "problem": Value("string"),
                                     "answer": Value("string")}), tmp, "geoqa8k")
    r1v = [{"image": png(COLOURS[i], mark=i), "problem": f"如图,求x的值。({i})",
            "solution": f"<answer> {i + 2} </answer>"} for i in range(3)]
    forms.update({f"r1v_{k}": v for k, v in hf_forms(r1v, Features({"image": _image_feature(), "problem": Value(
        "string"), "solution": Value("string")}), tmp, "geoqa8k_r1v").items()})
    return forms


def mmk12(tmp: Path) -> dict[str, str]:
    from datasets import Features, Value

    rows = [
        {"id": "m0", "subject": "math", "image": png("red", mark=0),
         "question": "As shown, which is the area?\nA. 6\nB. 8\nC. 10\nD. 12", "answer": "B"},
        {"id": "m1", "subject": "physics", "image": png("blue", mark=1), "question": "Find the speed in m/s.",
         "answer": "12.5"},
        {"id": "m2", "subject": "chemistry", "image": png("green", mark=2), "question": "How many atoms?",
         "answer": ""},  # empty gold: dropped and counted
    ]
    feats = Features({"id": Value("string"), "subject": Value("string"), "image": _image_feature(),
                      "question": Value("string"), "answer": Value("string")})
    return hf_forms(rows, feats, tmp, "mmk12")


def clevr(tmp: Path) -> dict[str, str]:
    from datasets import Features, List, Value

    rows = [{"images": [png(COLOURS[i], mark=i)], "problem": "<image>How many items are there in the image?",
             "answer": str(i + 3)} for i in range(3)]
    forms = hf_forms(rows, Features({"images": List(_image_feature()), "problem": Value("string"),
                                     "answer": Value("string")}), tmp, "clevr_count")
    math_rows = [{"template": "subtraction", "id": f"c{i}", "question": f"Subtract all red things. How many are "
                  f"left? ({i})", "image": png(COLOURS[i + 3], mark=i), "label": i + 1} for i in range(3)]
    forms.update({f"math_{k}": v for k, v in hf_forms(math_rows, Features({
        "template": Value("string"), "id": Value("string"), "question": Value("string"), "image": _image_feature(),
        "label": Value("int64")}), tmp, "clevr_math").items()})
    return forms


def thinklite(tmp: Path) -> dict[str, str]:
    from datasets import Features, Value

    rows = [{"id": i, "problem": f"<image>What is shown in panel {i}?\n(A) cat\n(B) dog", "answer": "A",
             "image": png(COLOURS[i], mark=i)} for i in range(3)]
    feats = Features({"id": Value("int64"), "problem": Value("string"), "answer": Value("string"),
                      "image": Value("binary")})  # raw encoded bytes, not an image struct
    return hf_forms(rows, feats, tmp, "thinklite_hard")


SPARK_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def spark_data(tmp: Path) -> dict[str, str]:
    """A JSON array of {message: <chat JSON string>, answer}; images live under another prefix."""
    images = tmp / "virl_images" / "images"
    images.mkdir(parents=True)
    records = []
    for i in range(3):
        (images / f"img_{i}.png").write_bytes(png(COLOURS[i], mark=i))
        chat = [{"role": "user", "content": [
            {"type": "image", "image": f"file:///mnt/petrelfs/authors/ViRL39K/images/img_{i}.png",
             "max_pixels": 1048576},
            {"type": "text", "text": f"What is x in figure {i}?\n{SPARK_SUFFIX}"},
        ]}]
        records.append({"message": json.dumps(chat), "answer": str(10 + i)})
    records.append({"message": "{not json", "answer": "1"})  # malformed: skipped and listed
    path = tmp / "infer_data_ViRL_19k_h.json"
    path.write_text(json.dumps(records))
    evaluation = tmp / "benchmark_combine.json"
    evaluation.write_text(json.dumps([{"dataset": "MathVista", "problem": "What is x?", "answer": "3",
                                       "image_path": "images/img_0.png"}]))
    return {"json": str(path), "image_root": str(tmp / "virl_images"), "eval": str(evaluation)}


def mathv360k(tmp: Path) -> dict[str, str]:
    """train_samples_all_tuning.json layout + image folder, and a LLaVA-OneVision parquet subset."""
    root = tmp / "data_images"
    records = []
    answers = ["B", "The answer is 12.", "It shows a long story without any short answer at all in the end.", "Yes"]
    for i, gpt in enumerate(answers):
        folder = "geoqa+" if i < 2 else "TabMWP"
        rel = f"{folder}/images/{i}.png"
        (root / folder / "images").mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png(COLOURS[i], mark=i))
        human = ("<image>\nHint: Please answer the question and provide the correct option letter, e.g., A, B, C, "
                 f"D, at the end.\nQuestion: Which angle is largest in case {i}?\nChoices:\n(A) 30\n(B) 60")
        records.append({"id": f"mv{i}", "image": rel, "conversations": [{"from": "human", "value": human},
                                                                         {"from": "gpt", "value": gpt}]})
    path = tmp / "train_samples_all_tuning.json"
    path.write_text(json.dumps(records))
    from datasets import Features, List, Value

    rows = [{"id": f"ov{i}", "image": png(COLOURS[i + 5], mark=i), "data_source": "GeoQA+(MathV360K)",
             "conversations": [{"from": "human", "value": f"<image>\nWhat is the length of AB in case {i}?"},
                               {"from": "gpt", "value": f"Answer: {i + 4}"}]} for i in range(2)]
    feats = Features({"id": Value("string"), "image": _image_feature(), "data_source": Value("string"),
                      "conversations": List({"from": Value("string"), "value": Value("string")})})
    forms = hf_forms(rows, feats, tmp, "mathv360k_ov")
    return {"json": str(path), "image_root": str(root), **forms}


def generic_jsonl(tmp: Path) -> str:
    folder = tmp / "generic"
    folder.mkdir()
    lines = []
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png(COLOURS[i], mark=i))
        lines.append(json.dumps({"qid": f"g{i}", "question": f"<image>Compute item {i}.", "label": f"$\\boxed{{{i}}}$",
                                 "image": f"{i}.png", "topic": "algebra"}))
    missing = {"qid": "g-missing", "question": "<image>Where is it?", "label": "4", "image": "nope.png"}
    lines.append(json.dumps(missing))
    path = folder / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
