"""The worker side of ``ops-pipeline start`` (see :mod:`ops_pipeline.services.supervisor`).

A worker reads one JSON request per line on stdin (``{"minute": "…"}``), does one run, and
answers one JSON line on stdout: ``{"event": "done", "minute", "status", "error", "wall_secs", …}``.
It says ``{"event": "ready"}`` once its services are built, or ``{"event": "failed", "error"}`` and
exits 2 if they cannot be. End of stdin (the supervisor stopping, or dead) ends it.

Only the protocol writes to the real stdout: file descriptor 1 is pointed at stderr, so nothing
printed by a library can corrupt an answer. SIGTERM while a run is going lets the run finish,
then exits; SIGINT is ignored (the supervisor decides when a worker stops).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import IO, Any

EXIT_CANNOT_START = 2


class Protocol:
    """The worker's private channel to the supervisor."""

    def __init__(self) -> None:
        self._out: IO[str] = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, **event: Any) -> None:
        self._out.write(json.dumps(event, default=str) + "\n")
        self._out.flush()


def serve(protocol: Protocol, run: Callable[[], dict[str, Any]], stdin: IO[str] | None = None) -> None:
    """Answer run requests until stdin ends. ``run()`` does one run and returns what to report."""
    busy = False
    stop_after_run = False

    def on_term(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        nonlocal stop_after_run
        if not busy:
            raise SystemExit(0)
        stop_after_run = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol.send(event="ready", pid=os.getpid())
    for line in stdin or sys.stdin:
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            continue
        busy = True
        started = time.monotonic()
        try:
            report = run()
        finally:
            busy = False
        protocol.send(event="done", minute=request.get("minute"), wall_secs=round(time.monotonic() - started, 3), **report)
        if stop_after_run:
            return
