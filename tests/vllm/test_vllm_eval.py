"""`spark-vl eval --backend vllm` gives the same greedy answers as `--backend hf` (same prompts, images, scoring)."""

from __future__ import annotations

import json

import pytest

from spark_vl.eval.cli import main
from tests.integration.test_eval_e2e import _mathvista_rows
from tests.unit._eval_fixtures import write_parquet

pytestmark = pytest.mark.vllm
MODEL = "builtin:tiny-qwen2.5-vl-hd64"


def test_eval_backends_agree(tmp_path):
    data = write_parquet(tmp_path / "MathVista", "testmini", _mathvista_rows())
    items = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        argv = ["--model", MODEL, "--benchmarks", "mathvista", "--data", f"mathvista={data}", "--max-new-tokens",
                "16", "--batch-size", "2", "--out", str(out), "--device", "cpu", "--backend", backend, "--no-chart"]
        assert main(argv) == 0
        rows = [json.loads(line) for line in (out / "items" / "mathvista.greedy.jsonl").read_text().splitlines()]
        items[backend] = {r["uid"]: (r["prompt"], r["response"], r["extracted"], r["correct"]) for r in rows}
    assert len(items["vllm"]) == 5 and items["vllm"] == items["hf"]
