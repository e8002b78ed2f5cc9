"""The schema: SQLAlchemy Core tables named as in the seeds.

Times are stored as UTC instants: ``timestamptz`` on PostgreSQL (where the migration sets the
database's ``TimeZone`` to America/New_York, so the seeds' ``simulated_ts::date`` is the US trading
day), ISO text in UTC on SQLite; Python always gets aware UTC datetimes back (:class:`UTCDateTime`).
Money is ``NUMERIC``: dollars with cents, premiums with four decimals. Every account-scoped table
has an indexed ``account_name``; queries on them go through
:class:`~ops_pipeline.adapters.db.scope.AccountScope`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive input is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given for a timezone-aware column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:  # type: ignore[override]
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


Id = BigInteger().with_variant(Integer(), "sqlite")
Dollars = Numeric(14, 2)
Premium = Numeric(12, 4)

account_metadata = Table(
    "account_metadata",
    metadata,
    Column("account_name", String(50), primary_key=True),
    Column("tier", String(20), nullable=False),
    Column("initial_balance", Numeric(12, 2), nullable=False),
    Column("created_at", UTCDateTime()),
    Column("notes", Text),
)

trading_accounts = Table(
    "trading_accounts",
    metadata,
    Column("account_id", Id, primary_key=True, autoincrement=True),
    Column("account_name", String(50), nullable=False, unique=True),
    Column("tier", String(20), nullable=False),
    Column("alpaca_account_id", String(100)),
    Column("secret_name", String(100), nullable=False, server_default=""),
    Column("initial_balance", Numeric(12, 2), nullable=False),
    Column("current_balance", Numeric(12, 2)),
    Column("is_active", Boolean, nullable=False, server_default="1"),
    Column("state", String(20), nullable=False, server_default="enabled"),
    Column("flatten", Boolean, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime()),
    Column("last_trade_at", UTCDateTime()),
    Column("notes", Text),
)

recommendations = Table(
    "recommendations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(40), nullable=False),
    Column("ticker", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("strategy_type", String(16), nullable=False),
    Column("confidence", Numeric(6, 4), nullable=False),
    Column("volume_ratio", Numeric(10, 4), nullable=False),
    Column("underlying_price", Premium),
    Column("bar_ts", UTCDateTime(), nullable=False),
    Column("feature_ts", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("features", JSON),
    UniqueConstraint("source", "ticker", "bar_ts", "action"),
    Index(None, "created_at"),
)

dispatch_runs = Table(
    "dispatch_runs",
    metadata,
    Column("run_id", String(100), primary_key=True),
    Column("account_name", String(50), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("status", String(20), nullable=False),
    Column("summary", JSON),
    Column("error", Text),
    Column("pid", Integer),
    Column("wall_secs", Float),
    Index(None, "account_name", "status"),
)

dispatch_decisions = Table(
    "dispatch_decisions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("recommendation_id", Id, ForeignKey("recommendations.id"), nullable=False),
    Column("account_name", String(50), nullable=False, index=True),
    Column("run_id", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason_code", String(40)),
    Column("reason_detail", Text),
    Column("option_symbol", String(32)),
    Column("quality_score", Numeric(6, 2)),
    Column("contracts", Integer),
    Column("claimed_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime()),
    UniqueConstraint("recommendation_id", "account_name"),
    Index(None, "account_name", "status"),
)

dispatch_executions = Table(
    "dispatch_executions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", String(100), nullable=False),
    Column("recommendation_id", Id, ForeignKey("recommendations.id")),
    Column("account_name", String(50), nullable=False),
    Column("ticker", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("strategy_type", String(16), nullable=False),
    Column("option_symbol", String(32), nullable=False),
    Column("contracts", Integer, nullable=False),
    Column("premium", Premium, nullable=False),
    Column("notional", Dollars, nullable=False),
    Column("client_order_id", String(128), nullable=False, unique=True),
    Column("broker_order_id", String(64)),
    Column("status", String(24), nullable=False),
    Column("simulated_ts", UTCDateTime(), nullable=False),
    Column("execution_mode", String(16), nullable=False),
    Column("quality_score", Numeric(6, 2)),
    Column("confidence", Numeric(6, 4)),
    Column("quote_source", String(12)),
    Column("quote_ts", UTCDateTime()),
    Column("quote_age_secs", Numeric(10, 1)),
    Column("quote_snapshot", String(64)),
    Column("filled_at", UTCDateTime()),
    Column("error", Text),
    Column("submit_attempts", Integer, nullable=False, server_default="1"),
    Index(None, "account_name", "simulated_ts"),
    Index(None, "account_name", "status"),
)

active_positions = Table(
    "active_positions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_name", String(50), nullable=False, index=True),
    Column("execution_id", Id, ForeignKey("dispatch_executions.id"), unique=True),
    Column("ticker", String(16), nullable=False),
    Column("option_symbol", String(32), nullable=False),
    Column("strategy_type", String(16), nullable=False),
    Column("contracts", Integer, nullable=False),
    Column("entry_price", Premium, nullable=False),
    Column("notional_value", Dollars, nullable=False),
    Column("stop_price", Premium, nullable=False),
    Column("target_price", Premium, nullable=False),
    Column("expiration_date", Date, nullable=False),
    Column("status", String(12), nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime()),
    Column("exit_price", Premium),
    Column("exit_reason", String(24)),
    Column("exit_quote_source", String(12)),
    Column("realized_pnl", Dollars),
    Column("current_price", Premium),
    Column("unrealized_pnl", Dollars),
    Column("marked_at", UTCDateTime()),
    Column("close_attempts", Integer, nullable=False, server_default="0"),
    Column("close_client_order_id", String(128)),
    Column("last_error", Text),
    Column("flags", String(200)),
    Column("quality_score", Numeric(6, 2)),
    Column("confidence", Numeric(6, 4)),
    Index(None, "account_name", "status"),
)

ai_option_trades = Table(
    "ai_option_trades",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_name", String(50), nullable=False, index=True),
    Column("position_id", Id, ForeignKey("active_positions.id"), nullable=False, unique=True),
    Column("ticker", String(16), nullable=False),
    Column("option_symbol", String(32), nullable=False),
    Column("strategy_type", String(16), nullable=False),
    Column("quality_score", Numeric(6, 2)),
    Column("confidence", Numeric(6, 4)),
    Column("contracts", Integer, nullable=False),
    Column("entry_price", Premium, nullable=False),
    Column("exit_price", Premium),
    Column("realized_pnl", Dollars),
    Column("pnl_pct", Numeric(10, 4)),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime(), nullable=False),
    Column("hold_minutes", Numeric(10, 1)),
    Column("exit_reason", String(24), nullable=False),
)

account_equity_snapshots = Table(
    "account_equity_snapshots",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_name", String(50), nullable=False, index=True),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("equity", Dollars, nullable=False),
    Column("cash", Dollars, nullable=False),
    Column("buying_power", Dollars, nullable=False),
    Column("open_positions", Integer, nullable=False),
    Column("open_exposure", Dollars, nullable=False),
    Column("unrealized_pnl", Dollars, nullable=False),
    Column("realized_pnl_today", Dollars, nullable=False),
    UniqueConstraint("account_name", "taken_at"),
)

daily_loss_halts = Table(
    "daily_loss_halts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_name", String(50), nullable=False, index=True),
    Column("trading_date", Date, nullable=False),
    Column("halted_at", UTCDateTime(), nullable=False),
    Column("day_pnl", Dollars, nullable=False),
    Column("realized_pnl", Dollars, nullable=False),
    Column("unrealized_pnl", Dollars, nullable=False),
    Column("max_daily_loss", Dollars, nullable=False),
    Column("action", String(12), nullable=False),
    Column("run_id", String(100), nullable=False),
    UniqueConstraint("account_name", "trading_date"),
)
"""The daily loss latch (SPEC "The dispatcher"): one row per account and exchange date on which
the day's loss reached ``max_daily_loss``; no entry that day after ``halted_at``."""

account_state_changes = Table(
    "account_state_changes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_name", String(50), nullable=False, index=True),
    Column("from_state", String(20), nullable=False),
    Column("to_state", String(20), nullable=False),
    Column("flatten", Boolean, nullable=False, server_default="0"),
    Column("changed_by", String(100), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
)
"""Every change of an account's state (seed 002 "Start/Stop", "Pause/Resume All", "Emergency
Stop"): who, when (wall time, UTC) and why. ``trading_accounts.state`` holds the current state."""

config_versions = Table(
    "config_versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tier", String(20), nullable=False),
    Column("account_name", String(50), index=True),
    Column("source", String(200), nullable=False),
    Column("version", String(100)),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("diff", JSON),
    Column("reason", Text),
)

POSITION_MARK_COLUMNS = frozenset({"current_price", "unrealized_pnl", "marked_at"})
"""The columns of ``active_positions`` a position manager's mark to market writes on every run."""

ACCOUNT_SCOPED = frozenset(
    t.name for t in metadata.sorted_tables if "account_name" in t.c and t.name not in {"account_metadata", "trading_accounts", "config_versions"}
)
