"""We-Math (We-Math/We-Math, testmini): plain accuracy plus the four-dimensional strict and loose scores.

Rows share an `ID` within one problem group; `key` says which part a row is: `2steps_1`, `2steps_2`,
`2steps_multi`, `3steps_1` ... `3steps_multi`. Each composite (`Nsteps_multi`) is judged together with its
one-step sub-problems (testmini: 360 two-step + 165 three-step groups = 525 composites, 1,740 rows):

    IK  composite wrong, at least one sub-problem wrong      (Insufficient Knowledge)
    IG  composite wrong, every sub-problem right             (Inadequate Generalisation)
    CM  composite right, strict: every sub right; loose: at least one sub right   (Complete Mastery)
    RM  composite right, strict: some sub wrong;  loose: every sub wrong          (Rote Memorisation)

    score = (N - 0.5 * IG - RM - IK) / N   (= (CM + 0.5 * IG) / N), N = complete composite groups.

Groups missing a part (e.g. under `--limit`) are left out of the four-dimensional score and counted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from spark_vl.data.rows import RowContext, image_refs, require
from spark_vl.eval.benchmarks.base import Benchmark, accuracy_metrics
from spark_vl.eval.protocols import EvalProtocol
from spark_vl.eval.records import ItemRecord
from spark_vl.eval.scoring import Score, extract, letters_or_option
from spark_vl.rewards.choices import gold_letters
from spark_vl.types import Sample

_KEY_RE = re.compile(r"^(\d+)steps?_(\d+|multi)$")
_OPTION_RE = re.compile(r"([A-H])\s*[.:：]\s*(.*?)\s*(?=(?:;|；)\s*[A-H]\s*[.:：]|$)", re.DOTALL)


def parse_option_string(option: str) -> list[str] | None:
    """"A. 1; B. 2; C. 3" -> ["1", "2", "3"]; None when the letters are not A, B, C ... in order."""
    found = _OPTION_RE.findall(option or "")
    if not found or [letter for letter, _ in found] != [chr(ord("A") + i) for i in range(len(found))]:
        return None
    return [text.strip() for _, text in found]


def _convert(row: dict[str, Any], ctx: RowContext) -> Sample:
    group = str(require(row, "ID"))
    key = str(row.get("key") or "")
    uid = f"{group}:{key or 'q'}"
    option = str(row.get("option") or "")
    question = str(require(row, "question"))
    if option:
        question += "\nOptions: " + option
    m = _KEY_RE.match(key)
    meta = {
        "key": key,
        "group": group,
        "steps": int(m.group(1)) if m else 1,
        "part": m.group(2) if m else "",
        "knowledge concept": row.get("knowledge concept"),
        "question number": row.get("question number"),
    }
    return Sample(
        uid=uid,
        problem=question,
        answer=str(require(row, "answer")).strip(),
        images=image_refs(row, "image_path", "image"),
        choices=parse_option_string(option),
        answer_type="mcq_letter",
        source="wemath",
        category=str(row.get("knowledge concept") or ""),
        group_key=f"{meta['steps']}steps:{group}",
        meta=meta,
    )


def _official(sample: Sample, response: str | None, protocol: EvalProtocol) -> Score:
    pred = extract(response, protocol)
    if pred is None:
        return Score(False, None, "no_answer", "extraction")
    found = letters_or_option(pred, sample.choices)
    return Score(found is not None and found == gold_letters(sample.answer, sample.choices), pred, "ok", "letter")


def four_dimensional(records: list[ItemRecord]) -> dict[str, Any]:
    """IK/IG/CM/RM counts and the strict and loose scores over complete composite groups."""
    groups: dict[str, dict[str, bool]] = defaultdict(dict)
    steps_of: dict[str, int] = {}
    for r in records:
        meta = r.sample.get("meta") or {}
        if not meta.get("part"):
            continue
        gk = r.sample.get("group_key") or f"{meta.get('steps')}steps:{meta.get('group')}"
        groups[gk][str(meta["part"])] = r.correct
        steps_of[gk] = int(meta.get("steps") or 1)
    counts = {"IK": 0, "IG": 0, "CM_strict": 0, "RM_strict": 0, "CM_loose": 0, "RM_loose": 0}
    complete = incomplete = 0
    for gk, parts in groups.items():
        subs = [parts.get(str(i)) for i in range(1, steps_of[gk] + 1)]
        if "multi" not in parts or any(s is None for s in subs):
            incomplete += 1
            continue
        complete += 1
        if not parts["multi"]:
            counts["IK" if not all(subs) else "IG"] += 1
            continue
        counts["CM_strict" if all(subs) else "RM_strict"] += 1
        counts["CM_loose" if any(subs) else "RM_loose"] += 1
    n = complete
    out: dict[str, Any] = {"composites": n, "incomplete_groups": incomplete, **counts}
    for mode in ("strict", "loose"):
        out[f"score_{mode}"] = (n - 0.5 * counts["IG"] - counts[f"RM_{mode}"] - counts["IK"]) / n if n else None
    return out


def _metrics(records: list[ItemRecord], protocol: EvalProtocol) -> dict[str, Any]:
    out = accuracy_metrics(records, ("knowledge concept",))

    def acc(keep) -> float | None:
        chosen = [r.correct for r in records if keep(r.sample.get("meta") or {})]
        return sum(chosen) / len(chosen) if chosen else None

    out["one_step_accuracy"] = acc(lambda m: m.get("part") not in ("multi", ""))
    out["two_step_accuracy"] = acc(lambda m: m.get("part") == "multi" and m.get("steps") == 2)
    out["three_step_accuracy"] = acc(lambda m: m.get("part") == "multi" and m.get("steps") == 3)
    out.update(four_dimensional(records))
    return out


WEMATH = Benchmark(
    name="wemath",
    label="WeMath",
    group="math",
    convert=_convert,
    hub_id="We-Math/We-Math",
    splits=("testmini",),
    official=_official,
    aggregate=_metrics,
    columns=lambda p: [("WeMath", "score_strict")] if p.scorer == "official" else [("WeMath", "accuracy")],
    notes="testmini (1,740 rows, 525 composites); spark headline = plain accuracy (as SPARK), official headline = "
    "strict four-dimensional score; both scores, IK/IG/CM/RM and one/two/three-step accuracies always reported",
)
