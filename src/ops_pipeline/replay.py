"""Replay: the same signal engine, dispatcher, position manager and broker code over historical
data, on a simulated clock (SPEC "Replay").

For each session, minute by minute from one minute after the open to one minute before the close
(exchange time): set the clock; write the recommendations of bars that closed at that minute;
then, for each account in the accounts file's order whose schedule fires at that minute, run it
through :class:`~ops_pipeline.services.runner.AccountRunner` (its lock, its position manager, then
its dispatcher), as a live run does. At the close: settle expiring contracts and run every
account's position manager once more. Deterministic: the same inputs give the same rows.

The replay is its database's only writer: it holds every account's run lock from start to end
and writes inside one unit of work (:meth:`Database.unit_of_work`), committed once per session at
its close (with PostgreSQL's statistics refreshed), whose reads are cached until the rows they read
change. The services, their statements and the rows they write are the live ones; only the commits
are fewer. An error rolls back the session and stops the replay.
"""

from __future__ import annotations

import datetime as dt
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ
from ops_pipeline.bootstrap import ReplayInputs, ReplayRig, build_replay, load_replay_inputs
from ops_pipeline.config.loader import ConfigSource
from ops_pipeline.services.runner import AccountRunner

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
    chain_cache: Path | None = None
    """Folder of parsed option-chain days kept between replays (None: parse every time)."""


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


def load_inputs(settings: ReplaySettings, source: ConfigSource | None = None) -> ReplayInputs:
    """Load and check everything ``settings`` names, before any database is touched.

    Raises:
        ConfigError, DataError: see :func:`~ops_pipeline.bootstrap.load_replay_inputs`.
    """
    return load_replay_inputs(
        data_dir=settings.data_dir, interval_minutes=settings.interval_minutes, tickers=list(settings.tickers),
        start=settings.start, end=settings.end, config_dir=settings.config_dir, max_quote_age=settings.max_quote_age,
        accounts=list(settings.accounts) or None, source=source, chain_cache=settings.chain_cache)


YOUNG_COLLECTION_OBJECTS = 20_000
"""During a replay, the cyclic garbage collector's first threshold (Python's default: 700 new
objects); an account run allocates a few thousand."""


_COLLECTOR = threading.Lock()
_collector_users = 0
_collector_thresholds: tuple[int, ...] = ()


@contextmanager
def long_lived_inputs() -> Iterator[None]:
    """For a replay's loop: what exists when it starts (the loaded bars and option chains, millions
    of objects that live to the end) is moved out of the cyclic garbage collector's sight
    (``gc.freeze``) and young objects are collected every :data:`YOUNG_COLLECTION_OBJECTS`
    allocations. Without it every full collection walks the inputs again: 1.4–1.8 s of collector in
    the six-month replay, 0.3 s with it (measured 2026-12-06, docs/performance.md). Nothing is
    collected less: garbage among new objects is still found, only later. When the last replay of
    the process leaves (several may run at once in threads: a Dask worker's), the thresholds it
    found are restored and the frozen objects handed back to the oldest generation."""
    global _collector_users, _collector_thresholds
    with _COLLECTOR:
        if _collector_users == 0:
            _collector_thresholds = gc.get_threshold()
            gc.collect()
            gc.set_threshold(YOUNG_COLLECTION_OBJECTS, *_collector_thresholds[1:])
        gc.freeze()
        _collector_users += 1
    try:
        yield
    finally:
        with _COLLECTOR:
            _collector_users -= 1
            if _collector_users == 0:
                gc.set_threshold(*_collector_thresholds)
                gc.unfreeze()


def run_replay(db: Database, settings: ReplaySettings, progress: ProgressFn | None = None,
               source: ConfigSource | None = None, on_minute: Callable[[dt.datetime], None] | None = None,
               inputs: ReplayInputs | None = None) -> tuple[ReplayRig, ReplayStats]:
    """Replay ``settings`` into ``db`` (already migrated); ``progress(done, total)`` per minute.

    ``source`` overrides where configuration comes from (default: the environment's stores);
    ``on_minute(now)`` is called at each minute before any run (what a scheduler sees between runs);
    ``inputs`` are the already loaded inputs (:func:`load_inputs`), else they are loaded here.
    """
    inputs = inputs or load_inputs(settings, source)
    rig = build_replay(db=db, inputs=inputs, require_credentials=settings.require_credentials)
    stats = ReplayStats(bars=inputs.bars_in_window)
    runners = [AccountRunner(db, account) for account in rig.accounts]
    total = count_minutes(rig, settings)
    with ExitStack() as held:
        held.enter_context(long_lived_inputs())
        for runner in runners:  # for the whole replay: every run finds the lock held (see AccountRunner)
            held.enter_context(db.account_lock(runner.name, wait_secs=0))
        uow = held.enter_context(db.unit_of_work(write_behind=True))
        for session in inputs.sessions:
            stats.sessions += 1
            for k in range(1, session.minutes):
                now = session.open + dt.timedelta(minutes=k)
                rig.clock.set(now)
                if on_minute:
                    on_minute(now)
                stats.recommendations += rig.signals.run(now)
                local = now.astimezone(EXCHANGE_TZ)
                minute_of_day = local.hour * 60 + local.minute
                for runner in runners:
                    if runner.runtime.config.account.schedule.fires_at(minute_of_day):
                        runner.run_once()
                        stats.position_manager_runs += 1
                        stats.dispatcher_runs += 1
                stats.minutes += 1
                if progress:
                    progress(stats.minutes, total)
            rig.clock.set(session.close)
            rig.exchange.settle_expirations()
            for runner in runners:
                runner.run_once(dispatch=False)
                stats.position_manager_runs += 1
            if stats.sessions & (stats.sessions - 1) == 0:  # sessions 1, 2, 4, 8, …: the tables about doubled
                uow.refresh_statistics()
            else:
                uow.commit()
    return rig, stats
