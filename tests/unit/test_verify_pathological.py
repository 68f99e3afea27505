"""Pathological inputs: huge, deeply nested, broken or non-string answers are False (None for verdicts), fast.

Also checks the properties the trainer relies on: the hard time limit works from threads and from daemonic
pool workers (where signal-based timeouts fail), the worker restarts after a kill, an unparsable gold is
logged once per sample, and score_batch's pool survives across calls.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spark_vl.config import RewardConfig
from spark_vl.rewards import extract_answer, parse_verdict, score, score_batch, verify
from spark_vl.rewards.score import _POOL, close_pool
from spark_vl.rewards.symbolic import symbolic_compare, worker
from spark_vl.types import Sample

LIMIT_S = 2.0  # RewardConfig.timeout_s default
SLACK_S = 1.5  # process scheduling on a loaded 2-core box


@pytest.fixture(scope="module", autouse=True)
def warm_worker():
    """Start the symbolic worker once, so the timings below measure comparisons, not the sympy import."""
    assert symbolic_compare("1", "1", 60.0) is not None
    yield


def _timed(fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


BROKEN_LATEX = [
    "\\frac{1}{",
    "\\frac{",
    "\\sqrt{",
    "\\left( 1",
    "$$$$",
    "\\begin{matrix} 1 &",
    "}{}{",
    "\\frac{1}{2",
    "^^^^",
    "\\\\\\\\",
    "\\boxed{\\frac{1}{2}",
    "{{{{1",
    "1}}}}",
    "\\frac\\frac\\frac",
    "\\sqrt[",
    "x^{",
    "\\text{",
    "\\int_0^",
    "\\lim_{x \\to",
    "\\",
]

PATHOLOGICAL_RESPONSES = {
    "200k chars": "step " * 40_000,
    "200k chars then a wrong box": "x" * 200_000 + "\\boxed{6}",
    "power tower": "so \\boxed{9^{9^{9^{9}}}}",
    "10k nested braces": "\\boxed{" + "{" * 10_000 + "5" + "}" * 10_000 + "}",
    "10k open braces": "\\boxed{" + "{" * 10_000,
    "10k close braces": "}" * 10_000 + "\\boxed{}",
    "30k unclosed boxes": "\\boxed{" * 30_000,
    "many boxes": "\\boxed{1}" * 20_000,
    "many answer tags": "<answer>" * 20_000,
    "unicode soup": "\u2212\u221e\u03c0\u00b0\u200b\ud7ff" * 10_000,
    "nul bytes": "\x00" * 10_000 + "\\boxed{\x00}",
    "empty": "",
    "whitespace": " \n\t" * 1000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL_RESPONSES))
def test_pathological_response_scores_zero_within_limit(name):
    response = PATHOLOGICAL_RESPONSES[name]
    sample = Sample(uid=f"patho-{name}", problem="", answer="5")
    out, seconds = _timed(score, response, sample, RewardConfig(timeout_s=LIMIT_S))
    assert out.parts["accuracy"] == 0.0
    assert seconds < LIMIT_S + SLACK_S, f"{name} took {seconds:.2f}s"
    _, seconds = _timed(extract_answer, response)
    assert seconds < 1.0


@pytest.mark.parametrize("broken", BROKEN_LATEX)
def test_broken_latex_is_false_within_limit(broken):
    for pred, gold in ((broken, "1"), ("1", broken), (broken, broken), (broken, "x^2")):
        result, seconds = _timed(verify, pred, gold, timeout_s=LIMIT_S)
        assert result is False or pred == gold, (pred, gold)
        assert seconds < LIMIT_S + SLACK_S, f"{pred!r} vs {gold!r} took {seconds:.2f}s"


def test_identical_broken_gold_is_still_false():
    assert verify("\\frac{1}{", "\\frac{1}{") is False
    assert verify("\\sqrt{", "\\sqrt{") is False


@pytest.mark.parametrize("bad", [None, b"5", 5, 5.0, ["5"], {"a": 5}, object()])
def test_non_string_inputs_are_false_or_none(bad):
    assert verify(bad, "5") is False
    assert verify("5", bad) is False
    assert extract_answer(bad) is None
    assert parse_verdict(bad, "yes_no") is None
    assert parse_verdict(bad, "ab") is None
    out = score(bad, Sample(uid="bad-input", problem="", answer="5"), RewardConfig())
    assert out.overall == 0.0 and out.extracted is None


def test_unknown_verdict_kind_is_none():
    assert parse_verdict("\\boxed{Yes}", "maybe") is None  # type: ignore[arg-type]


def test_power_tower_is_refused_before_sympy():
    result, seconds = _timed(verify, "9^{9^{9^{9}}}", "5")
    assert result is False and seconds < 0.5


def test_hard_limit_kills_and_restarts_the_worker():
    """Bypass the tower guard: the worker must be killed at the limit and a fresh one must answer next."""
    before = worker().timeouts
    reply, seconds = _timed(symbolic_compare, "9^{9^{9^{9}}}", "5", 1.0)
    assert reply is None
    assert 0.9 < seconds < 1.0 + SLACK_S
    assert worker().timeouts == before + 1
    reply = symbolic_compare("\\sqrt{4}", "2", 60.0)  # the replacement may still be importing sympy
    assert reply is not None and reply["equal"] is True


def test_symbolic_limit_works_from_threads():
    """math-verify's signal.alarm timeouts fail off the main thread; ours must not."""
    pairs = [("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"), ("x^2+2x+1", "(x+1)^2"), ("2\\pi", "6.28")] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda pg: verify(pg[0], pg[1]), pairs))
    assert all(results)


def _verify_in_child(pair: tuple[str, str]) -> bool:
    return verify(pair[0], pair[1])


def test_symbolic_limit_works_in_daemonic_pool_workers():
    """multiprocessing.Pool workers are daemonic and cannot start multiprocessing children; subprocess works."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_verify_in_child, [("\\sqrt{8}", "2\\sqrt{2}"), ("x+1", "1+x"), ("\\sqrt{8}", "3")])
    assert results == [True, True, False]


def test_fast_path_does_not_import_sympy():
    """Number and choice answers are decided without sympy (checked in a fresh interpreter)."""
    code = (
        "import sys\n"
        "from spark_vl.rewards import verify, score_batch\n"
        "from spark_vl.rewards.verify import check\n"
        "cases = [('1,000', '1000'), ('50%', '0.5'), ('(B)', 'B'), ('\\\\frac{3}{4}', '0.75'),\n"
        "         ('30^\\\\circ', '30'), ('A, C', 'A, C'), ('7', '8'), ('x = 5', '5'), ('5 cm', '5'),\n"
        "         ('Yes', 'Yes')]\n"
        "layers = {check(p, g).layer for p, g in cases}\n"
        "assert 'symbolic' not in layers, layers\n"
        "assert 'sympy' not in sys.modules and 'math_verify' not in sys.modules\n"
        "print('ok')\n"
    )
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_unparsable_gold_is_logged_once_per_uid(caplog):
    cfg = RewardConfig()
    broken = Sample(uid="broken-gold-uid-1", problem="", answer="\\frac{1}{", answer_type="expression")
    other = Sample(uid="broken-gold-uid-2", problem="", answer="\\frac{1}{", answer_type="expression")
    with caplog.at_level(logging.WARNING, logger="spark_vl.rewards"):
        for _ in range(3):
            assert score("\\boxed{1}", broken, cfg).overall == 0.0
        assert score("\\boxed{1}", other, cfg).overall == 0.0
        assert verify("1", "E", answer_type="mcq_letter", choices=["1", "2"]) is False
        assert verify("1", "E", answer_type="mcq_letter", choices=["1", "2"]) is False
        yes_no = Sample(uid="broken-verdict-uid", problem="", answer="Perhaps", answer_type="yes_no")
        assert score("\\boxed{Yes}", yes_no, cfg).overall == 0.0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("broken-gold-uid-1" in m for m in messages) == 1
    assert sum("broken-gold-uid-2" in m for m in messages) == 1
    assert sum("'E'" in m for m in messages) == 1
    assert sum("broken-verdict-uid" in m for m in messages) == 1


def test_score_batch_pool_persists_and_matches_in_process():
    cfg_pool = RewardConfig(num_workers=2, timeout_s=LIMIT_S)
    cfg_local = RewardConfig(num_workers=0, timeout_s=LIMIT_S)
    samples = [
        Sample(uid="p1", problem="", answer="5"),
        Sample(uid="p2", problem="", answer="\\frac{\\sqrt{3}}{2}"),
        Sample(uid="p3", problem="", answer="Yes", answer_type="yes_no"),
        Sample(uid="p4", problem="", answer="B", choices=["1", "2", "3"]),
        Sample(uid="p5", problem="", answer="5"),
    ] * 4
    responses = ["\\boxed{5}", "\\boxed{\\frac{1}{2}\\sqrt{3}}", "\\box{yes}", "(B)", "\\boxed{9^{9^{9^{9}}}}"] * 4
    try:
        first = score_batch(responses, samples, cfg_pool)
        pids = set(_POOL.get(2)._processes)  # noqa: SLF001 - the test checks that the pool is reused
        second = score_batch(responses, samples, cfg_pool)
        assert set(_POOL.get(2)._processes) == pids  # noqa: SLF001
        local = score_batch(responses, samples, cfg_local)
    finally:
        close_pool()
    assert [o.overall for o in first] == [o.overall for o in second] == [o.overall for o in local]
    assert [o.overall for o in local] == [1.0, 1.0, 1.0, 1.0, 0.0] * 4
    assert [o.extracted for o in first] == [o.extracted for o in local]


def test_score_batch_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 responses but 1 samples"):
        score_batch(["a", "b"], [Sample(uid="x", problem="", answer="1")], RewardConfig())


def test_worker_that_cannot_start_switches_the_symbolic_layer_off(tmp_path, caplog):
    """E.g. math-verify missing: a few quick failures, one error, then no more start attempts."""
    from spark_vl.rewards.symbolic import MAX_START_FAILURES, SymbolicWorker

    broken = tmp_path / "broken_worker.py"
    broken.write_text("import sys\nprint('noise')\nsys.exit(3)\n")
    handle = SymbolicWorker(startup_timeout_s=10.0, script=broken)
    with caplog.at_level(logging.WARNING, logger="spark_vl.rewards.symbolic"):
        for _ in range(MAX_START_FAILURES):
            assert handle.compare("1", "1", 1.0) is None
        assert handle.disabled
        reply, seconds = _timed(handle.compare, "1", "1", 1.0)
    assert reply is None and seconds < 0.01
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 1
