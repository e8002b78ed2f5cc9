"""Reads remembered inside one unit of work (:meth:`Database.unit_of_work`), for the replay.

A replay holds every account's run lock for its whole length and is the only writer of its
database, inside one connection: what a run read from an account's tables stays true until a
write to those tables. :class:`ReadCache` keeps each read with the *generation* of the tables it
read — one counter per (account, table), bumped by every write the repositories announce — and
serves it again while none of them changed. Shared tables (recommendations, the account registry)
count under the account ``None``.

Nothing can forget to invalidate: every INSERT, UPDATE or DELETE that reaches the connection
without being announced (a statement written outside the repositories) bumps its table for every
account. Live runs never have a cache: each run takes the lock afresh, and another process may
have written in between, so they read the database every time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, event

T = TypeVar("T")
CACHE_KEY = "ops_pipeline.read_cache"
"""Where a unit of work's cache hangs on its connection (``Connection.info``)."""
ALL = "*"
"""The account under which an unannounced write is counted: it changes every account's reads."""


class ReadCache:
    """Reads keyed by what was asked, each stamped with the generations of the tables it read."""

    def __init__(self) -> None:
        self._generations: dict[tuple[str | None, str], int] = {}
        self._entries: dict[Hashable, tuple[tuple[int, ...], Any]] = {}
        self._tagged: dict[str, dict[Hashable, tuple[tuple[str | None, str], ...]]] = {}
        self._announced = 0
        self._silent = 0
        self._unannounced = False
        """Whether any write was counted for every account (:data:`ALL`): stamps then add its counts."""
        self.hits = 0
        self.misses = 0

    def _stamp(self, tables: Iterable[tuple[str | None, str]]) -> tuple[int, ...]:
        gens = self._generations
        if not self._unannounced:  # the usual case: no write has counted for every account
            return tuple([gens.get(t, 0) for t in tables])
        return tuple([gens.get(t, 0) + gens.get((ALL, t[1]), 0) for t in tables])

    def get(self, key: Hashable, tables: tuple[tuple[str | None, str], ...], load: Callable[[], T],
            tag: str | None = None) -> T:
        """The value of ``load()`` remembered under ``key``, read again if any of ``tables``
        (``(account_name or None, table name)``) was written since. ``tag`` files the key among
        the reads of its kind (:meth:`tagged`), for a writer that patches all of them."""
        if tag is not None:
            self._tagged.setdefault(tag, {})[key] = tables
        stamp = self._stamp(tables)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            self.hits += 1
            return entry[1]
        self.misses += 1
        value = load()
        self._entries[key] = (stamp, value)
        return value

    def wrote(self, account_name: str | None, table: str) -> None:
        """``table``'s rows of ``account_name`` (``None``: a shared table; :data:`ALL`: any) changed."""
        if self._silent:
            return
        key = (account_name, table)
        self._generations[key] = self._generations.get(key, 0) + 1
        if account_name == ALL:
            self._unannounced = True

    def wrote_and_patch(self, key: Hashable, tables: tuple[tuple[str | None, str], ...],
                        written: tuple[str | None, str], patch: Callable[[Any], Any]) -> None:
        """Count a write to ``written`` and, if the read under ``key`` (which depends on ``tables``)
        was current until now, keep it as ``patch(value)`` — the caller's exact account of what the
        write changed — instead of reading it again. Other reads of ``written`` are dropped as usual."""
        self.wrote_and_patch_all(written, [(key, tables, patch)])

    def wrote_and_patch_all(self, written: tuple[str | None, str],
                            patches: list[tuple[Hashable, tuple[tuple[str | None, str], ...], Callable[[Any], Any]]]) -> None:
        """:meth:`wrote_and_patch` of one write for several reads ``(key, tables, patch)``."""
        current = []
        for key, tables, patch in patches:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == self._stamp(tables):
                current.append((key, tables, patch, entry[1]))
        self.wrote(*written)
        for key, tables, patch, value in current:
            self._entries[key] = (self._stamp(tables), patch(value))

    def tagged(self, tag: str) -> list[tuple[Hashable, tuple[tuple[str | None, str], ...]]]:
        """The keys (with their tables) of the current reads remembered with ``tag``. A read that
        is no longer current never will be again (generations only grow): it is forgotten here, so
        the list stays as short as the reads in use."""
        keys = self._tagged.get(tag, {})
        for key, tables in list(keys.items()):
            entry = self._entries.get(key)
            if entry is None or entry[0] != self._stamp(tables):
                del keys[key]
                self._entries.pop(key, None)
        return list(keys.items())

    @contextmanager
    def silenced(self):  # noqa: ANN201 - a context manager
        """Around writes the caller has already counted (a flush of what was written behind)."""
        self._silent += 1
        self._announced += 1
        try:
            yield
        finally:
            self._silent -= 1
            self._announced -= 1

    @contextmanager
    def announced(self, account_name: str | None, table: str):  # noqa: ANN201 - a context manager
        """Around one write whose account and table the caller names."""
        self.wrote(account_name, table)
        self._announced += 1
        try:
            yield
        finally:
            self._announced -= 1

    def watch(self, conn: Connection) -> None:
        """Count every write on ``conn`` that was not announced as a write to every account."""

        def before_cursor_execute(_conn, _cursor, statement, _params, context, _many) -> None:  # noqa: ANN001
            if self._announced:
                return
            compiled = getattr(context, "compiled", None)
            clause = getattr(compiled, "statement", None)
            if getattr(clause, "is_dml", False):
                table = getattr(getattr(clause, "table", None), "name", None)
                if table is not None:
                    self.wrote(ALL, table)
                    return
            elif getattr(clause, "is_select", False) or not _may_write(statement):
                return
            self.forget()  # SQL text that may write, or DML on no single table: nothing read stands

        # Cursor level: statements sent with exec_driver_sql() included (they skip before_execute).
        event.listen(conn, "before_cursor_execute", before_cursor_execute)

    def forget(self) -> None:
        """Drop every remembered read."""
        self._entries.clear()


def _may_write(statement: str) -> bool:
    """Whether SQL text could change rows: anything but SELECT (without INTO), SHOW, PRAGMA, EXPLAIN,
    SET and transaction control."""
    text = statement.lstrip().lower()
    if text.startswith(("show", "pragma", "explain", "set ", "begin", "commit", "rollback", "savepoint", "release")):
        return False
    return not (text.startswith("select") and " into " not in text)


def cache_of(conn: Connection) -> ReadCache | None:
    """The unit of work's cache on ``conn``, or None outside one (live runs)."""
    return conn.info.get(CACHE_KEY)


def announce(conn: Connection, account_name: str | None, table: str):  # noqa: ANN201 - a context manager
    """Announce one write to ``table`` for ``account_name`` (``None``: shared) on ``conn``."""
    cache = cache_of(conn)
    return cache.announced(account_name, table) if cache is not None else _nothing()


@contextmanager
def _nothing():  # noqa: ANN202
    yield
