"""What every command shares: the console, failing with one line, opening the database, logs, paths.

Errors a user can fix (a bad option, URL, file or configuration) print one line naming the problem
and exit 2; nothing a user has is changed before every input was checked.
"""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler
from rich.table import Table

from ops_pipeline import logs
from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.errors import DatabaseError

PIPED_WIDTH = 160
"""Columns of output that goes to a file or a pipe (no terminal to measure): wide enough for the
report's tables; cells wrap rather than being cut."""


class AdaptiveConsole(Console):
    """A console measured when it prints, not when it is made: ``COLUMNS`` if set, else the
    terminal's width, else :data:`PIPED_WIDTH` (output to a file or a pipe)."""

    @property
    def size(self) -> ConsoleDimensions:
        measured = super().size
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return ConsoleDimensions(int(columns), measured.height)
        return measured if self.is_terminal else ConsoleDimensions(PIPED_WIDTH, measured.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = AdaptiveConsole()


def table(title: str | None, *columns: str | tuple[str, bool]) -> Table:
    """A Rich table whose cells wrap (``fold``) rather than being cut to ``…``. A column is a header,
    or ``(header, True)`` to right-align it."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        header, right = (col, False) if isinstance(col, str) else col
        t.add_column(header, justify="right" if right else "left", overflow="fold")
    return t


DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", envvar="OPS_PIPELINE_DATABASE_URL",
    help="SQLAlchemy URL: sqlite:///PATH or postgresql://user@host/db (default: a SQLite file in .ops-pipeline/).")]
ConfigDir = Annotated[Path | None, typer.Option(
    "--config-dir", envvar="OPS_PIPELINE_CONFIG_DIR",
    help="Folder with accounts.toml and parameters/ (default: the user configuration folder if it exists, "
         "else the shipped configuration).")]


def work_dir() -> Path:
    """Where the default database, the paper exchange's state and the logs live: ``.ops-pipeline/``
    in the working directory (``OPS_PIPELINE_HOME`` overrides)."""
    return Path(os.environ.get("OPS_PIPELINE_HOME") or ".ops-pipeline")


def logs_dir() -> Path:
    """``.ops-pipeline/logs`` (under ``OPS_PIPELINE_HOME`` when set): one file per account, the
    supervisor's and the signal engine's."""
    return work_dir() / "logs"


class LogFormatChoice(str, Enum):
    text = "text"
    json = "json"


LogFormat = Annotated[LogFormatChoice, typer.Option("--log-format", envvar="OPS_PIPELINE_LOG_FORMAT",
                                                 help="Log lines as text or as JSON objects.")]


def default_database() -> Path:
    return work_dir() / "ops-pipeline.db"


def default_data_dir() -> Path:
    """``$OPS_PIPELINE_DATA_DIR``, else ``../shared/data`` beside the working directory or the checkout."""
    if env := os.environ.get("OPS_PIPELINE_DATA_DIR"):
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on one line (markup off: the message is literal) and return the exit."""
    console.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def open_database(url: str | None, *, default: Path, read_only: bool = False, migrate: bool = False) -> Database:
    """The database of ``url`` (else the SQLite file ``default``), checked by opening it.

    ``read_only``: nothing is created or changed (a missing file is an error). ``migrate``: apply
    the migrations (creating the default file's folder if needed).

    Raises:
        typer.Exit: exit 2 with one line naming the problem.
    """
    if url is None and not read_only:
        default.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = Database(url or sqlite_url(default), read_only=read_only)
        db.check()
        if migrate:
            db.upgrade()
    except DatabaseError as exc:
        raise fail(str(exc)) from None
    return db


def setup_logging(log_file: Path, log_format: str = "text", console_errors: bool = True) -> None:
    """Everything at INFO and above to ``log_file`` (appended, rotated; ``text`` or ``json`` lines);
    errors to the console too unless ``console_errors`` is off (a worker whose output is a protocol)."""
    handlers = [RichHandler(console=console, level=logging.ERROR, show_path=False, markup=False)] if console_errors else []
    try:
        logs.configure(log_file, *handlers, log_format=log_format)
    except OSError as exc:
        raise fail(f"cannot write the log {log_file}: {exc.strerror or exc}") from None
