"""Engine, migrations, the unit of work, and the per-account run lock.

``Database(url)`` builds nothing at import and checks the URL at once: only SQLite
(``sqlite:///PATH``) and PostgreSQL (``postgresql://…``, driven by psycopg 3) are accepted; anything
else is a :class:`~ops_pipeline.errors.DatabaseError` naming it.

Transactions (:meth:`Database.transaction`) commit on success and roll back on error; repositories
never commit. On SQLite a transaction starts with ``BEGIN IMMEDIATE``: it takes
the write lock up front and waits for it (``busy_timeout``), so two processes writing one file
queue instead of failing on a stale read snapshot. :meth:`Database.read` starts a plain deferred
transaction for read-only work. SQLite files run in WAL mode with ``synchronous=NORMAL``.

:meth:`Database.unit_of_work` is the replay's: one connection and one transaction that every
``transaction()`` and ``read()`` of the thread joins, committed by :meth:`UnitOfWork.commit` (once
per replayed session), with a :class:`~ops_pipeline.adapters.db.cache.ReadCache` of what the runs
read. Live runs never use one: they keep their commit before every order.

``read_only=True`` opens SQLite with ``mode=ro`` (the file must exist and is never created or
changed) and PostgreSQL with ``default_transaction_read_only``: what ``report`` uses.

:meth:`Database.account_lock` is held for the whole of one account's run (SPEC "One account, one
run at a time"): a PostgreSQL advisory lock, or on SQLite an ``flock`` on a file beside the
database; both are released by the operating system or the server when the process dies. It is
re-entrant within one thread (the replay takes every account's lock once, for its whole length).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Connection, Engine, Table, bindparam, create_engine, event, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ops_pipeline.adapters.db.cache import CACHE_KEY, ReadCache, cache_of
from ops_pipeline.adapters.db.scope import ROW_ACCOUNT, prepared, reads_of, update_by_row_account
from ops_pipeline.adapters.db.tables import (
    POSITION_MARK_COLUMNS,
    UTCDateTime,
    account_equity_snapshots,
    active_positions,
    dispatch_decisions,
    dispatch_executions,
    dispatch_runs,
    recommendations,
)
from ops_pipeline.errors import DatabaseError, RunInProgress

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_SECS = 30.0
LOCK_POLL_SECS = 0.1
_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()
SUPPORTED = "SQLite (sqlite:///PATH) or PostgreSQL (postgresql://user@host/dbname)"


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain PostgreSQL URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a PostgreSQL advisory lock on ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


MIGRATION_LOCK = lock_key("ops-pipeline:migrations")
"""Advisory lock key the migrations take, so two first runs on a new database do not race."""


def parse_database_url(url: str) -> URL:
    """Check ``url`` names a database ops-pipeline runs on.

    Raises:
        DatabaseError: not a URL, or not SQLite / PostgreSQL (the URL is named, password hidden).
    """
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r}; expected {SUPPORTED}") from None
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise DatabaseError(f"unsupported database {backend!r} in {parsed.render_as_string(hide_password=True)}; "
                            f"ops-pipeline runs on {SUPPORTED}")
    if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


WRITE_BEHIND_KEY = "ops_pipeline.write_behind"
"""Where a unit of work's write-behind buffer hangs on its connection (``Connection.info``)."""


class WriteBehind:
    """Rows the runs write and do not read back, kept in memory and inserted in batches: each run's
    ``dispatch_runs`` row (its start and its end become one INSERT) and each equity snapshot. They
    are inserted, in the order written, before any statement that could see them, and at every
    commit.

    Only for a unit of work on a database that had no run and no snapshot when it began: the
    buffer then knows every run id and snapshot key there is, and decides conflicts (a second run
    in the same second, a second snapshot at the same time) as ``ON CONFLICT DO NOTHING`` would.

    Marks to market too (``current_price``, ``unrealized_pnl``, ``marked_at`` of open positions,
    written by every position-manager run): a position's newest mark replaces the one before, and
    they are written as one UPDATE for every account before any SELECT that may read a mark column,
    before any write to ``active_positions``, before SQL text and at every commit. Nothing can read
    a position's mark without seeing the newest: the reads the repositories remember are patched
    with it (:meth:`~ops_pipeline.adapters.db.cache.ReadCache.wrote_and_patch`), and every other
    read goes to the database after the flush.

    Decisions too, on a database that had none when the unit began (``decisions=True``): a claim
    waits here, takes its decision (:meth:`update_decision`), and both become one INSERT, in the
    order written, before any SELECT that may read ``dispatch_decisions``.

    What flushes: a commit; SQL text; an INSERT, UPDATE or DELETE of runs or snapshots (everything);
    an UPDATE or DELETE of ``active_positions`` (the marks, so a close's ``unrealized_pnl = NULL``
    lands after them); DML of ``dispatch_decisions`` (the decisions); for runs and snapshots, the repository methods that
    read them (every account-scoped read is a repository method, see
    :mod:`~ops_pipeline.adapters.db.scope`); for marks and decisions, any SELECT except the
    statements built once (:func:`~ops_pipeline.adapters.db.scope.prepared`) that name no mark
    column, or no ``dispatch_decisions``, anywhere (:func:`~ops_pipeline.adapters.db.scope.reads_of`).
    """

    BUFFERED = (dispatch_runs, account_equity_snapshots)
    TABLES = frozenset(t.name for t in BUFFERED) | {active_positions.name, dispatch_decisions.name}

    def __init__(self, *, decisions: bool = False) -> None:
        self.pending: list[tuple[str, dict]] = []
        self.runs: dict[str, dict] = {}
        self.run_ids: set[str] = set()
        self.snapshot_keys: set[tuple[str, object]] = set()
        self.marks: dict[tuple[str, int], dict] = {}
        """(account, position id) → the columns of its newest mark."""
        self.buffers_decisions = decisions
        """Whether decisions are buffered: only on a database that had none when the unit began."""
        self.decisions: dict[tuple[int, str], dict] = {}
        """(recommendation id, account) → a decision not yet inserted, in the order written."""
        self.decided: set[tuple[int, str]] = set()
        """Every (recommendation id, account) decided in this unit: the unique key's conflicts."""

    def add_decision(self, row: dict) -> bool:
        """Buffer a new decision row; False if the account has one on that recommendation (as
        ``ON CONFLICT DO NOTHING`` on the unique key would decide)."""
        key = (row["recommendation_id"], row["account_name"])
        if key in self.decided:
            return False
        self.decided.add(key)
        self.decisions[key] = row
        return True

    def update_decision(self, recommendation_id: int, account_name: str, values: dict) -> bool:
        """Put ``values`` into a decision still buffered; False if it was inserted already."""
        row = self.decisions.get((recommendation_id, account_name))
        if row is None:
            return False
        row.update(values)
        return True

    def mark(self, account_name: str, position_id: int, values: dict) -> None:
        """Buffer one position's mark (a later one for the same position replaces what it sets)."""
        self.marks.setdefault((account_name, position_id), {}).update(values)

    def start_run(self, row: dict) -> bool:
        """Buffer a run's start; False if its id exists (the caller tries the next suffix)."""
        if row["run_id"] in self.run_ids:
            return False
        self.run_ids.add(row["run_id"])
        self.runs[row["run_id"]] = row
        self.pending.append((dispatch_runs.name, row))
        return True

    def finish_run(self, run_id: str, values: dict) -> bool:
        """Put a buffered run's end into its row; False if the row was flushed already."""
        row = self.runs.get(run_id)
        if row is None:
            return False
        row.update(values)
        return True

    def snapshot(self, row: dict) -> None:
        key = (row["account_name"], row["taken_at"])
        if key not in self.snapshot_keys:
            self.snapshot_keys.add(key)
            self.pending.append((account_equity_snapshots.name, row))

    def flush(self, conn: Connection) -> None:
        """Insert every buffered row, table by table in the order written (executemany per set of
        columns), then write the marks."""
        self.flush_marks(conn)
        self.flush_decisions(conn)
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.runs.clear()
        cache = cache_of(conn)
        with cache.silenced() if cache is not None else nullcontext():  # counted when buffered
            for table in self.BUFFERED:
                _insert_in_order(conn, table, [row for name, row in pending if name == table.name])

    def flush_decisions(self, conn: Connection) -> None:
        """Insert the buffered decisions in the order they were written (their ids as if each had
        been inserted at once). They were counted by the read cache when buffered."""
        if not self.decisions:
            return
        rows, self.decisions = list(self.decisions.values()), {}
        cache = cache_of(conn)
        with cache.silenced() if cache is not None else nullcontext():
            _insert_in_order(conn, dispatch_decisions, rows)

    def flush_marks(self, conn: Connection) -> None:
        """Write the buffered marks: per set of columns, one executemany UPDATE by account and id
        (every account's marks in one statement). They were counted by the read cache when
        buffered, so writing them invalidates nothing."""
        if not self.marks:
            return
        marks, self.marks = self.marks, {}
        groups: dict[tuple[str, ...], list[dict]] = {}
        for (account, position_id), values in marks.items():
            columns = tuple(sorted(values))
            groups.setdefault(columns, []).append(
                {ROW_ACCOUNT: account, "_id": position_id, **{f"_v_{c}": values[c] for c in columns}})
        cache = cache_of(conn)
        with cache.silenced() if cache is not None else nullcontext():
            for columns, rows in groups.items():
                _execute_many(conn, ("marks", columns), lambda columns=columns: prepared(("marks", columns), lambda: (
                    update_by_row_account(active_positions).where(active_positions.c.id == bindparam("_id"))
                    .values({c: bindparam(f"_v_{c}") for c in columns}))), rows)


def _insert_in_order(conn: Connection, table: Table, rows: list[dict]) -> None:
    """INSERT ``rows`` in their order: one executemany per run of rows with the same columns."""
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end].keys() == rows[start].keys():
            end += 1
        _insert_many(conn, table, rows[start:end])
        start = end


class _DriverPlan(NamedTuple):
    """A statement as the driver runs it: its SQL, its parameters' names in order, and those that
    go through a bind processor: ``(position, processor, memo key or None)`` (:func:`_memo_key`);
    ``memos``: per processed parameter, converted values by memo key, kept across executions (a
    replay's run rows repeat a few hundred instants and summaries per session)."""

    sql: str
    names: tuple[str, ...]
    processed: tuple[tuple[int, Any, Any], ...]
    memos: list[dict[Any, Any]]


MEMO_SIZE = 4096
"""Converted values a plan keeps per parameter; a full memo starts again empty."""


_DRIVER_PLANS: weakref.WeakKeyDictionary[Any, dict[tuple[Hashable, ...], _DriverPlan | None]] = weakref.WeakKeyDictionary()
"""Per dialect (an engine's own: its options decide the SQL and the processors), a statement's key
→ its :class:`_DriverPlan`, or None where it is not run on the driver (:func:`_execute_many`)."""


def _insert_many(conn: Connection, table: Table, rows: list[dict]) -> None:
    """One executemany INSERT of ``rows`` (same columns), :func:`_execute_many`'s way unless a
    column left out has a Python-side default (SQLAlchemy fills it in)."""
    keys = tuple(rows[0])
    _execute_many(conn, ("insert", table, keys), lambda: table.insert(), rows, column_keys=keys,
                  on_driver=not any(c.default is not None and c.key not in keys for c in table.c))


def _execute_many(conn: Connection, key: tuple[Hashable, ...], build: Callable[[], Any], rows: list[dict], *,
                  column_keys: tuple[str, ...] | None = None, on_driver: bool = True) -> None:
    """Execute the statement ``build()`` makes (built and compiled once per ``key`` and dialect)
    once per row of ``rows`` (parameter name → value, the same names in every row). On SQLite
    (qmark parameters) straight on the driver's executemany, each value through the bind
    processor SQLAlchemy would apply to its parameter (``type.dialect_impl(dialect).bind_processor``):
    the same values stored, without SQLAlchemy's per-row bookkeeping (a replay writes about 240,000
    run and snapshot rows and every held position's marks this way). Elsewhere ``conn.execute``."""
    plan = _driver_plan(conn.dialect, key, build, column_keys, on_driver)
    if plan is None:
        conn.execute(build(), rows)
        return
    conn.exec_driver_sql(plan.sql, [_bound(plan, row, plan.memos) for row in rows])


def execute_first(conn: Connection, table: Table, key: tuple[Hashable, ...], build: Callable[[], Any],
                  values: dict[str, Any]) -> Any:  # noqa: ANN401 - a Row or None
    """The first row of the statement ``build()`` makes (an INSERT … RETURNING on ``table``, built
    and compiled once per ``key``, dialect and parameter names) executed with ``values``. On
    SQLite straight on the driver, as :func:`_execute_many` (a replay writes every recommendation
    this way): the row comes back as the driver gives it, so its columns must be read raw (their
    type ``NullType``, as SQLAlchemy would then give them too). ``table`` must not be one the
    write-behind buffers (:attr:`WriteBehind.TABLES`): nothing is flushed before it."""
    assert table.name not in WriteBehind.TABLES
    plan = _driver_plan(conn.dialect, (*key, tuple(values)), build, tuple(values), True)
    if plan is None:
        return conn.execute(build(), values).first()
    raw = conn._conn if isinstance(conn, _FlushingConnection) else conn
    parameters = _bound(plan, values, plan.memos)
    try:
        keys, rows = _on_cursor(raw, plan.sql, parameters)
    except raw.dialect.loaded_dbapi.Error:
        return raw.exec_driver_sql(plan.sql, parameters).first()  # raises it as SQLAlchemy does
    return IteratorResult(SimpleResultMetaData(keys), iter(rows)).first()


def _on_cursor(conn: Connection, sql: str, parameters: tuple) -> tuple[list[str], list[tuple]]:
    """Execute ``sql`` on a cursor of ``conn``'s driver connection; its column names and rows. Cursor
    events fire as for any statement (the context None, as SQLAlchemy documents it may be); the
    transaction is begun first if none is (as SQLAlchemy's autobegin would). A driver error is
    raised as the driver's."""
    if not conn.in_transaction():
        conn.begin()
    cursor = conn.connection.driver_connection.cursor()
    events = conn._has_events or conn.engine._has_events
    if events:
        conn.dispatch.before_cursor_execute(conn, cursor, sql, parameters, None, False)
    try:
        rows = cursor.execute(sql, parameters).fetchall()
        keys = [d[0] for d in cursor.description or ()]
    finally:
        cursor.close()
    if events:
        conn.dispatch.after_cursor_execute(conn, cursor, sql, parameters, None, False)
    return keys, rows


def _plans_of(dialect: Any) -> dict[tuple[Hashable, ...], Any]:  # noqa: ANN401 - a Dialect
    """``dialect``'s plans in :data:`_DRIVER_PLANS` (made empty the first time)."""
    plans = _DRIVER_PLANS.get(dialect)
    if plans is None:
        plans = _DRIVER_PLANS[dialect] = {}
    return plans


def _bind_processor(bind: Any, dialect: Any) -> Callable[[Any], Any] | None:  # noqa: ANN401 - a BindParameter, a Dialect
    """The processor SQLAlchemy applies to ``bind``'s value on ``dialect`` (None: sent as it is)."""
    return bind.type.dialect_impl(dialect).bind_processor(dialect)


def _driver_plan(dialect: Any, key: tuple[Hashable, ...], build: Callable[[], Any],  # noqa: ANN401 - a Dialect
                 column_keys: tuple[str, ...] | None, on_driver: bool) -> _DriverPlan | None:
    """The statement's SQL and parameters for the driver (see :data:`_DRIVER_PLANS`), made once."""
    plans = _plans_of(dialect)
    if key not in plans:
        plan = None
        if on_driver and dialect.name == "sqlite" and dialect.paramstyle == "qmark":
            compiled = build().compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
            assert compiled.positiontup is not None
            binds = [compiled.binds[name] for name in compiled.positiontup]
            processors = [_bind_processor(bind, dialect) for bind in binds]
            processed = tuple((i, process, _memo_key(bind.type))
                              for i, (bind, process) in enumerate(zip(binds, processors, strict=True)) if process is not None)
            plan = _DriverPlan(compiled.string, tuple(bind.key for bind in binds), processed, [{} for _ in processed])
        plans[key] = plan
    return plans[key]


def _bound(plan: _DriverPlan, row: dict[str, Any], memos: list[dict[Any, Any]]) -> tuple:
    """``row``'s values in the SQL's parameter order, each through its bind processor (a value with
    a memo key converted once per ``memos``, one memo per processed parameter)."""
    values = [row[name] for name in plan.names]
    for (i, process, memo_key), memo in zip(plan.processed, memos, strict=True):
        value = values[i]
        found = None if memo_key is None else memo_key(value)
        if found is None:
            values[i] = process(value)
            continue
        done = memo.get(found)
        if done is None:
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            done = memo[found] = process(value)
        values[i] = done
    return tuple(values)


def _memo_key(column_type: Any) -> Callable[[Any], Hashable | None] | None:  # noqa: ANN401 - a SQLAlchemy type
    """For a column whose bind processor is slow and often sees one value many times in a batch, a
    key under which its converted value is reused (the key None: convert this one). A time
    converts by its instant alone (SQLAlchemy's conversion costs about 5 µs; a batch's rows share a
    few minutes), so a UTC time is its own key: equal UTC times are one instant. A JSON value (a
    run's summary: most runs of a replay have the same) by :func:`_json_key`."""
    if isinstance(column_type, UTCDateTime):
        return lambda value: value if getattr(value, "tzinfo", None) is dt.UTC else None
    if isinstance(column_type, JSON):
        return _json_key
    return None


_JSON_SCALARS = (str, int, bool, type(None))


def _json_key(value: Any) -> Hashable | None:  # noqa: ANN401
    """A key equal for two values only if ``json.dumps`` writes them alike: dicts with text keys (in
    their order) and lists of such values, text, integers, booleans and None, each with its type
    (``True`` and ``1`` are equal in Python, not in JSON); None (convert it) for anything else."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return (kind, value)
    if kind is dict:
        items = []
        for key, item in value.items():
            found = _json_key(item)
            if found is None or type(key) is not str:
                return None
            items.append((key, found))
        return (dict, tuple(items))
    if kind is list:
        found = tuple(_json_key(item) for item in value)
        return None if None in found else (list, found)
    return None


class _ReadPlan(NamedTuple):
    """A SELECT built once (:func:`~ops_pipeline.adapters.db.scope.prepared`) as the driver runs it:
    its SQL; per parameter in order, ``(name, bind processor, constant)``, the constant being what
    is sent when the call does not give ``name`` (the parameter's own value, processed once, or
    ``_NOT_GIVEN`` where the call must give it); the rows' keys and each column's result processor,
    as SQLAlchemy would apply them."""

    sql: str
    params: tuple[tuple[str, Any, Any], ...]
    metadata: SimpleResultMetaData


_NOT_GIVEN = object()


def _read_plan(dialect: Any, statement: Any) -> _ReadPlan | None:  # noqa: ANN401 - a Dialect, a Select
    """``statement``'s :class:`_ReadPlan` on SQLite (qmark), made once per dialect; None where
    SQLAlchemy runs it: a statement not built by ``prepared`` (built anew each time: its plan could
    not be kept), one with an expanding, literal or computed parameter, any other dialect."""
    plans = _plans_of(dialect)
    key = ("read", id(statement))
    if key in plans:
        return plans[key]  # type: ignore[return-value]
    plan = None
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark" and reads_of(statement) is not None:
        compiled = statement.compile(dialect=dialect)
        binds = [compiled.binds[name] for name in compiled.positiontup or ()]
        simple = not any(b.expanding or b.literal_execute or b.callable is not None for b in binds)
        if simple and not compiled.literal_execute_params and not compiled.post_compile_params:
            params = []
            for bind in binds:
                process = _bind_processor(bind, dialect)
                value = bind.effective_value
                params.append((bind.key, process, _NOT_GIVEN if bind.required else
                               (process(value) if process is not None and value is not None else value)))
            columns = compiled._result_columns  # (keyname, name, objects, type), as CursorResult reads them
            plan = _ReadPlan(compiled.string, tuple(params), SimpleResultMetaData([c[0] for c in columns], _processors=[
                                 c[3]._cached_result_processor(dialect, None) for c in columns]))
    plans[key] = plan
    return plan


def _read_on_driver(conn: Connection, plan: _ReadPlan, statement: Any, given: dict[str, Any] | None) -> Any:  # noqa: ANN401
    """Run a planned SELECT on the driver's cursor (:func:`_on_cursor`) and return its rows as a
    SQLAlchemy ``Result``: ``Row`` objects made with the same keys and result processors, so read
    exactly as ``conn.execute`` would give them. A driver error, or a parameter the call must give
    and did not, goes back to ``conn.execute``, which raises it as SQLAlchemy does. A unit of work's
    connection (:class:`_FlushingConnection`) reads its planned statements this way: about 6 µs a
    read against 27 µs through ``conn.execute``."""
    given = given or {}
    values = []
    for name, process, constant in plan.params:
        value = given.get(name, constant)
        if value is _NOT_GIVEN:
            return conn.execute(statement, given)
        if name in given and process is not None and value is not None:
            value = process(value)
        values.append(value)
    try:
        _, rows = _on_cursor(conn, plan.sql, tuple(values))
    except conn.dialect.loaded_dbapi.Error:
        return conn.execute(statement, given)
    return IteratorResult(plan.metadata, iter(rows))


_MARKED = frozenset(f"{active_positions.name}.{c}" for c in POSITION_MARK_COLUMNS)


class _FlushingConnection:
    """The unit of work's connection as the blocks see it: a statement that may touch the
    write-behind buffer's tables flushes it first (see :class:`WriteBehind`)."""

    def __init__(self, conn: Connection, buffer: WriteBehind) -> None:
        self._conn = conn
        self._buffer = buffer
        self.info = conn.info
        """The connection's (the DBAPI connection's, for its life): where the read cache hangs,
        read before every remembered read."""

    def execute(self, statement, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - Connection.execute
        buffer = self._buffer
        if buffer.pending or buffer.marks or buffer.decisions:
            if getattr(statement, "is_dml", False):
                table = getattr(getattr(statement, "table", None), "name", None)
                if table == active_positions.name:
                    if not statement.is_insert:  # a new row has no mark waiting; a close's NULLs land after one
                        buffer.flush_marks(self._conn)
                elif table == dispatch_decisions.name:
                    buffer.flush_decisions(self._conn)
                elif table in WriteBehind.TABLES:
                    buffer.flush(self._conn)
            elif getattr(statement, "is_select", False):
                # A read that may see a mark or a decision sees every mark and decision first.
                # Only the statements built once (scope.prepared) say what they read; any other
                # read flushes both.
                reads = reads_of(statement)
                if reads is None or not reads.columns.isdisjoint(_MARKED):
                    buffer.flush_marks(self._conn)
                if reads is None or dispatch_decisions.name in reads.tables:
                    buffer.flush_decisions(self._conn)
            else:  # SQL text, or anything else
                buffer.flush(self._conn)
        if not kwargs and len(args) <= 1 and getattr(statement, "is_select", False):
            plan = _read_plan(self._conn.dialect, statement)
            if plan is not None:
                return _read_on_driver(self._conn, plan, statement, args[0] if args else None)
        return self._conn.execute(statement, *args, **kwargs)

    def exec_driver_sql(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self._buffer.flush(self._conn)
        return self._conn.exec_driver_sql(*args, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204 - the rest is the Connection's
        return getattr(self._conn, name)


class _InUnit:
    """A :meth:`Database.transaction` or :meth:`Database.read` block inside a unit of work: its
    connection; with ``poisons``, an error leaving the block fails the unit (a class, not a
    generator: the services open a dozen such blocks per run)."""

    __slots__ = ("_poisons", "_uow")

    def __init__(self, uow: UnitOfWork, *, poisons: bool) -> None:
        self._uow = uow
        self._poisons = poisons

    def __enter__(self) -> Connection:
        return self._uow.handle  # type: ignore[return-value]

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None and self._poisons:
            self._uow.failed = exc


class UnitOfWork:
    """One connection and one open transaction shared by a thread's ``transaction()`` and ``read()``
    blocks (:meth:`Database.unit_of_work`).

    A block that raises poisons it: its writes cannot be undone alone, so the whole unit is rolled
    back when it ends and any later block raises :class:`~ops_pipeline.errors.DatabaseError`.
    """

    def __init__(self, conn: Connection, write_behind: WriteBehind | None = None) -> None:
        self.conn = conn
        self.cache = ReadCache()
        self.failed: BaseException | None = None
        self.commits = 0
        self.write_behind = write_behind
        self.handle = conn if write_behind is None else _FlushingConnection(conn, write_behind)
        """What ``transaction()`` and ``read()`` yield."""

    def commit(self) -> None:
        """Commit what the blocks wrote since the last commit; the next statement begins anew.

        Raises:
            DatabaseError: a block failed since the unit of work began.
        """
        self._check()
        if self.write_behind is not None:
            self.write_behind.flush(self.conn)
        self.conn.commit()
        self.commits += 1

    PLANNED_TABLES = (recommendations, dispatch_decisions, dispatch_executions, active_positions)
    """The tables whose statistics the claim and exposure queries are planned from."""

    def refresh_statistics(self) -> None:
        """Commit, then on PostgreSQL ``ANALYZE`` the :data:`PLANNED_TABLES`; nothing on SQLite.

        PostgreSQL plans from table statistics, and a replay fills a fresh database faster than
        autovacuum's analyze follows it: planned as if ``dispatch_decisions`` were empty, the claim's
        NOT EXISTS becomes a nested loop over every decision the account ever made (about 1 ms a
        query after one day, growing with each). The replay calls this at the close of sessions 1,
        2, 4, 8, …: each time its tables have about doubled. In between, the planner scales the
        analyzed row counts by each table's current size in pages, so the estimates stay near.
        """
        self.commit()
        if self.conn.dialect.name == "postgresql":
            cache = self.cache
            with cache.silenced():  # statistics change no row: every remembered read stands
                self.conn.exec_driver_sql(f"ANALYZE {', '.join(t.name for t in self.PLANNED_TABLES)}")
            self.conn.commit()

    def _check(self) -> None:
        if self.failed is not None:
            raise DatabaseError(f"the unit of work was rolled back after an error: {self.failed!r}")


class Database:
    """One database: an engine, its migrations, transactions, per-account locks.

    Raises:
        DatabaseError: the URL is malformed or unsupported; with ``read_only``, a SQLite file that
            does not exist (it is not created); a SQLite file whose folder does not exist.
    """

    def __init__(self, url: str, *, echo: bool = False, read_only: bool = False) -> None:
        parsed = parse_database_url(url)
        self._shown_url = parsed.render_as_string(hide_password=True)
        self.read_only = read_only
        self.sqlite_path: Path | None = None
        connect_args: dict[str, object] = {}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                self.sqlite_path = Path(database)
                if read_only and not self.sqlite_path.is_file():
                    raise DatabaseError(f"no database at {self.sqlite_path}")
                if not self.sqlite_path.parent.is_dir():
                    raise DatabaseError(f"cannot create database {self.sqlite_path}: "
                                        f"folder {self.sqlite_path.parent} does not exist")
                if read_only:
                    parsed = parsed.set(database=f"file:{self.sqlite_path.resolve()}?mode=ro", query={"uri": "true"})
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_SECS
        elif read_only:
            connect_args["options"] = "-c default_transaction_read_only=on"
        self.url = parsed.render_as_string(hide_password=False)
        try:
            self.engine: Engine = create_engine(parsed, echo=echo, connect_args=connect_args)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise DatabaseError(f"cannot use {self.redacted_url()}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", self._sqlite_connect)
            event.listen(self.engine, "begin", self._sqlite_begin)
        self._reader = self.engine.execution_options(ops_read_only=True)
        self._local = threading.local()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def redacted_url(self) -> str:
        """The URL as given, with any password hidden (for logs and reports)."""
        return self._shown_url

    def check(self) -> None:
        """Open a connection once, so a bad path, a refused connection or a wrong password fails here.

        Raises:
            DatabaseError: naming the database and the driver's one-line reason.
        """
        try:
            with self.read() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise DatabaseError(f"cannot open {self.redacted_url()}: {_reason(exc)}") from None

    def alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def upgrade(self) -> None:
        """Apply every migration (``alembic upgrade head``) under the migration lock.

        Raises:
            DatabaseError: the database cannot be opened or written (read-only, refused…).
        """
        if self.read_only:
            raise DatabaseError(f"{self.redacted_url()} is opened read-only; it cannot be migrated")
        try:
            command.upgrade(self.alembic_config(), "head")
        except DBAPIError as exc:
            raise DatabaseError(f"cannot migrate {self.redacted_url()}: {_reason(exc)}") from None

    def downgrade_to_base(self) -> None:
        command.downgrade(self.alembic_config(), "base")

    def transaction(self) -> AbstractContextManager[Connection]:
        """A connection inside one transaction, committed when the block ends without error
        (``BEGIN IMMEDIATE`` on SQLite: the write lock is taken first). Inside this thread's
        :meth:`unit_of_work`, its connection: committed with the unit, and a block that raises
        poisons the unit.

        Raises:
            DatabaseError: inside a unit of work that an earlier block's error rolled back.
        """
        uow = self._joined()
        if uow is None:
            return self.engine.begin()
        return _InUnit(uow, poisons=True)

    def read(self) -> AbstractContextManager[Connection]:
        """A connection inside one read-only-intended transaction (deferred on SQLite); inside this
        thread's :meth:`unit_of_work`, its connection (reads see the unit's writes)."""
        uow = self._joined()
        if uow is None:
            return self._reader.begin()
        return _InUnit(uow, poisons=False)

    def _joined(self) -> UnitOfWork | None:
        """This thread's open unit of work, if any (refused if a block inside it failed)."""
        uow: UnitOfWork | None = getattr(self._local, "uow", None)
        if uow is not None and uow.failed is not None:
            uow._check()
        return uow

    @contextmanager
    def unit_of_work(self, *, write_behind: bool = False) -> Iterator[UnitOfWork]:
        """One transaction for this thread's blocks until :meth:`UnitOfWork.commit`; committed at the
        end of the block, rolled back if it raises or a block inside failed. For a process that is
        its database's only writer and holds the account locks throughout (the replay): its reads
        are cached (:mod:`~ops_pipeline.adapters.db.cache`). With ``write_behind``, on a database
        with no run and no snapshot yet, run rows and equity snapshots are inserted in batches
        (:class:`WriteBehind`); on any other database the option is ignored.

        Raises:
            DatabaseError: the database is read-only; a unit of work is already open in this thread;
                a block inside failed (after the rollback).
        """
        if self.read_only:
            raise DatabaseError(f"{self.redacted_url()} is opened read-only")
        if getattr(self._local, "uow", None) is not None:
            raise DatabaseError("a unit of work is already open in this thread")
        with self.engine.connect() as conn:
            buffer = None
            if write_behind:
                def empty(table: Table) -> bool:
                    return conn.execute(select(func.count()).select_from(table)).scalar_one() == 0

                buffer = WriteBehind(decisions=empty(dispatch_decisions)) if all(
                    empty(t) for t in WriteBehind.BUFFERED) else None
            uow = UnitOfWork(conn, buffer)
            conn.info[CACHE_KEY] = uow.cache
            if buffer is not None:
                conn.info[WRITE_BEHIND_KEY] = buffer
            uow.cache.watch(conn)
            self._local.uow = uow
            try:
                yield uow
                uow.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                self._local.uow = None
                conn.info.pop(CACHE_KEY, None)  # info lives with the pooled DBAPI connection
                conn.info.pop(WRITE_BEHIND_KEY, None)

    @contextmanager
    def account_lock(self, account_name: str, *, wait_secs: float = 5.0,
                     monotonic: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> Iterator[bool]:
        """Hold the run lock of one account for the block; other accounts are not affected. Yields
        True when the lock was taken now, False when this thread already held it (re-entrant: no
        other process can have run the account since this thread took it).

        Waits up to ``wait_secs`` seconds for a run of the same account to finish.

        Raises:
            RunInProgress: the lock is still held by another run after ``wait_secs``.
        """
        held: dict[str, int] = self._local.__dict__.setdefault("held", {})
        if held.get(account_name):
            held[account_name] += 1
            try:
                yield False
            finally:
                held[account_name] -= 1
            return
        with self._account_lock(account_name, wait_secs, monotonic, sleep):
            held[account_name] = 1
            try:
                yield True
            finally:
                held[account_name] = 0

    @contextmanager
    def _account_lock(self, account_name: str, wait_secs: float, monotonic: Callable[[], float],
                      sleep: Callable[[float], None]) -> Iterator[None]:
        name = f"ops-pipeline:account:{account_name}"
        deadline = monotonic() + wait_secs
        if self.dialect == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                key = lock_key(name)
                while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one():
                    if monotonic() >= deadline:
                        raise RunInProgress(f"another run of account {account_name} is in progress "
                                            f"(waited {wait_secs:g}s for it)")
                    sleep(LOCK_POLL_SECS)
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            return
        if self.sqlite_path is None:  # in-memory: a lock within this process
            with _MEMORY_LOCKS_GUARD:
                lock = _MEMORY_LOCKS.setdefault(f"{id(self)}:{name}", threading.Lock())
            if not lock.acquire(timeout=wait_secs):
                raise RunInProgress(f"another run of account {account_name} is in progress")
            try:
                yield
            finally:
                lock.release()
            return
        folder = self.sqlite_path.with_name(self.sqlite_path.name + "-locks")
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / f"{account_name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if monotonic() >= deadline:
                        raise RunInProgress(f"another run of account {account_name} is in progress "
                                            f"(waited {wait_secs:g}s for it)") from None
                    sleep(LOCK_POLL_SECS)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def dispose(self) -> None:
        self.engine.dispose()

    def _sqlite_connect(self, dbapi_conn, _record) -> None:  # noqa: ANN001 (DBAPI connection)
        dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin
        cursor = dbapi_conn.cursor()
        if not self.read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECS * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    def _sqlite_begin(self, conn: Connection) -> None:
        """SQLAlchemy's recipe for SQLite transactions, taking the write lock up front unless read-only."""
        read_only = self.read_only or conn.get_execution_options().get("ops_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _reason(exc: DBAPIError) -> str:
    """The driver's first line of a database error (no SQL, no parameters)."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def replace_sqlite_file(built: Path, target: Path) -> None:
    """Move a finished SQLite database ``built`` over ``target`` atomically (same folder).

    ``built`` is checkpointed and switched out of WAL first, so the file moved is complete on its
    own; ``target``'s old ``-wal``/``-shm`` files are removed so they can never be replayed onto it.
    Nobody may have either database open.
    """
    import sqlite3

    with sqlite3.connect(built) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(built, target)
