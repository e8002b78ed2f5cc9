"""Replay: the same signal engine, dispatcher, position manager and broker code over historical
data, on a simulated clock (SPEC "Replay").

For each session, minute by minute from one minute after the open to one minute before the close
(exchange time): set the clock; write the recommendations of bars that closed at that minute;
then, for each account in the accounts file's order whose schedule fires at that minute, run its
position manager and then its dispatcher. At the close: settle expiring contracts and run every
account's position manager once more. Deterministic: the same inputs give the same rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ
from ops_pipeline.bootstrap import ReplayRig, build_replay
from ops_pipeline.config.loader import ConfigSource

DEFAULT_TICKERS = ("SPY", "QQQ")
DEFAULT_START = dt.date(2026, 3, 16)
DEFAULT_END = dt.date(2026, 3, 19)


@dataclass(frozen=True)
class ReplaySettings:
    """What to replay. Dates are exchange dates, inclusive."""

    data_dir: Path
    interval_minutes: int = 1
    tickers: tuple[str, ...] = DEFAULT_TICKERS
    start: dt.date = DEFAULT_START
    end: dt.date = DEFAULT_END
    config_dir: Path | None = None
    max_quote_age: dt.timedelta = dt.timedelta(minutes=30)
    accounts: tuple[str, ...] = ()
    require_credentials: bool = False


@dataclass
class ReplayStats:
    sessions: int = 0
    minutes: int = 0
    bars: int = 0
    recommendations: int = 0
    dispatcher_runs: int = 0
    position_manager_runs: int = 0


ProgressFn = Callable[[int, int], None]


def count_minutes(rig: ReplayRig, settings: ReplaySettings) -> int:
    return sum(s.minutes - 1 for s in rig.calendar.sessions(settings.start, settings.end))


def run_replay(db: Database, settings: ReplaySettings, progress: ProgressFn | None = None,
               source: ConfigSource | None = None, on_minute: Callable[[dt.datetime], None] | None = None,
               ) -> tuple[ReplayRig, ReplayStats]:
    """Replay ``settings`` into ``db`` (already migrated); ``progress(done, total)`` per minute.

    ``source`` overrides where configuration comes from (default: the environment's stores);
    ``on_minute(now)`` is called at each minute before any run (what a scheduler sees between runs).
    """
    rig = build_replay(
        db=db, data_dir=settings.data_dir, interval_minutes=settings.interval_minutes,
        tickers=list(settings.tickers), start=settings.start, end=settings.end,
        config_dir=settings.config_dir, max_quote_age=settings.max_quote_age, accounts=list(settings.accounts) or None,
        source=source, require_credentials=settings.require_credentials,
    )
    stats = ReplayStats()
    total = count_minutes(rig, settings)
    for series in rig.market.bars.values():
        lo, hi = (dt.datetime.combine(d, dt.time(0), EXCHANGE_TZ).timestamp() for d in (settings.start, settings.end + dt.timedelta(days=1)))
        stats.bars += int(((series.start >= lo) & (series.start < hi)).sum())
    for session in rig.calendar.sessions(settings.start, settings.end):
        stats.sessions += 1
        for k in range(1, session.minutes):
            now = session.open + dt.timedelta(minutes=k)
            rig.clock.set(now)
            if on_minute:
                on_minute(now)
            stats.recommendations += rig.signals.run(now)
            local = now.astimezone(EXCHANGE_TZ)
            minute_of_day = local.hour * 60 + local.minute
            for account in rig.accounts:
                if account.config.account.schedule.fires_at(minute_of_day):
                    account.before_run(now)
                    account.position_manager.run()
                    account.dispatcher.run()
                    stats.position_manager_runs += 1
                    stats.dispatcher_runs += 1
            stats.minutes += 1
            if progress:
                progress(stats.minutes, total)
        rig.clock.set(session.close)
        rig.exchange.settle_expirations()
        for account in rig.accounts:
            account.position_manager.run()
            stats.position_manager_runs += 1
    return rig, stats
