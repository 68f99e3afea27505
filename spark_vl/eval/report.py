"""Evaluation outputs and run comparison.

`write_report(result, out_dir)` writes
    items/<benchmark>.<mode>.jsonl   one ItemRecord per line (prompt, response, extracted answer, correctness,
                                     status, deciding rule, gold) — the input of `--score-only`
    metrics.json                     every metric with its per-category breakdowns, the protocol, the rows
    results.md                       the table in SPARK's column order with averages, plus column notes
    results.png                      a grouped bar chart of the same table
`compare_runs([dir, ...], out_dir)` puts several evaluation folders side by side with deltas against the
first one. Rows are (model, mode): rows of different modes (with/without test-time scaling) or protocols
are never averaged together or subtracted from each other.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from spark_vl.eval.benchmarks import BENCHMARKS
from spark_vl.eval.cache import slug
from spark_vl.eval.records import BenchmarkResult, EvalResult, ItemRecord

GROUP_ORDER = ("math", "reward", "general", "other")
GROUP_AVERAGE = {"math": "Avg-M", "reward": "Avg-R"}
OVERALL_AVERAGE = "Avg"
METRICS_FILE = "metrics.json"


def _order(r: BenchmarkResult) -> tuple[int, int, str]:
    names = list(BENCHMARKS)
    return (GROUP_ORDER.index(r.group) if r.group in GROUP_ORDER else 9,
            names.index(r.benchmark) if r.benchmark in names else len(names), r.benchmark)


def _columns(result: EvalResult) -> list[dict[str, Any]]:
    """Ordered table columns: {label, benchmark, key, group, average} (average = counts in the averages)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in sorted(result.results, key=_order):
        for col in r.columns:
            label, key = col[0], col[1]
            in_avg = bool(col[2]) if len(col) > 2 else True
            seen.setdefault(label, {"label": label, "benchmark": r.benchmark, "key": key, "group": r.group,
                                    "average": in_avg})
    return list(seen.values())


def rows_of(result: EvalResult) -> list[dict[str, Any]]:
    """One row per mode: the column values (fractions) and the group/overall averages."""
    columns = _columns(result)
    rows = []
    for mode in result.modes:
        values: dict[str, float | None] = {}
        for col in columns:
            r = result.get(col["benchmark"], mode)
            values[col["label"]] = r.column_values().get(col["label"]) if r is not None else None
        rows.append({"model": result.model, "mode": mode, "protocol": result.protocol.get("name"),
                     "values": values, "averages": _averages(columns, values)})
    return rows


def _averages(columns: list[dict[str, Any]], values: dict[str, float | None]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for group, label in GROUP_AVERAGE.items():
        vals = [values[c["label"]] for c in columns if c["group"] == group and c["average"]]
        if vals:
            out[label] = sum(vals) / len(vals) if all(v is not None for v in vals) else None
    vals = [values[c["label"]] for c in columns if c["average"]]
    out[OVERALL_AVERAGE] = sum(vals) / len(vals) if vals and all(v is not None for v in vals) else None
    return out


def _fmt(value: float | None, scale: float = 100.0, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value * scale:+.1f}" if signed else f"{value * scale:.1f}"


def layout(columns: list[dict[str, Any]]) -> list[str]:
    """Table labels in SPARK's order: math columns, Avg-M, reward columns, Avg-R, the rest, Avg."""
    labels: list[str] = []
    for group in GROUP_ORDER:
        cols = [c for c in columns if c["group"] == group]
        labels += [c["label"] for c in cols]
        if group in GROUP_AVERAGE and any(c["average"] for c in cols):
            labels.append(GROUP_AVERAGE[group])
    labels += [c["label"] for c in columns if c["group"] not in GROUP_ORDER]
    return labels + [OVERALL_AVERAGE] if columns else labels


def _cell(row: dict[str, Any], label: str) -> float | None:
    return row["values"][label] if label in row["values"] else row["averages"].get(label)


def markdown_table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    header = ["model", "mode", "protocol", *labels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], row["mode"], str(row["protocol"])]
        cells += [_fmt(_cell(row, lab), signed=row.get("delta", False)) for lab in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _notes(result: EvalResult, columns: list[dict[str, Any]]) -> str:
    lines = [
        f"Protocol `{result.protocol.get('name')}`: {result.protocol.get('description', '')}",
        "Numbers are percentages. Avg-M / Avg-R: unweighted means of the math / reward columns; Avg: of every "
        "averaged column. A dash: not evaluated, or a column is missing so no average is given.",
        "Rows with test-time scaling (self_reflect, best_of_N) are separate rows: compare them only with rows of "
        "the same mode.",
        "",
    ]
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for col in columns:
        by_bench.setdefault(col["benchmark"], []).append(col)
    for name, cols in by_bench.items():
        bench = BENCHMARKS.get(name)
        note = bench.notes if bench is not None else "verifier accuracy"
        described = ", ".join(f"**{c['label']}** = `{c['key']}`" + ("" if c["average"] else " (not averaged)")
                              for c in cols)
        lines.append(f"- `{name}`: {described}. {note}")
    partial = {r.benchmark: r.metrics["missing_splits"] for r in result.results if r.metrics.get("missing_splits")}
    for name, missing in partial.items():
        lines.append(f"- `{name}` is PARTIAL: the data held only some of its splits; missing: {', '.join(missing)}. "
                     "Its numbers cover the splits present (a worst case only over the variants present).")
    return "\n".join(lines)


def write_items(result: EvalResult, out_dir: Path) -> list[Path]:
    paths = []
    for r in result.results:
        path = out_dir / "items" / f"{slug(r.benchmark)}.{slug(r.mode)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for rec in r.records:
                f.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def read_items(path: str | Path) -> list[ItemRecord]:
    """Records from one items JSONL file, or from every `items/*.jsonl` of an evaluation folder."""
    path = Path(path)
    files = sorted((path / "items").glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path} holds no items/*.jsonl files")
    records = []
    for file in files:
        with file.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(ItemRecord.from_json(json.loads(line)))
                except (json.JSONDecodeError, TypeError) as err:
                    raise ValueError(f"{file}:{lineno}: not an item record ({err})") from None
    return records


def metrics_json(result: EvalResult) -> dict[str, Any]:
    columns = _columns(result)
    benchmarks: dict[str, dict[str, Any]] = {}
    for r in sorted(result.results, key=_order):
        bench = BENCHMARKS.get(r.benchmark)
        benchmarks.setdefault(r.benchmark, {})[r.mode] = {
            **r.metrics, "notes": bench.notes if bench is not None else "", "group": r.group,
        }
    return {
        "model": result.model,
        "protocol": result.protocol,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generated_items": result.generated,
        "columns": columns,
        "rows": rows_of(result),
        "benchmarks": benchmarks,
    }


def write_report(result: EvalResult, out_dir: str | Path, chart: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_items(result, out)
    data = metrics_json(result)
    (out / METRICS_FILE).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    labels = layout(data["columns"])
    table = markdown_table(data["rows"], labels)
    notes = _notes(result, data["columns"])
    (out / "results.md").write_text(f"# Evaluation of {result.model}\n\n{table}\n\n{notes}\n")
    paths = {"metrics": out / METRICS_FILE, "table": out / "results.md", "items": out / "items"}
    if chart:
        paths["chart"] = bar_chart(data["rows"], labels, out / "results.png", title=result.model)
    return paths


def bar_chart(rows: list[dict[str, Any]], labels: list[str], path: Path, title: str = "") -> Path:
    """Grouped bars: one group per column (averages included), one bar per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = labels
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(columns) + 2), 4.5))
    for i, row in enumerate(rows):
        values = [_cell(row, c) for c in columns]
        heights = [100 * v if v is not None else 0.0 for v in values]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
        ax.bar(xs, heights, width, label=f"{row['model']} [{row['mode']}]")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Comparing runs


def compare_runs(dirs: list[str | Path], out_dir: str | Path | None = None) -> tuple[str, dict[str, Any]]:
    """A side-by-side markdown table of several evaluation folders with deltas against the first one."""
    runs = []
    for d in dirs:
        path = Path(d) / METRICS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{d} has no {METRICS_FILE}; is it an evaluation output folder?")
        runs.append((Path(d), json.loads(path.read_text())))
    columns: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for d, data in runs:
        for c in data["columns"]:
            columns.setdefault(c["label"], c)
        for row in data["rows"]:
            rows.append({**row, "model": f"{d.name} ({row['model']})" if d.name != row["model"] else d.name,
                         "run": str(d)})
    labels = layout(list(columns.values()))
    base_dir, base = runs[0]
    deltas = []
    notes = []
    for d, data in runs[1:]:
        for row in data["rows"]:
            ref = next((r for r in base["rows"] if r["mode"] == row["mode"] and r["protocol"] == row["protocol"]),
                       None)
            if ref is None:
                notes.append(f"{d.name} [{row['mode']}, {row['protocol']}] has no row of the same mode and protocol "
                             f"in {base_dir.name}: no delta")
                continue
            deltas.append({
                "model": f"Δ {d.name} − {base_dir.name}", "mode": row["mode"], "protocol": row["protocol"],
                "values": {k: _sub(row["values"].get(k), ref["values"].get(k)) for k in columns},
                "averages": {k: _sub(v, ref["averages"].get(k)) for k, v in row["averages"].items()},
                "delta": True,
            })
    protocols = {r["protocol"] for r in rows}
    if len(protocols) > 1:
        notes.append(f"runs use different protocols ({', '.join(sorted(map(str, protocols)))}): numbers from "
                     "different protocols are not comparable")
    all_rows = rows + deltas
    table = markdown_table(all_rows, labels)
    text = table + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")
    summary = {"runs": [str(d) for d, _ in runs], "columns": labels, "rows": rows, "deltas": deltas, "notes": notes}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(f"# Comparison\n\n{text}\n")
        (out / "compare.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        bar_chart(rows, labels, out / "compare.png", title="comparison")
    return text, summary


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None
