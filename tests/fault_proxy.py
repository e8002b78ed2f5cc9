"""A fault-injecting HTTP proxy on 127.0.0.1, put between ops-pipeline and the paper exchange.

Every request is forwarded to the upstream as it came; a :class:`Fault` armed for a method and path
replaces what the client sees:

- ``answer_before``: answer ``status`` without forwarding (the request never reached the exchange);
- ``answer_after``: forward (the exchange acts on it), then answer ``status`` instead of its answer;
- ``hold``: forward, then hold the answer until the test releases it (longer than a client timeout);
- ``kill_after``: forward, then SIGKILL the process ``pid`` before it gets the answer;
- ``kill_before``: SIGKILL the process ``pid`` while its request is in flight, never forwarded.

``method="*"`` matches every method; ``skip=N`` lets the first N matching requests through.

Every request is logged as (method, path, status seen by the client).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


@dataclass
class Fault:
    """One fault on requests whose method and path (no query) match; applied ``times`` times."""

    method: str
    path: str
    action: str
    status: int = 500
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    """Set when the fault is applied (a test waits on it instead of sleeping)."""
    skip: int = 0
    key: str | None = None
    """Only requests made with this API key (``APCA-API-KEY-ID``): one account's calls."""
    hold_secs: float = 60.0
    hits: int = 0
    seen: int = 0

    def matches(self, method: str, path: str, key: str | None = None) -> bool:
        if self.hits >= self.times or self.method not in ("*", method) or re.fullmatch(self.path, path) is None:
            return False
        if self.key is not None and key != self.key:
            return False
        self.seen += 1
        return self.seen > self.skip


class FaultProxy:
    """Start with :meth:`start`; arm faults with :meth:`arm`; :attr:`log` lists what clients saw."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int | None]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def arm(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.release.set()
            self.faults.clear()

    def requests(self, method: str, path: str) -> list[int | None]:
        """Statuses clients saw for requests matching ``method`` and ``path`` (a regex)."""
        return [s for m, p, s in self.log if m == method and re.fullmatch(path, p)]

    def _take(self, method: str, path: str, key: str | None = None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, key):
                    fault.hits += 1
                    fault.entered.set()
                    return fault
        return None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                path = urlsplit(self.path).path
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._take(self.command, path, self.headers.get("APCA-API-KEY-ID"))
                if fault is not None and fault.action == "kill_before":
                    assert fault.pid is not None
                    os.kill(fault.pid, signal.SIGKILL)
                    proxy.log.append((self.command, path, None))
                    self.close_connection = True
                    return None
                if fault is not None and fault.action == "answer_before":
                    return self._answer(fault.status, b'{"code":50000000,"message":"injected"}', fault.headers, path)
                status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                if fault is None:
                    return self._answer(status, payload, headers, path)
                if fault.action == "answer_after":
                    return self._answer(fault.status, b"upstream timed out", fault.headers, path)
                if fault.action == "hold":
                    fault.release.wait(timeout=fault.hold_secs)
                    return self._answer(status, payload, headers, path)
                if fault.action == "kill_after":
                    assert fault.pid is not None
                    os.kill(fault.pid, signal.SIGKILL)
                    proxy.log.append((self.command, path, None))
                    self.close_connection = True
                    return None
                raise AssertionError(f"unknown fault action {fault.action}")

            def _answer(self, status: int, payload: bytes, headers: dict[str, str], path: str) -> None:
                proxy.log.append((self.command, path, status))
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, target, body=body or None,
                         headers={k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
