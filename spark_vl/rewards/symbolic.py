"""Symbolic layer: math-verify + sympy in a persistent worker process with a hard, kill-based time limit.

Why a process and not `signal.alarm`: alarms only work in the main thread of the main interpreter, so
math-verify's built-in timeouts raise (or silently return 0) inside trainer threads, Ray actors and
pool workers. Here every comparison is sent to a small worker process (`_symbolic_worker.py`, started
with `subprocess`, so it also works inside daemonic multiprocessing workers); if no reply arrives within
the limit the worker is killed and a fresh one is started at once, so the next call finds it warming up.

One worker per calling process, shared by its threads under a lock (comparisons from two threads take
turns). A process created by `fork` drops the inherited handle and starts its own worker. Start-up (about
one second to import sympy) is waited for separately and does not count against the comparison limit.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("_symbolic_worker.py")
STARTUP_TIMEOUT_S = 60.0  # importing sympy on a loaded machine; only waited for once per worker start
MAX_START_FAILURES = 3


class SymbolicWorker:
    """A handle on one worker process. `compare` never raises and never waits longer than its limit."""

    def __init__(self, startup_timeout_s: float = STARTUP_TIMEOUT_S, script: Path = WORKER_SCRIPT):
        self.startup_timeout_s = startup_timeout_s
        self.script = script
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._buffer = b""
        self._ids = itertools.count()
        self._owner_pid = os.getpid()
        self.timeouts = 0  # comparisons that hit the limit (the worker was killed)
        self.restarts = 0
        self.start_failures = 0  # consecutive failed starts; at MAX_START_FAILURES the layer switches off

    # -- process management ------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-u", str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._ready = False
        self._buffer = b""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._ready = False
        self._buffer = b""
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass  # already gone, or a zombie the OS will reap with us
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the worker now (non-blocking) so that the first comparison does not pay for the imports."""
        with self._lock:
            self._check_fork()
            if not self._alive():
                self._spawn()

    def close(self) -> None:
        with self._lock:
            if os.getpid() == self._owner_pid:
                self._kill()

    def _check_fork(self) -> None:
        if os.getpid() != self._owner_pid:
            # A forked child shares the parent's pipes: forget them without killing the parent's worker.
            self._proc, self._ready, self._buffer = None, False, b""
            self._owner_pid = os.getpid()

    @property
    def disabled(self) -> bool:
        """True after MAX_START_FAILURES failed starts in a row (e.g. math-verify is not installed)."""
        return self.start_failures >= MAX_START_FAILURES

    def _start_failed(self) -> None:
        code = self._proc.poll() if self._proc is not None else None
        self._kill()
        self.start_failures += 1
        if self.disabled:
            logger.error(
                "symbolic verifier worker failed to start %d times (last exit code %s); the symbolic layer is off "
                "and such comparisons score False. Check that math-verify imports: python %s",
                self.start_failures,
                code,
                self.script,
            )
        else:
            logger.warning("symbolic verifier worker failed to start (exit code %s); will retry", code)

    # -- I/O ---------------------------------------------------------------------------------------------------

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, or None on timeout or end of file."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None  # the worker died (crash, memory limit)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._ready:
            line = self._read_line(deadline)
            if line is None:
                return False
            self._ready = b'"ready"' in line
        return True

    def compare(self, pred: str, gold: str, timeout_s: float) -> dict | None:
        """Ask the worker to compare; None when it timed out, crashed or could not start."""
        with self._lock:
            self._check_fork()
            if self.disabled:
                return None
            try:
                if not self._alive():
                    self.restarts += self._proc is not None
                    self._kill()
                    self._spawn()
                if not self._ready and not self._wait_ready():
                    self._start_failed()
                    return None
                self.start_failures = 0
                request_id = next(self._ids)
                payload = json.dumps({"id": request_id, "pred": pred, "gold": gold}) + "\n"
                assert self._proc is not None and self._proc.stdin is not None
                self._proc.stdin.write(payload.encode("ascii"))
                self._proc.stdin.flush()
                deadline = time.monotonic() + timeout_s
                while True:
                    line = self._read_line(deadline)
                    if line is None:
                        self.timeouts += 1
                        self._kill()
                        self._spawn()  # warm up the replacement while the caller moves on
                        return None
                    try:
                        reply = json.loads(line)
                    except ValueError:
                        continue  # not ours (stray output): keep reading until the deadline
                    if isinstance(reply, dict) and reply.get("id") == request_id:
                        return reply
            except (OSError, ValueError) as err:  # broken pipe, bad JSON: treat as a failed comparison
                logger.debug("symbolic worker failed: %s", err)
                self._kill()
                return None


_WORKER = SymbolicWorker()


def _after_fork_in_child() -> None:
    global _WORKER
    _WORKER = SymbolicWorker()  # fresh lock too: the parent's could have been held by another thread


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(lambda: _WORKER.close())


def worker() -> SymbolicWorker:
    """This process's symbolic worker handle."""
    return _WORKER


def symbolic_compare(pred: str, gold: str, timeout_s: float) -> dict | None:
    """math-verify comparison of two answer strings under a hard limit; None on timeout or failure.

    The reply holds "equal" (math-verify's verdict), "gold_ok" (the gold parsed) and, for real numbers,
    "gold_value"/"pred_value" as [kind, text] with kind "rational", "float" or "irrational".
    """
    return _WORKER.compare(pred, gold, timeout_s)
