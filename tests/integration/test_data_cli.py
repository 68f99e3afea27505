"""`spark-vl data ...` end to end: prepare, validate, show, decontaminate, difficulty; bad arguments."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spark_vl.cli import main as spark_vl
from spark_vl.data.prepared import load_samples

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("data_builders", REPO / "tests/assets/data/builders.py")
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)

LONG_Q = "A ladder leans against a wall so that its foot is three metres away from the wall; how long is it?"


def jpeg_free_copy(png_bytes: bytes) -> bytes:
    """The same pixels in another container (BMP): a byte hash differs, the pixel hash must not."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes)).convert("RGB").save(buf, format="BMP")
    return buf.getvalue()


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    images = [builders.png(builders.COLOURS[i], mark=i) for i in range(4)]
    rows = [
        {"id": "t0", "problem": "<image>What is the area of the square?", "answer": "16", "image": images[0]},
        {"id": "t1", "problem": f"<image>{LONG_Q}", "answer": "5", "image": images[1]},
        {"id": "t2", "problem": "<image>Find x.", "answer": "3", "image": images[2]},
        {"id": "t3", "problem": "<image>Which bar is the tallest one?", "answer": "B", "image": images[3]},
    ]
    src = tmp / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp / "prepared"
    code = spark_vl(["data", "prepare", "generic", "--source", str(src), "--out", str(out), "--image-key", "image",
                     "--licence", "MIT"])
    assert code == 0
    bench = [  # MathVista-like columns: pid, question, decoded_image (struct), image (an unresolvable path)
        {"pid": "1", "question": "How big is it?", "image": "images/1.jpg",
         "decoded_image": {"bytes": jpeg_free_copy(images[0]), "path": None}, "answer": "16"},
        {"pid": "2", "question": f"Hint: Please answer.\nQuestion: {LONG_Q.upper()}", "image": "images/2.jpg",
         "decoded_image": {"bytes": builders.png("white", mark=9), "path": None}, "answer": "5"},
        {"pid": "3", "question": "Find x.", "image": "images/3.jpg",  # short generic question: never matched alone
         "decoded_image": {"bytes": builders.png("black", mark=8), "path": None}, "answer": "7"},
    ]
    bench_path = tmp / "mathvista_testmini.parquet"
    pq.write_table(pa.Table.from_pylist(bench), bench_path)
    return {"tmp": tmp, "prepared": out, "bench": bench_path}


def test_show_and_validate(train, capsys):
    assert spark_vl(["data", "show", str(train["prepared"]), "-n", "2"]) == 0
    assert "4 rows" in capsys.readouterr().out
    report = train["tmp"] / "validate.json"
    assert spark_vl(["data", "validate", str(train["prepared"]), "--report", str(report), "--strict"]) == 0
    assert json.loads(report.read_text())["rows_kept"] == 4


def test_validate_strict_fails_on_bad_rows(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "problem": "<image>What?", "answer": "1", "images": ["missing.png"]},
        {"id": "b", "problem": "What is 1+1?", "answer": "2"},
        {"id": "c", "problem": "What is 1+1?", "answer": "2"},
    ]) + "\n")
    assert spark_vl(["data", "validate", str(path), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "1/3 rows kept" in out and "missing_image" in out and "duplicate" in out


def test_decontaminate(train, capsys):
    out = train["tmp"] / "clean"
    code = spark_vl(["data", "decontaminate", "--data", str(train["prepared"]), "--against", str(train["bench"]),
                     "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dropped_by_image"] == 1 and summary["dropped_by_question"] == 1
    kept = load_samples(str(out))
    assert sorted(s.uid for s in kept.samples) == ["train-t2", "train-t3"]
    detail = json.loads((out / "decontamination.json").read_text())["dropped"]
    reasons = {d["row"]: d["reason"] for d in detail}
    assert "mathvista_testmini:1" in reasons["train-t0"] and "question identical" in reasons["train-t1"]
    assert kept.manifest["recipe"] == "decontaminate" and kept.manifest["licence"] == "MIT"


def test_difficulty_from_column(tmp_path):
    rows = [{"id": f"r{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i), "passrate_7b": rate}
            for i, rate in enumerate([0.0, 0.5, 1.0, None])]
    src = tmp_path / "rates.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "mid"
    assert spark_vl(["data", "difficulty", "--data", str(src), "--out", str(out), "--column", "passrate_7b",
                     "--keep", "(0,1)", "--unknown", "drop"]) == 0
    result = load_samples(str(out))
    assert [s.uid for s in result.samples] == ["r1"]
    assert result.samples[0].difficulty["passrate"] == 0.5 and result.samples[0].difficulty["passrate_n"] == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"outside_band": 2, "unknown_pass_rate": 1}


def test_difficulty_with_rollouts_of_the_tiny_model(train):
    out = train["tmp"] / "rated"
    code = spark_vl(["data", "difficulty", "--data", str(train["prepared"]), "--out", str(out),
                     "--model", "builtin:tiny-qwen2.5-vl", "--n", "2", "--max-new-tokens", "4", "--keep", "[0,1]"])
    assert code == 0
    result = load_samples(str(out))
    assert len(result.samples) == 4
    for s in result.samples:
        assert s.difficulty["passrate_n"] == 2 and s.difficulty["passrate"] in (0.0, 0.5, 1.0)
    assert result.manifest["difficulty"]["rate_from"]["rollouts"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "nope"], "unknown subcommand"),
        (["data", "prepare", "nope", "--out", "x"], "unknown recipe"),
        (["data", "prepare", "virl39k", "--out", "x"], "--source"),
        (["data", "validate", "/no/such/path"], "does not exist"),
        (["data", "difficulty", "--data", "x", "--out", "y", "--keep", "0..1"], "--keep"),
        (["data", "decontaminate", "--data", "x"], "required"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert spark_vl(argv) == 2
    assert message in capsys.readouterr().err


def test_list(capsys):
    assert spark_vl(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("virl39k", "geometry3k", "geoqa8k", "mmk12", "clevr_count", "thinklite_vl", "spark_data",
                 "mathv360k", "generic", "synthetic"):
        assert name in out


def test_data_commands_do_not_import_the_model_stack(tmp_path):
    """`spark-vl data` prepare / validate / show / decontaminate / difficulty --column run without torch or
    transformers (they cost seconds to import; only `difficulty --model` needs them)."""
    import subprocess
    import sys

    release = builders.virl39k_release(tmp_path)
    jsonl = builders.generic_jsonl(tmp_path)
    out, syn, clean, mid = (str(tmp_path / n) for n in ("virl", "syn", "clean", "mid"))
    commands = [
        ["prepare", "virl39k", "--source", release["folder"], "--out", out],
        ["prepare", "generic", "--source", jsonl, "--out", str(tmp_path / "gen"), "--image-key", "image",
         "--problem-key", "question", "--answer-key", "label"],
        ["prepare", "synthetic", "--size", "5", "--out", syn],
        ["validate", out], ["show", out], ["list"],
        ["decontaminate", "--data", out, "--against", release["parquet"], "--out", clean],
        ["difficulty", "--data", out, "--column", "passrate_7b", "--keep", "(0,1)", "--out", mid],
    ]
    code = (
        "import json, sys\nfrom spark_vl.cli import main\n"
        f"codes = [main(['data', *c]) for c in {commands!r}]\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules)\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * len(commands), proc.stderr[-2000:]
    assert result["heavy"] == [], f"data commands imported {result['heavy']}"
