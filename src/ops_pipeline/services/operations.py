"""What an operator reads about the accounts: ``ops-pipeline status``, ``ops-pipeline health``,
and the supervisor's ``/metrics`` and ``/healthz`` — one read of the database behind all of them.

Health (seed 002 "Account Health Check") is judged from *runs*, not trades, so a quiet market is
not "stale": the market minutes (open hours only, early closes included) since the account's last
run of any kind, at ``now`` by the broker's clock. ``active`` ≤ :data:`ACTIVE_MINUTES`, ``slow`` ≤
:data:`SLOW_MINUTES` (the seed's 15 minutes and 1 hour), else ``stale``; ``disabled`` accounts are
not expected to run and are not judged.

Metrics keep the seeds' names (seed 000 phase 11, seed 001 "Metrics") in one mapping,
:data:`SEED_METRIC_NAMES`, so the CloudWatch sink can publish the same figures under the seeds' names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import FILLED, AccountRepository, SharedRepository
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.values import ZERO, AccountState
from ops_pipeline.services.runs import day_start

ACTIVE_MINUTES = 15
SLOW_MINUTES = 60

SEED_METRIC_NAMES: dict[str, str] = {
    "positions.count": "ops_pipeline_positions_count",
    "exposure.dollars": "ops_pipeline_exposure_dollars",
    "trades.executed": "ops_pipeline_trades_executed",
    "gates.failed": "ops_pipeline_gates_failed",
    "runs.duration": "ops_pipeline_run_duration_seconds",
    "runs.errors": "ops_pipeline_run_errors",
    "equity.dollars": "ops_pipeline_equity_dollars",
    "pnl.today": "ops_pipeline_pnl_today_dollars",
    "daily_loss.halted": "ops_pipeline_daily_loss_halted",
    "health.stale": "ops_pipeline_health_stale",
}
"""The seeds' metric names (``dispatcher.`` prefix dropped) → Prometheus names. Counters get
``_total`` from prometheus-client."""


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One account as ``status`` shows it. Money in dollars; times aware UTC; ``last_run_secs`` real seconds."""

    name: str
    tier: str
    state: str
    flatten: bool
    schedule: str
    last_run_at: dt.datetime | None
    last_run_status: str | None
    last_run_secs: float | None
    open_positions: int
    max_positions: int
    exposure: Decimal
    max_exposure: Decimal
    pnl_today: Decimal
    max_daily_loss: Decimal
    halted_at: dt.datetime | None
    equity: Decimal | None
    credentials: str | None
    health: str
    minutes_since_run: int | None
    trades_executed: int = 0
    gates_failed: dict[str, int] = field(default_factory=dict)
    run_errors: int = 0


def open_minutes_between(start: dt.datetime, end: dt.datetime, calendar: TradingCalendar) -> int:
    """Whole minutes of regular trading between ``start`` and ``end`` (0 if ``end`` ≤ ``start``)."""
    if end <= start:
        return 0
    total = 0.0
    for session in calendar.sessions(exchange_date(start), exchange_date(end)):
        lo, hi = max(start, session.open), min(end, session.close)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return int(total // 60)


def health_of(state: str, last_run_at: dt.datetime | None, now: dt.datetime, calendar: TradingCalendar) -> tuple[str, int | None]:
    """``(verdict, market minutes since the last run)``: active, slow, stale, or disabled."""
    if state == AccountState.DISABLED.value:
        return "disabled", None
    if last_run_at is None:
        return "stale", None
    minutes = open_minutes_between(last_run_at, now, calendar)
    return ("active" if minutes <= ACTIVE_MINUTES else "slow" if minutes <= SLOW_MINUTES else "stale"), minutes


def account_statuses(db: Database, configs: Iterable[AccountConfig], now: dt.datetime,
                     calendar: TradingCalendar) -> list[AccountStatus]:
    """Every account of ``configs`` (registered or not) as of ``now`` (the broker's clock)."""
    since = day_start(now)
    rows = []
    with db.read() as conn:
        registered = SharedRepository(conn).account_states()
        for cfg in configs:
            repo = AccountRepository(conn, cfg.name)
            known = registered.get(cfg.name)
            state = known.state if known is not None else cfg.account.state
            exposure = repo.exposure()
            last = repo.latest_run()
            dispatcher = repo.latest_run(("dispatcher",))
            snapshot = repo.latest_snapshot()
            realized = repo.realized_pnl_since(since)
            unrealized = snapshot.unrealized_pnl if snapshot is not None and snapshot.taken_at >= since else ZERO
            halt = repo.daily_loss_halt(exchange_date(now))
            health, minutes = health_of(state, last.started_at if last else None, now, calendar)
            s = cfg.account.schedule
            rows.append(AccountStatus(
                name=cfg.name, tier=cfg.risk.account_tier.value, state=state, flatten=bool(known and known.flatten),
                schedule=f"every {s.every_minutes} min at +{s.offset_minutes}",
                last_run_at=last.started_at if last else None, last_run_status=last.status if last else None,
                last_run_secs=last.wall_secs if last else None, open_positions=exposure.open_positions,
                max_positions=cfg.risk.max_open_positions, exposure=exposure.open_exposure,
                max_exposure=Decimal(str(cfg.risk.max_notional_exposure)), pnl_today=realized + unrealized,
                max_daily_loss=Decimal(str(cfg.risk.max_daily_loss)), halted_at=halt.halted_at if halt else None,
                equity=snapshot.equity if snapshot is not None else None,
                credentials=(dispatcher.summary or {}).get("credentials") if dispatcher is not None else None,
                health=health, minutes_since_run=minutes,
                trades_executed=repo.executions_by_status().get(FILLED, 0),
                gates_failed=repo.decisions_by_reason(), run_errors=repo.runs_by_status().get("error", 0),
            ))
    return rows


class AccountsCollector(Collector):
    """A Prometheus collector that reads the database at each scrape (so ``/metrics`` equals it).

    ``statuses()`` returns the accounts' current :class:`AccountStatus`.
    """

    def __init__(self, statuses: Callable[[], list[AccountStatus]]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        rows: list[AccountStatus] = self.statuses()
        labels = ["account_name", "tier"]
        n = SEED_METRIC_NAMES
        positions = GaugeMetricFamily(n["positions.count"], "Open positions, incl. orders not yet positioned.", labels=labels)
        exposure = GaugeMetricFamily(n["exposure.dollars"], "Notional of open positions and live orders, dollars.",
                                     labels=labels)
        trades = CounterMetricFamily(n["trades.executed"], "Orders filled (entries).", labels=labels)
        gates = CounterMetricFamily(n["gates.failed"], "Recommendations rejected, by gate reason code.",
                                    labels=[*labels, "reason"])
        duration = GaugeMetricFamily(n["runs.duration"], "Real seconds the latest run took.", labels=labels)
        errors = CounterMetricFamily(n["runs.errors"], "Runs that ended on an error.", labels=labels)
        equity = GaugeMetricFamily(n["equity.dollars"], "Equity at the latest snapshot, dollars.", labels=labels)
        pnl = GaugeMetricFamily(n["pnl.today"], "Today's realized + unrealized P&L, dollars.", labels=labels)
        halted = GaugeMetricFamily(n["daily_loss.halted"], "1 when today's daily loss latch is set.", labels=labels)
        stale = GaugeMetricFamily(n["health.stale"], "1 when the account's health is stale.", labels=labels)
        for r in rows:
            key = [r.name, r.tier]
            positions.add_metric(key, r.open_positions)
            exposure.add_metric(key, float(r.exposure))
            trades.add_metric(key, r.trades_executed)
            for reason, count in sorted(r.gates_failed.items()):
                gates.add_metric([*key, reason], count)
            if r.last_run_secs is not None:
                duration.add_metric(key, r.last_run_secs)
            errors.add_metric(key, r.run_errors)
            if r.equity is not None:
                equity.add_metric(key, float(r.equity))
            pnl.add_metric(key, float(r.pnl_today))
            halted.add_metric(key, 1 if r.halted_at else 0)
            stale.add_metric(key, 1 if r.health == "stale" else 0)
        yield from (positions, exposure, trades, gates, duration, errors, equity, pnl, halted, stale)
