"""Repositories: what the services read and write, as values. They never commit.

:class:`AccountRepository` serves one account and builds every statement through its
:class:`~ops_pipeline.adapters.db.scope.AccountScope`. :class:`SharedRepository` serves the tables
all accounts share (recommendations, the account registry).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, exists, func, literal_column, or_, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import NullType

from ops_pipeline.adapters.db.cache import MISSING, announce, cache_of
from ops_pipeline.adapters.db.database import WRITE_BEHIND_KEY, WriteBehind, execute_first
from ops_pipeline.adapters.db.scope import AccountScope, prepared
from ops_pipeline.adapters.db.tables import (
    ACCOUNT_SCOPED,
    POSITION_MARK_COLUMNS,
    account_equity_snapshots,
    account_metadata,
    account_state_changes,
    active_positions,
    ai_option_trades,
    config_versions,
    daily_loss_halts,
    dispatch_decisions,
    dispatch_executions,
    dispatch_runs,
    recommendations,
    trading_accounts,
)
from ops_pipeline.domain.gates import DailyLossHalt
from ops_pipeline.domain.market import Recommendation
from ops_pipeline.domain.recommendations import InvalidRecommendation, parse_recommendation
from ops_pipeline.domain.values import to_decimal

# Execution statuses. ``pending_submit`` is written before the order is sent; the broker's answer
# (or a later lookup by client_order_id) moves it on. Unsettled: the outcome is not final yet.
PENDING_SUBMIT = "pending_submit"
UNSETTLED_EXECUTION_STATUSES = (PENDING_SUBMIT, "new", "accepted", "partially_filled")
FILLED = "filled"
REJECTED = "rejected"
EXPIRED = "expired"
"""Never filled: the broker let it expire or cancelled it, or it never reached the broker and
the recommendation was too old to send it again."""
LIVE_EXECUTION_STATUSES = (*UNSETTLED_EXECUTION_STATUSES, FILLED)
OPEN_POSITION_STATUSES = ("open", "closing")
RECOMMENDATION_COLUMNS = ("id", "ticker", "action", "strategy_type", "confidence", "volume_ratio", "underlying_price",
                          "bar_ts", "feature_ts", "created_at")
MARK_COLUMNS = POSITION_MARK_COLUMNS
"""The columns a position manager's mark to market writes on every run."""
MARKS = "active_positions.marks"
"""What a mark-only write is announced as: only reads that return marks depend on it."""


class _Marks:
    name = MARKS


DECISION_STATUS = "dispatch_decisions.status"
"""What a decision's change of status (``processing`` to decided) is announced as: it leaves the
reads of which recommendations this account has decided standing."""


class _DecisionStatus:
    name = DECISION_STATUS


@dataclass(slots=True)
class _Decided:
    """What a block of decision INSERTs did (see ``AccountRepository._deciding``): the
    recommendations now decided, and those of them inserted as ``processing`` claims."""

    ids: set[int] = field(default_factory=set)
    claimed: list[int] = field(default_factory=list)


class _Claim(NamedTuple):
    """A processing claim as the remembered read of them holds it."""

    recommendation_id: int
    claimed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ClaimOutlook:
    """What a dispatcher run could find (:meth:`AccountRepository.may_have_claims`): undecided
    recommendations created before the stale cutoff (``stale``) or at or after it (``fresh``), and
    ``processing`` claims past their time to live without an order (``stuck``). True if any."""

    stale: bool
    fresh: bool
    stuck: bool

    def __bool__(self) -> bool:
        return self.stale or self.fresh or self.stuck


class MarkedRow:
    """A position row as the database returns it, with a newer mark than the row it was read as
    (a mark applied to a remembered read, see :meth:`AccountRepository.update_position`).
    Attributes and ``_mapping`` read like the row's. Its columns are its instance attributes, so
    reading one costs what reading a row's does (every run reads every open position's)."""

    def __init__(self, row: Any, marks: dict[str, Any]) -> None:  # noqa: ANN401 - a Row
        fields = dict(row.__dict__ if isinstance(row, MarkedRow) else row._mapping)
        fields.update(marks)
        self.__dict__ = fields

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"MarkedRow({self.__dict__!r})"


def _as_read(column: Any, value: Any) -> Any:  # noqa: ANN401 - a Column and its value
    """``value`` as the database would give it back for ``column``: Decimals to the column's scale,
    times as aware UTC (so a patched read equals one that went to the database)."""
    return None if value is None else _reader_of(column)(value)


_POSITION_COLUMNS = {column.name: column for column in active_positions.c}


@lru_cache(maxsize=None)
def _quantum(scale: int) -> Decimal:
    return Decimal(1).scaleb(-scale)


@lru_cache(maxsize=None)
def _reader_of(column: Any) -> Callable[[Any], Any]:  # noqa: ANN401 - a Column
    """:func:`_as_read` of ``column`` for a value that is not None, what it needs of the column looked
    up once (a held position's marks are converted every minute)."""
    scale = getattr(column.type, "scale", None)
    if scale is None:
        return lambda value: value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value
    quantum = _quantum(scale)

    def read(value: Any) -> Any:  # noqa: ANN401
        if isinstance(value, Decimal):  # Decimal(str(d)) is d itself: only numbers go through text
            return value.quantize(quantum)
        if isinstance(value, int | float):
            return Decimal(str(value)).quantize(quantum)
        return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value

    return read


_MARK_READERS = {name: _reader_of(_POSITION_COLUMNS[name]) for name in POSITION_MARK_COLUMNS}


_DEPS: dict[tuple[Any, ...], tuple[tuple[str | None, str], ...]] = {}
"""(account, tables, shared tables) → the cache dependencies of a read of them (:meth:`AccountRepository._deps`)."""

UNDECIDED = "undecided_since"
"""The cache tag of every account's remembered undecided recommendations (keys end with their anchor)."""

CLAIM_HORIZON = dt.timedelta(hours=24)
"""Recommendations older than this are not looked at: a run scans a day of rows, not the whole
table. One this account never saw (it was not running) stays without a decision for it."""


_COLUMN_NAMES: dict[Any, frozenset[str]] = {}
"""Table → its column names, built once (checked before every write)."""


def _columns(table: Any, values: dict[str, Any]) -> None:  # noqa: ANN401 - a Table
    """Refuse a value for a column ``table`` does not have (executed parameters would drop it)."""
    names = _COLUMN_NAMES.get(table)
    if names is None:
        names = _COLUMN_NAMES[table] = frozenset(table.c.keys())
    if not names.issuperset(values):
        unknown = set(values) - names
        raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")


def insert_ignore(conn: Connection, table, values: dict[str, Any], conflict: Sequence[str]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on PostgreSQL and SQLite; True if a row was inserted.

    Raises:
        ValueError: ``values`` names a column ``table`` does not have.
    """
    _columns(table, values)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # The columns come from the parameters' keys; rowcount is not reliable for INSERT … ON CONFLICT
    # on every driver, RETURNING is.
    stmt = prepared(("insert_ignore", dialect.__name__, table.name, tuple(conflict)), lambda: dialect.insert(table)
                     .on_conflict_do_nothing(index_elements=list(conflict)).returning(literal_column("1")))
    owner = values.get("account_name") if table.name in ACCOUNT_SCOPED else None
    with announce(conn, owner, table.name):
        return conn.execute(stmt, values).first() is not None


def _one_of(column: Any, values: Sequence[str]) -> Any:  # noqa: ANN401 - a SQL expression
    """``column IN (…values)`` (constants), each value its own bound parameter: the IN of a
    statement built once, without the expanding parameter a list of values gets, whose SQL
    SQLAlchemy renders anew at every execution."""
    return column.in_([bindparam(None, value, type_=column.type) for value in values])


def _raw(column: Any) -> Any:  # noqa: ANN401 - a SQL expression
    """The column without SQLAlchemy's result processing: a row written by another service with a
    value its type cannot parse must reach validation, not raise inside the query."""
    return type_coerce(column, NullType()).label(column.name)


class SharedRepository:
    """Recommendations and the account registry (not account-scoped)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add_recommendation(self, values: dict[str, Any]) -> bool:
        """Store one recommendation; False if the same (source, ticker, bar, action) exists.

        Inside a unit of work the new row, as the database returns it (``RETURNING``), joins every
        account's remembered undecided recommendations whose horizon it falls in, instead of making
        them be read again (see :meth:`AccountRepository.may_have_claims`): nobody has decided it
        yet. A ``created_at`` the database may not order as a time drops them instead.

        Raises:
            ValueError: ``values`` names a column the table does not have.
        """
        conflict = ("source", "ticker", "bar_ts", "action")
        cache = cache_of(self.conn)
        if cache is None:
            return insert_ignore(self.conn, recommendations, values, conflict)
        _columns(recommendations, values)
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        rc = recommendations.c
        stmt = prepared(("add_recommendation", dialect.__name__), lambda: dialect.insert(recommendations)
                        .on_conflict_do_nothing(index_elements=list(conflict))
                        .returning(*(_raw(rc[name]) for name in RECOMMENDATION_COLUMNS)))
        with cache.silenced():
            row = execute_first(self.conn, recommendations, ("add_recommendation",), lambda: stmt, values)
        created = None if row is None else _orderable(row.created_at)
        cache.wrote_and_patch_all((None, recommendations.name), [] if created is None else [
            (key, tables, lambda rows: (*rows, row)) for key, tables in cache.tagged(UNDECIDED) if key[-1] <= created])
        return row is not None

    def register_account(self, *, name: str, tier: str, initial_balance: Decimal, state: str,
                         notes: str, secret_name: str, now: dt.datetime) -> None:
        """Insert the account in ``account_metadata`` and ``trading_accounts`` if absent."""
        insert_ignore(self.conn, account_metadata, {
            "account_name": name, "tier": tier, "initial_balance": initial_balance,
            "created_at": now, "notes": notes,
        }, ("account_name",))
        insert_ignore(self.conn, trading_accounts, {
            "account_name": name, "tier": tier, "initial_balance": initial_balance,
            "current_balance": initial_balance, "state": state, "secret_name": secret_name,
            "created_at": now, "notes": notes, "is_active": True,
        }, ("account_name",))

    def registration(self, name: str) -> Any:
        """One registered account's ``(account_name, tier, state, flatten)``, or None."""
        t = trading_accounts.c

        def load() -> Any:
            return self.conn.execute(select(t.account_name, t.tier, t.state, t.flatten).where(t.account_name == name)).first()

        cache = cache_of(self.conn)
        return load() if cache is None else cache.get(("registration", name), ((None, trading_accounts.name),), load)

    def account_states(self) -> dict[str, Any]:
        """Every registered account's ``(account_name, tier, state, flatten)``, by name."""
        t = trading_accounts.c
        rows = self.conn.execute(select(t.account_name, t.tier, t.state, t.flatten).order_by(t.account_id)).all()
        return {r.account_name: r for r in rows}

    def change_state(self, name: str, *, to_state: str, flatten: bool, by: str, at: dt.datetime, reason: str) -> str:
        """Set an account's state and record who changed it, when and why; returns the state before.

        Raises:
            KeyError: the account is not registered.
        """
        t = trading_accounts.c
        before = self.conn.execute(select(t.state).where(t.account_name == name)).scalar_one_or_none()
        if before is None:
            raise KeyError(name)
        with announce(self.conn, None, trading_accounts.name):
            self.conn.execute(update(trading_accounts).where(t.account_name == name).values(state=to_state, flatten=flatten))
        with announce(self.conn, name, account_state_changes.name):
            self.conn.execute(AccountScope(name).insert(account_state_changes).values(
                from_state=before, to_state=to_state, flatten=flatten, changed_by=by, changed_at=at, reason=reason))
        return before

    def record_config_version(self, *, tier: str, account_name: str | None, source: str, version: str | None,
                              at: dt.datetime, accepted: bool, diff: dict[str, Any] | None, reason: str | None) -> None:
        """One row of config history: a parameter version applied or refused."""
        with announce(self.conn, None, config_versions.name):
            self.conn.execute(config_versions.insert().values(
                tier=tier, account_name=account_name, source=source, version=version, recorded_at=at,
                accepted=accepted, diff=diff, reason=reason))

    def config_history(self, *, tier: str | None = None, account_name: str | None = None, limit: int = 50) -> list[Any]:
        c = config_versions.c
        query = select(config_versions).order_by(c.recorded_at.desc(), c.id.desc()).limit(limit)
        if tier:
            query = query.where(c.tier == tier)
        if account_name:
            query = query.where(c.account_name == account_name)
        return self.conn.execute(query).all()


@dataclass(frozen=True, slots=True)
class ExposureState:
    """Open positions (incl. orders not yet positioned) and their notional, dollars."""

    open_positions: int
    open_exposure: Decimal


class AccountRepository:
    """Everything one account's runs read and write."""

    def __init__(self, conn: Connection, account_name: str) -> None:
        self.conn = conn
        self.scope = AccountScope(account_name)
        self.account_name = account_name

    def _write(self, table: Any, stmt: Any) -> Any:  # noqa: ANN401 - a Table, a DML statement, a result
        """Execute one INSERT, UPDATE or DELETE of this account's rows of ``table``."""
        with announce(self.conn, self.account_name, table.name):
            return self.conn.execute(stmt)

    def _update(self, table: Any, key_column: str, key: Any, values: dict[str, Any], *,  # noqa: ANN401
                announced_as: str | None = None) -> None:
        """UPDATE this account's row of ``table`` whose ``key_column`` is ``key``, with a statement
        built once per (account, table, columns). ``announced_as``: the name under which the
        write invalidates cached reads (default the table's)."""
        _columns(table, values)
        stmt = self.scope.prepared(("update", table.name, key_column, tuple(values)), lambda: (
            self.scope.update(table).where(table.c[key_column] == bindparam("_key"))
            .values({name: bindparam(f"_v_{name}") for name in values})))
        with announce(self.conn, self.account_name, announced_as or table.name):
            self.conn.execute(stmt, {"_key": key, **{f"_v_{name}": v for name, v in values.items()}})

    def _cached(self, key: tuple[Any, ...], tables: tuple[Any, ...], load: Any, *, shared: tuple[Any, ...] = (),  # noqa: ANN401
                tag: str | None = None) -> Any:  # noqa: ANN401
        """``load()``, or inside a unit of work the value it gave while none of this account's rows
        of ``tables`` (nor the ``shared`` tables) changed (:mod:`~ops_pipeline.adapters.db.cache`)."""
        cache = cache_of(self.conn)
        if cache is None:
            return load()
        key = (self.account_name, *key)
        if tag is None and (found := cache.lookup(key)) is not MISSING:
            return found
        return cache.get(key, self._deps(tables, *shared), load, tag)

    # --- runs ---------------------------------------------------------------------------------
    def _write_behind(self) -> WriteBehind | None:
        return self.conn.info.get(WRITE_BEHIND_KEY)

    def _flushed(self) -> Connection:
        """The connection, with the write-behind buffer flushed: for reads of runs and snapshots."""
        buffer = self._write_behind()
        if buffer is not None:
            buffer.flush(self.conn)
        return self.conn

    def start_run(self, run_id: str, kind: str, now: dt.datetime, pid: int | None = None) -> str:
        """Record a run's start; returns its id (suffixed ``-2``, ``-3``… if one started the same second).
        Inside a write-behind unit of work the row is inserted with the next statement, end included."""
        buffer = self._write_behind()
        for n in range(1, 100):
            candidate = run_id if n == 1 else f"{run_id}-{n}"
            row = {"run_id": candidate, "account_name": self.account_name, "kind": kind, "started_at": now,
                   "status": "running", "pid": pid}
            if buffer is not None:
                if buffer.start_run(row):
                    self._wrote(dispatch_runs)
                    return candidate
            elif insert_ignore(self.conn, dispatch_runs, row, ("run_id",)):
                return candidate
        raise RuntimeError(f"more than 99 runs of {run_id} in one second")

    def _wrote(self, table: Any) -> None:  # noqa: ANN401 - a Table
        cache = cache_of(self.conn)
        if cache is not None:
            cache.wrote(self.account_name, table.name)

    def abandon_running_runs(self, now: dt.datetime) -> list[Any]:
        """Mark this account's runs still ``running`` as ``abandoned`` and release their claims.

        Only called while holding the account's run lock: a run left ``running`` then belongs to a
        process that died (SPEC: one account, one run at a time). Returns the abandoned runs.
        """
        r = dispatch_runs
        running = self._flushed().execute(self.scope.select(r).where(r.c.status == "running").order_by(r.c.started_at)).all()
        if running:
            ids = [row.run_id for row in running]
            self._write(r, self.scope.update(r).where(r.c.run_id.in_(ids)).values(
                status="abandoned", finished_at=now, error="the process running it died; its claims were released"))
            self.release_claims(ids)
        return running

    def finish_run(self, run_id: str, now: dt.datetime, status: str, summary: dict[str, Any], error: str | None = None,
                   wall_secs: float | None = None) -> None:
        """Record a run's end (``now``: market time) and how long it took in real seconds."""
        values = {"finished_at": now, "status": status, "summary": summary, "error": error, "wall_secs": wall_secs}
        buffer = self._write_behind()
        if buffer is not None and buffer.finish_run(run_id, values):
            self._wrote(dispatch_runs)
            return
        self._update(dispatch_runs, "run_id", run_id, values)

    def state_changes(self, limit: int = 20) -> list[Any]:
        """This account's latest state changes, newest first."""
        c = account_state_changes.c
        return self.conn.execute(self.scope.select(account_state_changes)
                                 .order_by(c.changed_at.desc(), c.id.desc()).limit(limit)).all()

    # --- claims and decisions -----------------------------------------------------------------
    def _undecided(self):  # noqa: ANN202 - a SQL expression
        d = dispatch_decisions
        return ~exists(select(d.c.id).where(d.c.recommendation_id == recommendations.c.id, self.scope.owns(d)))

    def reject_stale(self, *, run_id: str, now: dt.datetime, cutoff: dt.datetime, detail: str) -> int:
        """Decide every undecided recommendation created before ``cutoff`` (within the
        :data:`CLAIM_HORIZON`) as stale, in one go."""
        rc = recommendations.c
        rows = self.conn.execute(self.scope.prepared(("stale",), lambda: (
            select(rc.id, _raw(rc.created_at))
            .where(rc.created_at >= bindparam("since"), rc.created_at < bindparam("cutoff"), self._undecided())
            .order_by(rc.id))), {"since": now - CLAIM_HORIZON, "cutoff": cutoff}).all()
        with self._deciding(now) as decided:
            for row in rows:
                try:
                    age = f"{(now - _aware(row.created_at)).total_seconds() / 60:.1f}min"
                except (TypeError, ValueError):
                    age = f"{row.created_at!r}"
                self._insert_decision({
                    "recommendation_id": row.id, "account_name": self.account_name, "run_id": run_id,
                    "status": REJECTED, "reason_code": "recommendation_stale",
                    "reason_detail": f"age={age} {detail}", "claimed_at": now, "decided_at": now,
                })
                decided.ids.add(row.id)
        return len(rows)

    def _insert_decision(self, row: dict[str, Any]) -> bool:
        """INSERT one decision of this account unless it has one on that recommendation; True if
        inserted. Inside a write-behind unit of work on a database that had no decision, the row
        waits in the buffer (:class:`~ops_pipeline.adapters.db.database.WriteBehind`): its
        decision (:meth:`decide`) is put into it, and the two become one INSERT."""
        buffer = self._write_behind()
        if buffer is None or not buffer.buffers_decisions:
            return insert_ignore(self.conn, dispatch_decisions, row, ("recommendation_id", "account_name"))
        _columns(dispatch_decisions, row)
        self._wrote(dispatch_decisions)
        return buffer.add_decision(row)

    UNDECIDED_READ = (dispatch_decisions,)
    """What the remembered undecided recommendations depend on besides recommendations: which
    recommendations this account has a decision on, not the decisions' status."""
    PROCESSING_READ = (dispatch_decisions, _DecisionStatus, dispatch_executions)

    @contextmanager
    def _deciding(self, now: dt.datetime) -> Iterator[_Decided]:
        """Around INSERTs of this account's decisions at ``now``; the caller names in the yielded
        :class:`_Decided` the recommendations decided and the processing claims inserted. Inside a
        unit of work the INSERTs are counted as one write, and the remembered reads are patched with
        the caller's exact account of what they changed instead of being read again: the undecided
        recommendations of ``now``'s horizon lose the decided ones, the processing claims gain the
        new ones. Every other read of decisions is read again."""
        cache = cache_of(self.conn)
        decided = _Decided()
        if cache is None:
            yield decided
            return
        with cache.silenced():
            yield decided
        claimed_at = _as_read(dispatch_decisions.c.claimed_at, now)
        cache.wrote_and_patch_all((self.account_name, dispatch_decisions.name), [
            ((self.account_name, UNDECIDED, _anchor(now)), self._deps(self.UNDECIDED_READ, recommendations),
             lambda rows: tuple(r for r in rows if r.id not in decided.ids)),
            ((self.account_name, "processing_claims"), self._deps(self.PROCESSING_READ),
             lambda rows: rows + tuple(_Claim(i, claimed_at) for i in decided.claimed)),
        ])

    def _deps(self, tables: tuple[Any, ...], *shared: Any) -> tuple[tuple[str | None, str], ...]:  # noqa: ANN401
        """The cache dependencies of a read of this account's ``tables`` and the ``shared`` ones
        (built once per account and tables: asked before every remembered read)."""
        key = (self.account_name, tables, shared)
        deps = _DEPS.get(key)
        if deps is None:
            deps = _DEPS[key] = (tuple((self.account_name, t.name) for t in tables)
                                 + tuple((None, t.name) for t in shared))
        return deps

    def may_have_claims(self, *, now: dt.datetime, ttl: dt.timedelta, cutoff: dt.datetime | None = None) -> ClaimOutlook:
        """What :meth:`reject_stale` (with ``cutoff``) and :meth:`claim` could find at ``now``: this
        account has not decided a recommendation created within the :data:`CLAIM_HORIZON` before
        ``cutoff`` (stale) or from it to ``now`` (fresh), or holds a ``processing`` claim older than
        ``ttl`` without an order (stuck). A recommendation whose ``created_at`` this check cannot
        compare, or that equals a bound, counts on both sides; without ``cutoff`` every undecided one
        does. A false part lets the run skip that query: it could only return nothing.

        The two reads do not depend on ``now`` within a UTC day, so a unit of work answers them
        from its cache until a recommendation is written, or a decision of this account is (this
        account's own new decisions are taken out of the remembered undecided ones, see
        :meth:`_deciding`).
        """
        d = dispatch_decisions
        stale = fresh = False
        for row in self._undecided_rows(now):
            created = _comparable_time(row.created_at)
            if created is None:
                stale = fresh = True
            elif now - CLAIM_HORIZON <= created <= now:
                stale |= cutoff is None or created <= cutoff
                fresh |= cutoff is None or created >= cutoff
            if stale and fresh:
                break
        processing = self._cached(("processing_claims",), self.PROCESSING_READ, lambda: tuple(self.conn.execute(
            self.scope.prepared(("processing_claims",), lambda: self.scope.select(d, d.c.recommendation_id, d.c.claimed_at)
                                .where(d.c.status == "processing", self._without_execution()))).all()))
        return ClaimOutlook(stale, fresh, any(row.claimed_at < now - ttl for row in processing))

    def _undecided_rows(self, now: dt.datetime) -> tuple[Any, ...]:
        """This account's undecided recommendations created since ``now``'s anchor (midnight UTC of
        the day a :data:`CLAIM_HORIZON` before), every column raw; inside a unit of work remembered
        for the UTC day and patched by this account's decisions and by new recommendations."""
        anchor = _anchor(now)
        rc = recommendations.c
        undecided_since = self.scope.prepared(("undecided_since",), lambda: (
            select(*(_raw(rc[name]) for name in RECOMMENDATION_COLUMNS))
            .where(rc.created_at >= bindparam("anchor"), self._undecided())))
        return self._cached((UNDECIDED, anchor), self.UNDECIDED_READ, lambda: tuple(
            self.conn.execute(undecided_since, {"anchor": anchor}).all()), shared=(recommendations,), tag=UNDECIDED)

    def _without_execution(self):  # noqa: ANN202 - a SQL expression
        e = dispatch_executions
        return ~exists(select(e.c.id).where(e.c.recommendation_id == dispatch_decisions.c.recommendation_id,
                                            self.scope.owns(e)))

    def release_claims(self, run_ids: Sequence[str]) -> int:
        """Give back the ``processing`` claims of ``run_ids`` that never became an order: the next
        run claims them again at once. A claim with an execution stays: its order is settled by
        client_order_id, never decided twice."""
        d = dispatch_decisions
        return self._write(
            d, self.scope.delete(d).where(d.c.run_id.in_(list(run_ids)), d.c.status == "processing", self._without_execution())
        ).rowcount

    def claim(self, *, run_id: str, now: dt.datetime, limit: int, ttl: dt.timedelta,
              stuck: bool = True) -> list[Recommendation | InvalidRecommendation]:
        """Claim up to ``limit`` recommendations for this account, oldest first, each validated
        (:func:`~ops_pipeline.domain.recommendations.parse_recommendation`): a bad row comes back
        as an :class:`InvalidRecommendation` for the caller to decide, never as an exception.

        A recommendation is claimable when this account has no decision on it, or its claim is
        still ``processing``, older than ``ttl`` and without an order (a run that hung). Claims are
        per account: another account's decision never hides a recommendation from this one.
        ``stuck=False`` skips looking for hung claims (:meth:`may_have_claims` found none).
        """
        d, rc = dispatch_decisions, recommendations.c
        hung = list(self.conn.execute(self.scope.prepared(("stuck_claims",), lambda: (
            self.scope.select(d, d.c.recommendation_id)
            .where(d.c.status == "processing", d.c.claimed_at < bindparam("stale_before"), self._without_execution())
            .order_by(d.c.recommendation_id).limit(bindparam("limit")))),
            {"stale_before": now - ttl, "limit": limit}).scalars()) if stuck else []
        if hung:
            self._write(d, self.scope.update(d).where(d.c.recommendation_id.in_(hung), d.c.status == "processing")
                        .values(run_id=run_id, claimed_at=now))
        since, room = now - CLAIM_HORIZON, max(0, limit - len(hung))
        fresh = self._remembered_claimable(since, now, room)
        if fresh is None:
            fresh = self.conn.execute(self.scope.prepared(("claimable",), lambda: (
                select(*(_raw(rc[name]) for name in RECOMMENDATION_COLUMNS))
                .where(rc.created_at >= bindparam("since"), rc.created_at <= bindparam("now"), self._undecided())
                .order_by(rc.created_at, rc.id).limit(bindparam("limit")))),
                {"since": since, "now": now, "limit": room}).mappings().all()
        rows = []
        with self._deciding(now) as decided:
            for row in fresh:
                if self._insert_decision({
                    "recommendation_id": row["id"], "account_name": self.account_name, "run_id": run_id,
                    "status": "processing", "claimed_at": now,
                }):
                    rows.append(row)
                    decided.claimed.append(row["id"])
                decided.ids.add(row["id"])
        if hung:
            rows += self.conn.execute(prepared(("claimed_recommendations",), lambda: (
                select(*(_raw(rc[name]) for name in RECOMMENDATION_COLUMNS))
                .where(rc.id.in_(bindparam("ids", expanding=True))))), {"ids": hung}).mappings().all()
        parsed = [_parsed(r) for r in sorted(rows, key=lambda r: r["id"])]
        return sorted(parsed, key=lambda p: (p.created_at, p.id) if isinstance(p, Recommendation) else (now, p.id or 0))

    def _remembered_claimable(self, since: dt.datetime, now: dt.datetime, limit: int) -> list[Any] | None:
        """Inside a unit of work, what the claim's query would return, from the remembered
        undecided recommendations: created from ``since`` to ``now``, oldest first (then by id), at
        most ``limit``. None outside one, or when a ``created_at`` there is not a value the
        database orders as a time (the query decides then)."""
        if cache_of(self.conn) is None:
            return None
        rows = []
        for row in self._undecided_rows(now):
            created = _orderable(row.created_at)
            if created is None:
                return None
            if since <= created <= now:
                rows.append((created, row.id, row._mapping))
        return [mapping for _, _, mapping in sorted(rows, key=lambda r: (r[0], r[1]))[:limit]]

    def recommendation_created_at(self, recommendation_id: int) -> dt.datetime | None:
        """When a recommendation was written (only asked of recommendations that passed validation)."""
        return self.conn.execute(
            select(recommendations.c.created_at).where(recommendations.c.id == recommendation_id)).scalar()

    def decide(self, recommendation_id: int, *, now: dt.datetime, status: str, reason_code: str | None = None,
               detail: str | None = None, option_symbol: str | None = None,
               quality_score: float | None = None, contracts: int | None = None) -> None:
        values = {"status": status, "reason_code": reason_code, "reason_detail": detail, "decided_at": now,
                  "option_symbol": option_symbol, "quality_score": quality_score, "contracts": contracts}
        buffer = self._write_behind()
        cache = cache_of(self.conn)
        if buffer is None or not buffer.update_decision(recommendation_id, self.account_name, values):
            with cache.silenced() if cache is not None else nullcontext():
                self._update(dispatch_decisions, "recommendation_id", recommendation_id, values)
        if cache is not None:  # the claim is no longer processing; which recommendations are decided is unchanged
            cache.wrote_and_patch((self.account_name, "processing_claims"), self._deps(self.PROCESSING_READ),
                                  (self.account_name, DECISION_STATUS),
                                  lambda rows: tuple(r for r in rows if r.recommendation_id != recommendation_id))

    # --- executions ---------------------------------------------------------------------------
    def create_execution(self, values: dict[str, Any]) -> int:
        """Write an execution (status ``pending_submit``) before its order is sent; returns its id.
        The statement is built once per set of columns; the account is this repository's.

        Raises:
            ValueError: ``values`` names an unknown column, or ``account_name``.
        """
        _columns(dispatch_executions, values)
        if "account_name" in values:
            raise ValueError("an execution's account is its repository's: account_name is not a value to give")
        stmt = self.scope.prepared(("create_execution", tuple(values)), lambda: (
            self.scope.insert(dispatch_executions).returning(dispatch_executions.c.id)))
        with announce(self.conn, self.account_name, dispatch_executions.name):
            return self.conn.execute(stmt, values).scalar_one()

    def execution(self, execution_id: int) -> Any:
        e = dispatch_executions
        return self.conn.execute(self.scope.prepared(("execution",), lambda: (
            self.scope.select(e).where(e.c.id == bindparam("id")))), {"id": execution_id}).one()

    def update_execution(self, execution_id: int, **values: Any) -> None:
        self._update(dispatch_executions, "id", execution_id, values)

    def unsettled_executions(self) -> list[Any]:
        """Executions whose order outcome is not final: written but unanswered (``pending_submit``),
        or sent and not yet filled, cancelled or expired at the broker."""
        e = dispatch_executions
        return list(self._cached(("unsettled_executions",), (e,), lambda: tuple(self.conn.execute(
            self.scope.prepared(("unsettled_executions",), lambda: self.scope.select(e).where(
                _one_of(e.c.status, UNSETTLED_EXECUTION_STATUSES)).order_by(e.c.id))).all())))

    def exposure(self) -> ExposureState:
        """Open and closing positions plus live orders without a position yet."""
        p, e = active_positions, dispatch_executions

        def load() -> ExposureState:
            pos = self.conn.execute(self.scope.prepared(("open_exposure",), lambda: (
                self.scope.select(p, func.count(), func.coalesce(func.sum(p.c.notional_value), 0))
                .where(_one_of(p.c.status, OPEN_POSITION_STATUSES))))).one()
            orders = self.conn.execute(self.scope.prepared(("order_exposure",), lambda: (
                self.scope.select(e, func.count(), func.coalesce(func.sum(e.c.notional), 0))
                .where(_one_of(e.c.status, LIVE_EXECUTION_STATUSES), ~exists(select(p.c.id).where(p.c.execution_id == e.c.id)))
            ))).one()
            return ExposureState(int(pos[0]) + int(orders[0]), to_decimal(pos[1]) + to_decimal(orders[1]))

        return self._cached(("exposure",), (p, e), load)

    def trades_by_ticker(self, since: dt.datetime) -> tuple[dict[str, int], dict[str, dt.datetime]]:
        """Executions (not refused) per ticker since ``since``, and each ticker's latest trade ever."""
        e = dispatch_executions

        def load() -> tuple[dict[str, int], dict[str, dt.datetime]]:
            today = self.conn.execute(self.scope.prepared(("trades_today",), lambda: (
                self.scope.select(e, e.c.ticker, func.count())
                .where(_one_of(e.c.status, LIVE_EXECUTION_STATUSES), e.c.simulated_ts >= bindparam("since"))
                .group_by(e.c.ticker))), {"since": since}).all()
            last = self.conn.execute(self.scope.prepared(("last_trades",), lambda: (
                self.scope.select(e, e.c.ticker, func.max(e.c.simulated_ts))
                .where(_one_of(e.c.status, LIVE_EXECUTION_STATUSES)).group_by(e.c.ticker)))).all()
            return {t: int(n) for t, n in today}, {t: _aware(ts) for t, ts in last}

        today, last = self._cached(("trades_by_ticker", since), (e,), load)
        return dict(today), dict(last)

    def realized_pnl_since(self, since: dt.datetime) -> Decimal:
        p = active_positions
        return self._cached(("realized_pnl_since", since), (p,), lambda: to_decimal(self.conn.execute(
            self.scope.prepared(("realized_pnl_since",), lambda: self.scope.select(
                p, func.coalesce(func.sum(p.c.realized_pnl), 0))
                .where(p.c.status == "closed", p.c.closed_at >= bindparam("since"))), {"since": since}
        ).scalar_one()))

    # --- positions ----------------------------------------------------------------------------
    def filled_without_position(self) -> list[Any]:
        e, p = dispatch_executions, active_positions
        return list(self._cached(("filled_without_position",), (e, p), lambda: tuple(self.conn.execute(
            self.scope.prepared(("filled_without_position",), lambda: self.scope.select(e).where(
                e.c.status == FILLED, ~exists(select(p.c.id).where(p.c.execution_id == e.c.id))).order_by(e.c.id))
        ).all())))

    def create_position(self, values: dict[str, Any]) -> bool:
        """One row per execution (unique ``execution_id``); False if it already exists."""
        return insert_ignore(
            self.conn, active_positions, {**values, "account_name": self.account_name}, ("execution_id",)
        )

    OPEN_POSITIONS_READ = (active_positions, _Marks)
    """What :meth:`open_positions` depends on: every write to positions, marks included."""

    def open_positions(self) -> list[Any]:
        p = active_positions
        return list(self._cached(("open_positions",), self.OPEN_POSITIONS_READ, lambda: tuple(self.conn.execute(
            self.scope.prepared(("open_positions",), lambda: self.scope.select(p).where(
                _one_of(p.c.status, OPEN_POSITION_STATUSES)).order_by(p.c.id))).all())))

    def closing_positions(self) -> list[Any]:
        """Positions whose close order was sent (or was about to be) and not yet recorded as filled."""
        p = active_positions
        ids = self._cached(("closing_position_ids",), (p,), lambda: tuple(self.conn.execute(
            self.scope.prepared(("closing_position_ids",), lambda: self.scope.select(p, p.c.id).where(
                p.c.status == "closing", p.c.close_client_order_id.is_not(None)))).scalars()))
        if not ids:  # the usual case, answered without a query while no position changes status
            return []
        return self.conn.execute(self.scope.select(p).where(p.c.id.in_(ids)).order_by(p.c.id)).all()

    def update_position(self, position_id: int, **values: Any) -> None:
        """Change one position. A mark (only :data:`MARK_COLUMNS`) is :meth:`mark_positions`."""
        if not MARK_COLUMNS.issuperset(values):
            self._update(active_positions, "id", position_id, values)
            return
        self.mark_positions({position_id: values})

    def mark_positions(self, marks: dict[int, dict[str, Any]]) -> None:
        """Mark positions to market: position id → values of :data:`MARK_COLUMNS` only. A mark
        leaves remembered reads that do not return marks (exposure, realized P&L, closing
        positions) standing, and inside a unit of work is applied to the remembered open positions
        (all of a run's marks as one write) rather than making them be read again; with
        write-behind it is written with the next flush
        (:class:`~ops_pipeline.adapters.db.database.WriteBehind`).

        Raises:
            ValueError: a value names a column that is not a mark column.
        """
        for values in marks.values():
            if not MARK_COLUMNS.issuperset(values):
                raise ValueError(f"not mark columns: {', '.join(sorted(set(values) - MARK_COLUMNS))}")
        cache = cache_of(self.conn)
        if cache is None:
            for position_id, values in marks.items():
                self._update(active_positions, "id", position_id, values, announced_as=MARKS)
            return
        buffer = self._write_behind()
        for position_id, values in marks.items():
            if buffer is not None:
                buffer.mark(self.account_name, position_id, values)
            else:
                with cache.silenced():
                    self._update(active_positions, "id", position_id, values)
        readers = _MARK_READERS
        read = {position_id: {name: None if value is None else readers[name](value) for name, value in values.items()}
                for position_id, values in marks.items()}

        def patch(rows: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(MarkedRow(r, read[r.id]) if r.id in read else r for r in rows)

        deps = self._deps(self.OPEN_POSITIONS_READ)
        cache.wrote_and_patch((self.account_name, "open_positions"), deps, (self.account_name, MARKS), patch)

    def record_outcome(self, values: dict[str, Any]) -> None:
        insert_ignore(self.conn, ai_option_trades, {**values, "account_name": self.account_name}, ("position_id",))

    def snapshot_equity(self, values: dict[str, Any]) -> None:
        """One equity snapshot per (account, time); a second at the same time is ignored."""
        row = {**values, "account_name": self.account_name}
        buffer = self._write_behind()
        if buffer is None:
            insert_ignore(self.conn, account_equity_snapshots, row, ("account_name", "taken_at"))
            return
        _columns(account_equity_snapshots, row)
        buffer.snapshot(row)
        self._wrote(account_equity_snapshots)

    # --- the daily loss latch -------------------------------------------------------------------
    def daily_loss_halt(self, trading_date: dt.date) -> DailyLossHalt | None:
        """This account's latch for ``trading_date`` (exchange date), if set."""
        h = daily_loss_halts

        def load() -> DailyLossHalt | None:
            row = self.conn.execute(self.scope.prepared(("daily_loss_halt",), lambda: self.scope.select(h).where(
                h.c.trading_date == bindparam("trading_date"))), {"trading_date": trading_date}).first()
            return None if row is None else DailyLossHalt(row.halted_at, row.day_pnl, row.realized_pnl, row.max_daily_loss)

        return self._cached(("daily_loss_halt", trading_date), (h,), load)

    def record_daily_loss_halt(self, *, trading_date: dt.date, halt: DailyLossHalt, unrealized_usd: Decimal,
                               action: str, run_id: str) -> DailyLossHalt:
        """Set the latch for ``trading_date`` unless it is set already; returns the latch in force."""
        insert_ignore(self.conn, daily_loss_halts, {
            "account_name": self.account_name, "trading_date": trading_date, "halted_at": halt.halted_at,
            "day_pnl": halt.day_pnl_usd, "realized_pnl": halt.realized_pnl_usd, "unrealized_pnl": unrealized_usd,
            "max_daily_loss": halt.max_daily_loss_usd, "action": action, "run_id": run_id,
        }, ("account_name", "trading_date"))
        stored = self.daily_loss_halt(trading_date)
        assert stored is not None
        return stored

    def daily_loss_halts(self) -> list[Any]:
        h = daily_loss_halts
        return self.conn.execute(self.scope.select(h).order_by(h.c.trading_date)).all()

    # --- read side (reports) ------------------------------------------------------------------
    def executions(self) -> list[Any]:
        e = dispatch_executions
        return self.conn.execute(self.scope.select(e).order_by(e.c.simulated_ts, e.c.id)).all()

    def positions(self) -> list[Any]:
        p = active_positions
        return self.conn.execute(self.scope.select(p).order_by(p.c.id)).all()

    def decisions_by_reason(self) -> dict[str, int]:
        d = dispatch_decisions
        rows = self.conn.execute(
            self.scope.select(d, d.c.reason_code, func.count())
            .where(or_(d.c.status == REJECTED, d.c.status == "error")).group_by(d.c.reason_code)
        ).all()
        return {code or "unknown": int(n) for code, n in rows}

    def decisions(self) -> list[Any]:
        """Every decision of this account, in the order they were taken."""
        d = dispatch_decisions
        return self.conn.execute(self.scope.select(d).order_by(d.c.decided_at, d.c.id)).all()

    def executions_by_status(self) -> dict[str, int]:
        e = dispatch_executions
        rows = self.conn.execute(self.scope.select(e, e.c.status, func.count()).group_by(e.c.status)).all()
        return {status: int(n) for status, n in rows}

    def latest_run(self, kinds: Sequence[str] = ("dispatcher", "position_manager", "run")) -> Any:
        """This account's latest run of ``kinds`` (by start), or None."""
        r = dispatch_runs
        return self._flushed().execute(self.scope.select(r).where(r.c.kind.in_(list(kinds)))
                                 .order_by(r.c.started_at.desc(), r.c.run_id.desc()).limit(1)).first()

    def runs_by_status(self) -> dict[str, int]:
        r = dispatch_runs
        rows = self._flushed().execute(self.scope.select(r, r.c.status, func.count()).group_by(r.c.status)).all()
        return {status: int(n) for status, n in rows}

    def latest_snapshot(self) -> Any:
        s = account_equity_snapshots
        return self._flushed().execute(self.scope.select(s).order_by(s.c.taken_at.desc()).limit(1)).first()

    def equity_curve(self) -> list[Any]:
        s = account_equity_snapshots
        return self._flushed().execute(self.scope.select(s).order_by(s.c.taken_at)).all()

    def outcomes(self) -> list[Any]:
        t = ai_option_trades
        return self.conn.execute(self.scope.select(t).order_by(t.c.closed_at, t.c.id)).all()


_SQLITE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?")


_SQLITE_STORED_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}")


def _parsed(row: Any) -> Recommendation | InvalidRecommendation:  # noqa: ANN401 - a row's mapping
    """:func:`~ops_pipeline.domain.recommendations.parse_recommendation` of a claimed row; the same
    raw values (every account claims each recommendation) are validated once."""
    values = tuple(row.get(name) for name in RECOMMENDATION_COLUMNS)
    # Keyed by type and value (a float by its text): 1, 1.0 and True are equal keys but not
    # equally valid values, and -0.0 equals 0.0.
    key = tuple((type(v), repr(v) if isinstance(v, float) else v) for v in values)
    try:
        return _parsed_values(key, values)
    except TypeError:  # a value that cannot be a key (a row written by another service)
        return parse_recommendation(row)


@lru_cache(maxsize=4096)
def _parsed_values(_key: tuple[Any, ...], values: tuple[Any, ...]) -> Recommendation | InvalidRecommendation:
    return parse_recommendation(dict(zip(RECOMMENDATION_COLUMNS, values, strict=True)))


def _orderable(raw: object) -> dt.datetime | None:
    """A stored ``created_at`` as an aware UTC time when the database compares and orders it
    exactly as that time: a timestamp (PostgreSQL), or SQLite text in the one format SQLAlchemy
    writes (``YYYY-MM-DD HH:MM:SS.ffffff``, compared as text against bounds written the same
    way); None otherwise."""
    if isinstance(raw, dt.datetime):
        return raw.replace(tzinfo=dt.UTC) if raw.tzinfo is None else raw.astimezone(dt.UTC)
    return _utc_text(raw, _SQLITE_STORED_TIME) if isinstance(raw, str) else None


@lru_cache(maxsize=4096)
def _utc_text(raw: str, pattern: re.Pattern[str]) -> dt.datetime | None:
    """SQLite's text of a UTC time as an aware time if all of it matches ``pattern``, else None
    (remembered: the undecided rows are asked about at every run)."""
    return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC) if pattern.fullmatch(raw) else None


def _anchor(now: dt.datetime) -> dt.datetime:
    """Midnight UTC of the day :data:`CLAIM_HORIZON` before ``now``: the lower bound of the
    undecided recommendations a unit of work remembers for a whole UTC day."""
    return _anchor_of(now) if now.tzinfo is dt.UTC else _anchor_of.__wrapped__(now)


@lru_cache(maxsize=64)
def _anchor_of(now: dt.datetime) -> dt.datetime:
    """:func:`_anchor`, remembered for UTC times (asked by every dispatcher run)."""
    return dt.datetime.combine((now - CLAIM_HORIZON).astimezone(dt.UTC).date(), dt.time(0), dt.UTC)


def _comparable_time(raw: object) -> dt.datetime | None:
    """A stored ``created_at`` as an aware UTC time, or None when it is not one the database
    would compare the same way (a row another service wrote in some other format)."""
    if isinstance(raw, dt.datetime):
        return raw.replace(tzinfo=dt.UTC) if raw.tzinfo is None else raw.astimezone(dt.UTC)
    return _utc_text(raw, _SQLITE_TIME) if isinstance(raw, str) else None


def _aware(ts: dt.datetime) -> dt.datetime:
    """Aggregates (MAX) bypass the column type on SQLite: they come back naive UTC or as text."""
    if isinstance(ts, str):
        ts = dt.datetime.fromisoformat(ts)
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)

