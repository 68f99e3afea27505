"""Table-driven verifier tests: every case in tests/assets/verify_cases.jsonl (shared with scripts/bench_verify.py).

Each row has a `kind`:
    verify   verify(pred, gold, answer_type, choices, precision, tolerance) == expected
    extract  extract_answer(response, mode, fallback) == expected
    verdict  parse_verdict(response, verdict_kind, mode) == expected
    score    score(response, sample, cfg).parts["accuracy"] == expected (and the format part, when given)
Non-JSON inputs are encoded as {"$bytes": "..."}; null stands for None.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from spark_vl.config import RewardConfig
from spark_vl.rewards import extract_answer, parse_verdict, score, verify
from spark_vl.types import Sample

CASES_PATH = Path(__file__).resolve().parents[1] / "assets" / "verify_cases.jsonl"


def _decode(value):
    if isinstance(value, dict) and "$bytes" in value:
        return value["$bytes"].encode()
    return value


def load_cases() -> list[dict]:
    rows = [json.loads(line) for line in CASES_PATH.read_text().splitlines() if line.strip()]
    return [{k: _decode(v) for k, v in row.items()} for row in rows]


CASES = load_cases()


def run_case(case: dict):
    """What our verifier answers for one case (the value compared with case["expected"])."""
    kind = case["kind"]
    if kind == "verify":
        return verify(
            case["pred"],
            case["gold"],
            answer_type=case.get("answer_type"),
            choices=case.get("choices"),
            precision=case.get("precision"),
            tolerance=case.get("tolerance"),
        )
    if kind == "extract":
        return extract_answer(case["response"], case.get("mode", "last"), fallback=case.get("fallback", True))
    if kind == "verdict":
        return parse_verdict(case["response"], case["verdict_kind"], mode=case.get("mode", "last"))
    if kind == "score":
        sample = Sample(
            uid=f"case-{case['id']}",
            problem="",
            answer=case["gold"],
            choices=case.get("choices"),
            answer_type=case.get("answer_type"),
            precision=case.get("precision"),
            tolerance=case.get("tolerance"),
        )
        cfg = RewardConfig(extract=case.get("mode", "last"), format=case.get("format", "none"), format_weight=0.5)
        out = score(case["response"], sample, cfg)
        return out
    raise ValueError(f"case {case['id']}: unknown kind {kind!r}")


def _case_id(case: dict) -> str:
    return f"{case['id']}-{case['category']}"


def test_table_is_large_and_covers_every_layer():
    assert len(CASES) >= 300
    categories = Counter(c["category"] for c in CASES)
    for needed in (
        "mcq",
        "mcq_multi",
        "integer",
        "float",
        "fraction",
        "percent",
        "units",
        "degrees",
        "precision",
        "tolerance",
        "scientific",
        "symbolic",
        "equation",
        "interval_set_tuple",
        "text",
        "yes_no",
        "ab",
        "extract",
        "spark_defects",
        "format",
        "bad_input",
        "adversarial",
    ):
        assert categories[needed] >= 3, f"category {needed} has only {categories[needed]} cases"
    expected = Counter(bool(c["expected"]) for c in CASES if c["kind"] == "verify")
    assert expected[True] >= 100 and expected[False] >= 100, f"positives/negatives unbalanced: {expected}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case(case):
    got = run_case(case)
    if case["kind"] == "score":
        assert got.parts["accuracy"] == float(case["expected"]), f"{case} -> {got}"
        if case.get("expected_format") is not None:
            assert got.parts["format"] == case["expected_format"], f"{case} -> {got}"
        assert got.overall == pytest.approx(0.5 * got.parts["accuracy"] + 0.5 * got.parts["format"])
    else:
        assert got == case["expected"], f"{case} -> {got!r}"
