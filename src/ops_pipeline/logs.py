"""Log files: appended, rotated by size, one line per event with its account and run id.

Several processes may write one file (two runs of an account that meet at its lock, a replay and a
report…): each line is appended whole, and rotation happens under an ``flock`` on a companion
``.lock`` file; a process whose file was rotated by another reopens the new one before writing.
A line reads ``2026-11-21 14:03:07,123 INFO tiny-1k dispatcher-tiny-1k-20260316T143100
ops_pipeline.dispatcher message``; a traceback is folded onto the same line (``\\n`` for newlines).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import logging.handlers
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ops_pipeline.services.runs import RunContextFilter

LINE_FORMAT = "%(asctime)s %(levelname)s %(account_name)s %(run_id)s %(name)s %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
QUIET = ("alembic", "botocore", "boto3", "urllib3", "uvicorn.access", "httpx")


class OneLineFormatter(logging.Formatter):
    """One line per record: newlines in the message or its traceback become a literal ``\\n``."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", "\\n")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line (``--log-format json``): time (ISO, UTC), level, account, run_id,
    logger, message and, for an error, its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "account": getattr(record, "account_name", "-"),
            "run_id": getattr(record, "run_id", "-"), "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """``text`` (one line, :data:`LINE_FORMAT`) or ``json``."""
    if log_format == "json":
        return JsonLineFormatter()
    if log_format == "text":
        return OneLineFormatter(LINE_FORMAT)
    raise ValueError(f"log format must be text or json, not {log_format!r}")


def account_log_file(logs_dir: Path, tier: str) -> Path:
    """Seed 002 "Separate Log Groups": ``dispatcher.log`` for the large tier, ``dispatcher-{tier}.log``
    for the others (``/ecs/ops-pipeline/dispatcher``, ``/ecs/ops-pipeline/dispatcher-tiny`` on AWS)."""
    return logs_dir / ("dispatcher.log" if tier == "large" else f"dispatcher-{tier}.log")


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Append and rotate by size, safely when several processes write the same file.

    Each record is written under an exclusive ``flock`` of ``{file}.lock`` (kept open per
    process: a forked child opens its own, since it would share its parent's lock otherwise),
    after following a rotation another process made and rotating if the record would pass
    ``max_bytes``; the record is formatted once."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, mode="a", maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._lock_path = f"{self.baseFilename}.lock"
        self._lock_fd: int | None = None
        self._lock_pid = 0

    def _process_lock_fd(self) -> int:
        """This process's descriptor of the lock file. A forked child inherits its parent's, which
        shares the parent's lock (flock locks belong to the open file, not the process): it opens
        its own, and closes the inherited copy, which would otherwise keep a dead parent's lock."""
        pid = os.getpid()
        if self._lock_fd is None or self._lock_pid != pid:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            self._lock_fd, self._lock_pid = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644), pid
        return self._lock_fd

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        fd = self._process_lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _reopen_if_rotated(self) -> bool:
        """Another process renamed the file under us: write to the new one at the same path.
        Returns whether the path is a regular file (only those rotate, as in the standard library)."""
        try:
            current = os.stat(self.baseFilename)
        except FileNotFoundError:
            current = None
        if self.stream is not None:
            mine = os.fstat(self.stream.fileno())
            if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                self.stream.close()
                self.stream = self._open()
        else:
            self.stream = self._open()
        return current is None or stat.S_ISREG(current.st_mode)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            with self._file_lock():
                regular = self._reopen_if_rotated()
                if regular and self.maxBytes > 0 and self.stream.seek(0, 2) + len(line) >= self.maxBytes:
                    self.doRollover()
                    if self.stream is None:
                        self.stream = self._open()
                self.stream.write(line)
                self.stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)

    def close(self) -> None:
        try:
            if self._lock_fd is not None and self._lock_pid == os.getpid():
                os.close(self._lock_fd)
            self._lock_fd = None
        finally:
            super().close()


def file_handler(path: Path, level: int = logging.INFO, log_format: str = "text") -> logging.Handler:
    """A shared rotating handler on ``path`` with the one-line (or JSON) format and run context."""
    handler = SharedRotatingFileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RunContextFilter())
    return handler


def stream_handler(stream: TextIO, level: int = logging.INFO, log_format: str = "text") -> logging.Handler:
    """Log lines to ``stream`` (an ECS task's stdout, which the ``awslogs`` driver sends to the
    account's CloudWatch log group), in the same one-line (or JSON) format as the files; pass it
    to :func:`configure`, which adds the run context."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
    handler.setFormatter(formatter(log_format))
    return handler


def configure(log_file: Path | None, *extra: logging.Handler, log_format: str = "text") -> None:
    """Root logging: INFO and up to ``log_file`` (appended; ``None``: no file), plus ``extra``
    handlers (a console, stdout)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    if log_file is not None:
        root.addHandler(file_handler(log_file, log_format=log_format))
    for handler in extra:
        handler.addFilter(RunContextFilter())
        root.addHandler(handler)
    for name in QUIET:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
