"""The signal engine live (SPEC "The signal engine"): once a minute, read the configured tickers'
1-minute bars from the broker's market data and write the signals of bars that just closed.

The same :func:`~ops_pipeline.services.signals.compute_signals` as the replay, on the same window
(the previous session and today, regular hours only), so a live minute writes what the replay would
for that bar. Bars are fetched once and then only the new ones (bars do not change once closed).

- **Idempotent** on (ticker, bar time): a recommendation already stored for a bar is not written
  again, so a run repeated after a crash, or two engines by mistake, add nothing.
- **One writer**: the supervisor runs one engine; each run also holds the database lock
  :data:`LOCK_NAME`, so a second engine started by hand waits its turn instead of racing.
- A minute missed (the engine was down) is caught up: signals of bars that closed within the last
  :data:`CATCH_UP_MINUTES` minutes are written; older ones would be stale for every account anyway.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.market_data.bars import BarQuality, BarSeries
from ops_pipeline.adapters.market_data.calendar import Session, TradingCalendar, exchange_date
from ops_pipeline.services.runs import account_log
from ops_pipeline.services.signals import compute_signals, write_signals

LOCK_NAME = "signal-engine"
CATCH_UP_MINUTES = 5
LOOKBACK_DAYS = 10
"""Calendar days searched back for the previous session (long weekends and holidays)."""


class BarSource(Protocol):
    def minute_bars(self, tickers: list[str], start: dt.datetime, end: dt.datetime) -> dict[str, BarSeries]: ...


@dataclass(frozen=True, slots=True)
class SignalRun:
    """One minute of the engine: bars read, recommendations written (new ones), the latest bar's close."""

    at: dt.datetime
    bars_read: int
    written: int
    latest_bar_close: dt.datetime | None


class LiveSignalEngine:
    """Writes recommendations from live 1-minute bars; one instance per process.

    Args:
        tickers: symbols to read (the accounts file's ``[signals] tickers``).
    """

    def __init__(self, db: Database, bars: BarSource, tickers: tuple[str, ...], calendar: TradingCalendar) -> None:
        self.db, self.bars, self.tickers, self.calendar = db, bars, list(tickers), calendar
        self._cache: dict[str, BarSeries] = {}
        self._window_start: dt.datetime | None = None
        self.log = account_log("signals", "-")

    def run(self, now: dt.datetime) -> SignalRun:
        """Read the bars closed by ``now`` (aware) and write the signals of the last minutes' bars.

        Raises:
            MarketDataError: the bars cannot be read (nothing is written).
        """
        session = self.calendar.session(exchange_date(now))
        if session is None or not session.open < now <= session.close:
            return SignalRun(now, 0, 0, None)
        window_start = self._previous(session).open
        if window_start != self._window_start:
            self._cache, self._window_start = {}, window_start
        read = self._refresh(window_start, now)
        written, latest = 0, None
        with self.db.account_lock(LOCK_NAME, wait_secs=30):
            for ticker in self.tickers:
                series = self._regular_hours(self._cache.get(ticker))
                if series is None or not len(series):
                    continue
                latest_epoch = int(series.end[-1])
                latest = max(latest or dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.fromtimestamp(latest_epoch, dt.UTC))
                recent = [s for s in compute_signals(series)
                          if now.timestamp() - CATCH_UP_MINUTES * 60 < s.bar_close_epoch <= now.timestamp()]
                written += write_signals(self.db, recent, now)
        if written:
            self.log.info("%s recommendation(s) written from bars up to %s", written, f"{latest:%H:%M}Z")
        return SignalRun(now, read, written, latest)

    def _previous(self, session: Session) -> Session:
        earlier = self.calendar.sessions(session.date - dt.timedelta(days=LOOKBACK_DAYS), session.date - dt.timedelta(days=1))
        return earlier[-1] if earlier else session

    def _refresh(self, window_start: dt.datetime, now: dt.datetime) -> int:
        """Fetch the bars after the cached ones; returns how many were read."""
        known = [int(s.start[-1]) for s in self._cache.values() if len(s)]
        since = dt.datetime.fromtimestamp(min(known) + 60, dt.UTC) if len(known) == len(self.tickers) else window_start
        fresh = self.bars.minute_bars(self.tickers, since, now)
        read = 0
        for ticker, new in fresh.items():
            old = self._cache.get(ticker)
            if old is not None and len(old):
                new = _append(old, _take(new, new.start > old.start[-1]))
            read += len(new) - (len(old) if old is not None else 0)
            self._cache[ticker] = new
        return read

    def _regular_hours(self, series: BarSeries | None) -> BarSeries | None:
        """Only bars inside a session (Alpaca also serves pre- and post-market bars)."""
        if series is None or not len(series):
            return series
        keep = np.zeros(len(series), dtype=bool)
        days = {exchange_date(dt.datetime.fromtimestamp(int(t), dt.UTC)) for t in (series.start[0], series.start[-1])}
        for s in self.calendar.sessions(min(days), max(days)):
            keep |= (series.start >= s.open.timestamp()) & (series.start + series.interval_secs <= s.close.timestamp())
        return series if keep.all() else _take(series, keep)


FIELDS = ("start", "open", "high", "low", "close", "volume")


def _take(series: BarSeries, mask: np.ndarray) -> BarSeries:
    """The rows of ``series`` where ``mask`` is true."""
    return BarSeries(ticker=series.ticker, interval_secs=series.interval_secs, quality=BarQuality(path=series.quality.path),
                     **{f: getattr(series, f)[mask] for f in FIELDS})


def _append(old: BarSeries, new: BarSeries) -> BarSeries:
    """``old`` followed by ``new``."""
    return BarSeries(ticker=old.ticker, interval_secs=old.interval_secs, quality=BarQuality(path=old.quality.path),
                     **{f: np.concatenate((getattr(old, f), getattr(new, f))) for f in FIELDS})
