"""Run the paper exchange: in a background thread (tests, embedding) or in the foreground (CLI)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI


class SpeedClock:
    """Market time that starts at ``start`` and runs ``speed`` times faster than the wall clock."""

    def __init__(self, start: dt.datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("SpeedClock needs an aware start time")
        self._start, self._speed, self._wall = start.astimezone(dt.UTC), speed, time.monotonic()

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=(time.monotonic() - self._wall) * self._speed)


@dataclass
class RunningServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` on ``host`` (port 0: any free port) until ``stop()``; returns its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="http-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    return RunningServer(f"http://{bound[0]}:{bound[1]}", server, thread)
