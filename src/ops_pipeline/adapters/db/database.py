"""Engine, migrations and the unit of work.

``Database(url)`` builds nothing at import. SQLite files run in WAL mode with
``synchronous=NORMAL`` (one writer, many short transactions). PostgreSQL URLs may be given as
``postgresql://…``; the psycopg 3 driver is selected. :meth:`Database.transaction` is the unit of
work: it commits on success and rolls back on error; repositories never commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain PostgreSQL URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    """One database: an engine, its migrations, transactions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.engine: Engine = create_engine(self.url, echo=echo, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def redacted_url(self) -> str:
        """The URL with any password hidden (for logs and reports)."""
        return self.engine.url.render_as_string(hide_password=True)

    def alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def upgrade(self) -> None:
        """Apply every migration (``alembic upgrade head``)."""
        command.upgrade(self.alembic_config(), "head")

    def downgrade_to_base(self) -> None:
        command.downgrade(self.alembic_config(), "base")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction, committed when the block ends without error."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 (DBAPI connection)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
