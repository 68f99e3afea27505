"""Symbolic comparison worker: runs math-verify + sympy in its own process, one JSON request per line.

Started by `spark_vl.rewards.symbolic` as `python _symbolic_worker.py` (a plain script, so it never imports
the spark_vl package or torch). The parent enforces the time limit by killing this process, which works
from any thread and any process; math-verify's own signal-based timeouts are therefore switched off here.

Protocol (stdin -> stdout, ASCII JSON lines):
    -> {"id": 7, "pred": "\\\\frac{\\\\sqrt{2}}{2}", "gold": "0.7071"}
    <- {"id": 7, "equal": false, "gold_ok": true, "gold_value": ["irrational", "0.7071..."], "pred_value": ...}
The first line written is {"ready": true} once the imports are done.
"""

from __future__ import annotations

import os
import sys

# Running this file as a script puts its folder first on sys.path, where our module names could shadow
# the standard library for sympy's imports; the worker needs nothing from this folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import json  # noqa: E402
import logging  # noqa: E402

_MEMORY_LIMIT_BYTES = 4 * 1024**3  # sympy can allocate without bound on 9^(9^(9^9)); fail with MemoryError instead


def _limit_memory() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, _MEMORY_LIMIT_BYTES)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass  # not available on this platform; the parent's kill still bounds the time


def _load():
    """Import math-verify and build the extraction configs once."""
    logging.disable(logging.WARNING)  # math-verify warns that its timeouts are off: we enforce ours
    import sympy
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # math-verify's default normalisation (units, malformed operators like \sqrt2, nits); boxes first.
    gold_cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    pred_cfg = gold_cfg
    return sympy, parse, verify, gold_cfg, pred_cfg


def _numeric_value(sympy, expr) -> list[str] | None:
    """["rational", "p/q"] | ["float", "1.25"] | ["irrational", "<30 digits>"] for a real number, else None."""
    if not isinstance(expr, sympy.Basic) or not getattr(expr, "is_number", False):
        return None
    if isinstance(expr, (sympy.Set, sympy.logic.boolalg.Boolean)) or expr.has(sympy.Symbol):
        return None
    if isinstance(expr, sympy.Rational):
        return ["rational", f"{expr.p}/{expr.q}"]
    if isinstance(expr, sympy.Float):
        return ["float", str(expr)]
    value = sympy.N(expr, 30)
    if not (value.is_real and value.is_finite):
        return None
    return ["irrational", str(value)]


def compare(loaded, pred: str, gold: str) -> dict:
    """math-verify's verdict plus both numeric values (when real numbers), for the parent's rounding rules."""
    sympy, parse, verify, gold_cfg, pred_cfg = loaded
    gold_parsed = parse("\\boxed{" + gold + "}", extraction_config=gold_cfg, parsing_timeout=None)
    if not gold_parsed or not isinstance(gold_parsed[0], sympy.Basic | sympy.MatrixBase):
        return {"equal": False, "gold_ok": False}
    pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=pred_cfg, parsing_timeout=None)
    if not pred_parsed:
        return {"equal": False, "gold_ok": True}
    equal = bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    return {
        "equal": equal,
        "gold_ok": True,
        "gold_value": _numeric_value(sympy, gold_parsed[0]),
        "pred_value": _numeric_value(sympy, pred_parsed[0]),
    }


def _protocol_stream():
    """Keep the real stdout for replies and send anything a library prints to stderr instead."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="ascii")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


def main() -> None:
    out = _protocol_stream()
    _limit_memory()
    sys.setrecursionlimit(3000)
    loaded = _load()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        reply = {"id": request.get("id")}
        try:
            reply.update(compare(loaded, str(request["pred"]), str(request["gold"])))
        except (Exception, MemoryError, RecursionError) as err:  # any failure is "not equal", never a crash
            reply.update({"equal": False, "gold_ok": True, "error": type(err).__name__})
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
