"""Reads remembered inside one unit of work (:meth:`Database.unit_of_work`), for the replay.

A replay holds every account's run lock for its whole length and is the only writer of its
database, inside one connection: what a run read from an account's tables stays true until a
write to those tables. :class:`ReadCache` files each read under the (account, table) pairs it
read and drops it at the first write the repositories announce to one of them; until then it
serves it again. Shared tables (recommendations, the account registry) count under the account
``None``.

Nothing can forget to invalidate: every INSERT, UPDATE or DELETE that reaches the connection
without being announced (a statement written outside the repositories) bumps its table for every
account. Live runs never have a cache: each run takes the lock afresh, and another process may
have written in between, so they read the database every time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, event

T = TypeVar("T")
CACHE_KEY = "ops_pipeline.read_cache"
"""Where a unit of work's cache hangs on its connection (``Connection.info``)."""
MISSING = object()
"""What :meth:`ReadCache.lookup` returns for a read not remembered."""
ALL = "*"
"""The account under which an unannounced write is counted: it changes every account's reads."""


class ReadCache:
    """Reads keyed by what was asked, each dropped as soon as a table it read is written.

    Each remembered read is filed under the (account, table) pairs it read, and under
    ``(ALL, table)`` for each; a write to a pair drops the reads filed under it. A read is current
    exactly while it is remembered, so answering it costs one dictionary look-up (a replay asks
    about twenty per account run)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, Any] = {}
        self._readers: dict[tuple[str | None, str], set[Hashable]] = {}
        """(account or None or ALL, table) → keys of the reads filed under it (some maybe dropped)."""
        self._tagged: dict[str, dict[Hashable, tuple[tuple[str | None, str], ...]]] = {}
        self._writes = 0
        """Counted writes so far: a read during which one was counted is not remembered."""
        self._announced = 0
        self._silent = 0
        self.hits = 0
        self.misses = 0

    def _remember(self, key: Hashable, tables: tuple[tuple[str | None, str], ...], value: Any) -> None:  # noqa: ANN401
        self._entries[key] = value
        readers = self._readers
        for table in tables:
            for pair in (table, (ALL, table[1])):
                found = readers.get(pair)
                if found is None:
                    readers[pair] = {key}
                else:
                    found.add(key)

    def lookup(self, key: Hashable) -> Any:  # noqa: ANN401
        """The read remembered under ``key`` (a hit), or :data:`MISSING`."""
        value = self._entries.get(key, MISSING)
        if value is not MISSING:
            self.hits += 1
        return value

    def get(self, key: Hashable, tables: tuple[tuple[str | None, str], ...], load: Callable[[], T],
            tag: str | None = None) -> T:
        """The value of ``load()`` remembered under ``key``, read again if any of ``tables``
        (``(account_name or None, table name)``) was written since. ``tag`` files the key among
        the reads of its kind (:meth:`tagged`), for a writer that patches all of them."""
        if tag is not None:
            self._tagged.setdefault(tag, {})[key] = tables
        entries = self._entries
        if key in entries:
            self.hits += 1
            return entries[key]
        self.misses += 1
        writes = self._writes
        value = load()
        if self._writes == writes:
            self._remember(key, tables, value)
        return value

    def wrote(self, account_name: str | None, table: str) -> None:
        """``table``'s rows of ``account_name`` (``None``: a shared table; :data:`ALL`: any) changed."""
        if self._silent:
            return
        self._writes += 1
        keys = self._readers.pop((account_name, table), None)
        if keys:
            entries = self._entries
            for key in keys:
                entries.pop(key, None)

    def wrote_and_patch(self, key: Hashable, tables: tuple[tuple[str | None, str], ...],
                        written: tuple[str | None, str], patch: Callable[[Any], Any]) -> None:
        """Count a write to ``written`` and, if the read under ``key`` (which depends on ``tables``)
        was current until now, keep it as ``patch(value)`` — the caller's exact account of what the
        write changed — instead of reading it again. Other reads of ``written`` are dropped as usual."""
        self.wrote_and_patch_all(written, [(key, tables, patch)])

    def wrote_and_patch_all(self, written: tuple[str | None, str],
                            patches: list[tuple[Hashable, tuple[tuple[str | None, str], ...], Callable[[Any], Any]]]) -> None:
        """:meth:`wrote_and_patch` of one write for several reads ``(key, tables, patch)``."""
        entries = self._entries
        current = [(key, tables, patch, entries[key]) for key, tables, patch in patches if key in entries]
        self.wrote(*written)
        for key, tables, patch, value in current:
            self._remember(key, tables, patch(value))

    def tagged(self, tag: str) -> list[tuple[Hashable, tuple[tuple[str | None, str], ...]]]:
        """The keys (with their tables) of the current reads remembered with ``tag``. A read that
        is no longer current is forgotten here, so the list stays as short as the reads in use."""
        keys = self._tagged.get(tag, {})
        for key in [key for key in keys if key not in self._entries]:
            del keys[key]
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
        self._writes += 1
        self._entries.clear()
        self._readers.clear()


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
