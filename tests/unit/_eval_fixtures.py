"""Helpers for the evaluation tests: tiny benchmark files in the real schemas, and the --score-only round trip."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png(color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def image_struct(name: str = "img.png", color: tuple[int, int, int] = (200, 30, 30)) -> dict[str, Any]:
    """An HF `Image` feature value as stored in parquet: {"bytes", "path"}."""
    return {"bytes": png(color), "path": name}


def write_parquet(folder: Path, split: str, rows: list[dict[str, Any]]) -> Path:
    """Rows as `<folder>/data/<split>-00000-of-00001.parquet` (the hub layout)."""
    path = folder / "data" / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return folder


def write_predictions(path: Path, predictions: dict[str, str], benchmark: str | None = None) -> Path:
    with path.open("w") as f:
        for uid, response in predictions.items():
            row = {"uid": uid, "response": response}
            if benchmark:
                row["benchmark"] = benchmark
            f.write(json.dumps(row) + "\n")
    return path


def score_only(tmp_path: Path, benchmark: str, data: Path, predictions: dict[str, str], protocol: str = "spark",
               extra: list[str] | None = None) -> dict[str, Any]:
    """Run `spark-vl eval --score-only` on plain predictions; return the benchmark's greedy metrics."""
    from spark_vl.eval.cli import main

    preds = write_predictions(tmp_path / f"preds-{benchmark}-{protocol}.jsonl", predictions)
    out = tmp_path / f"out-{benchmark}-{protocol}"
    code = main(["--score-only", str(preds), "--benchmarks", benchmark, "--data", f"{benchmark}={data}",
                 "--protocol", protocol, "--out", str(out), "--no-chart", *(extra or [])])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    again = _rescore_items(tmp_path, out, benchmark, protocol)
    result = metrics["benchmarks"][benchmark]["greedy"]
    for key in ("accuracy", "num_correct", "num_items"):  # the written items re-score to the same numbers
        assert again[key] == result[key]
    return result


def _rescore_items(tmp_path: Path, out: Path, benchmark: str, protocol: str) -> dict[str, Any]:
    from spark_vl.eval.cli import main

    out2 = tmp_path / f"again-{benchmark}-{protocol}"
    assert main(["--score-only", str(out), "--protocol", protocol, "--out", str(out2), "--no-chart"]) == 0
    return json.loads((out2 / "metrics.json").read_text())["benchmarks"][benchmark]["greedy"]


class FakeEngine:
    """A rollout engine that answers from a function of the prompt text; counts what it generates."""

    def __init__(self, answer, fail_on: str | None = None):
        self.answer = answer  # (prompt text, sample index k) -> response
        self.fail_on = fail_on  # a prompt containing this text raises inside generate (like an OOM)
        self.generated = 0
        self.calls = 0
        self.model = self.processor = None

    def generate(self, prompts, n, sampling):
        from spark_vl.types import Rollout, RolloutGroup

        self.calls += 1
        groups = []
        for p in prompts:
            text = "".join(part.get("text", "") for m in p.messages if isinstance(m["content"], list)
                           for part in m["content"])
            if self.fail_on and self.fail_on in text:
                raise RuntimeError("CUDA out of memory (fake)")
            rollouts = []
            for k in range(n):
                self.generated += 1
                rollouts.append(Rollout(prompt=p, token_ids=[1, 2, 3], text=self.answer(text, k)))
            groups.append(RolloutGroup(prompt=p, rollouts=rollouts))
        return groups
