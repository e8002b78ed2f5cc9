"""When runs are due, in market time (SPEC "Operations", seed 002 "Stagger Schedulers").

A job (an account, or the signal engine) is due at minute *M* of a session when its schedule fires
at *M* (``every_minutes``, ``offset_minutes`` past, exchange time) and ``open < M < close``: the
same minutes as the replay (the open's minute has no closed bar yet; the close's belongs to the
next day). Early closes come from the NYSE calendar.

:class:`MarketTimer` turns market time into real waiting: it reads the injected clock (the broker's
``/v2/clock``: real time at Alpaca, market time at a paper exchange that may run ``--speed 60``),
estimates how fast market time runs against the wall clock, and says how many real seconds remain
until a market instant. It re-reads the clock before anything fires, so a wrong estimate delays a
run a little; it never fires one early.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.config.models import Schedule
from ops_pipeline.domain.values import EXCHANGE_TZ
from ops_pipeline.ports import Clock

MINUTE = dt.timedelta(minutes=1)
SEARCH_DAYS = 14
"""Calendar days searched ahead for the next session (long weekends, holidays)."""


def floor_minute(t: dt.datetime) -> dt.datetime:
    return t.replace(second=0, microsecond=0)


def is_due(schedule: Schedule, minute: dt.datetime, calendar: TradingCalendar) -> bool:
    """True when a job on ``schedule`` runs at ``minute`` (aware, a whole minute)."""
    session = calendar.session(exchange_date(minute))
    if session is None or not session.open < minute < session.close:
        return False
    local = minute.astimezone(EXCHANGE_TZ)
    return schedule.fires_at(local.hour * 60 + local.minute)


def next_due(schedules: list[Schedule], after: dt.datetime, calendar: TradingCalendar) -> dt.datetime | None:
    """The first whole minute strictly after ``after`` at which any of ``schedules`` is due, skipping
    closed hours and days; ``None`` when no session starts within :data:`SEARCH_DAYS` days."""
    minute = floor_minute(after) + MINUTE
    for session in calendar.sessions(exchange_date(minute), exchange_date(minute) + dt.timedelta(days=SEARCH_DAYS)):
        m = max(minute, session.open + MINUTE)
        while m < session.close:
            local = m.astimezone(EXCHANGE_TZ)
            if any(s.fires_at(local.hour * 60 + local.minute) for s in schedules):
                return m
            m += MINUTE
    return None


class MarketTimer:
    """Market time from ``clock``, and real seconds until a market instant.

    Args:
        monotonic: the wall clock used between reads (injected in tests).
        resync_secs: real seconds after which a prediction is checked against the clock again.
    """

    MIN_SPEED, MAX_SPEED = 0.01, 10_000.0

    def __init__(self, clock: Clock, *, monotonic: Callable[[], float] = time.monotonic, resync_secs: float = 5.0) -> None:
        self.clock, self.monotonic, self.resync_secs = clock, monotonic, resync_secs
        self.speed = 1.0
        self._anchor: tuple[dt.datetime, float] | None = None
        self._calibration: tuple[dt.datetime, float] | None = None

    def read(self) -> dt.datetime:
        """The clock's time now (and a better estimate of its speed).

        Raises:
            MarketDataError, BrokerError: the clock cannot be read.
        """
        market = self.clock.now()
        wall = self.monotonic()
        if self._calibration is not None:
            m0, w0 = self._calibration
            if market < m0:  # the clock went back (a paper exchange restarted): start over
                self._calibration, self.speed = None, 1.0
            elif wall - w0 >= 0.2:
                self.speed = min(self.MAX_SPEED, max(self.MIN_SPEED, (market - m0).total_seconds() / (wall - w0)))
                if wall - w0 >= 60:
                    self._calibration = (market, wall)
        if self._calibration is None:
            self._calibration = (market, wall)
        self._anchor = (market, wall)
        return market

    def calibrate(self, wait: Callable[[float], object] = time.sleep, secs: float = 0.3) -> dt.datetime:
        """Two reads ``secs`` apart, so the first wait already knows the clock's speed.

        Raises:
            MarketDataError, BrokerError: the clock cannot be read.
        """
        self.read()
        wait(secs)
        return self.read()

    def predict(self) -> dt.datetime:
        """Market time now by the last read and the speed estimate (no clock read)."""
        if self._anchor is None:
            return self.read()
        market, wall = self._anchor
        return market + dt.timedelta(seconds=(self.monotonic() - wall) * self.speed)

    def real_secs_until(self, target: dt.datetime) -> float:
        """Real seconds until market time ``target`` (≤ 0: due now by the estimate)."""
        if self._anchor is not None and self.monotonic() - self._anchor[1] > self.resync_secs:
            self.read()
        return (target - self.predict()).total_seconds() / self.speed


def wait_for_next_run(timer: MarketTimer, schedule: Schedule, calendar: TradingCalendar, *,
                      sleep: Callable[[float], object] = time.sleep, tick_secs: float = 1.0,
                      idle_secs: float = 60.0) -> dt.datetime:
    """Wait, in real time, for the next market minute at which ``schedule`` is due, and return it
    (aware UTC) once the clock shows it: never early, closed hours and days skipped, market time
    followed at the clock's speed (a paper exchange at ``--speed 60`` included; call
    :meth:`MarketTimer.calibrate` once first). Minutes the clock jumped past are not caught up: the
    minute it shows is taken if due, else the next due one.

    ``sleep`` and ``timer``'s monotonic clock are injected in tests; waits are at most ``tick_secs``
    real seconds between checks; with no session in :data:`SEARCH_DAYS` days it waits ``idle_secs``
    and looks again.

    Raises:
        MarketDataError, BrokerError: the clock cannot be read (the caller retries).
    """
    target: dt.datetime | None = None
    while True:
        if target is None:
            target = next_due([schedule], timer.read(), calendar)
            if target is None:
                sleep(idle_secs)
                continue
        remaining = timer.real_secs_until(target)
        if remaining > 0:
            sleep(min(remaining, tick_secs))
            continue
        now = timer.read()
        if now < target:
            continue
        if now >= target + MINUTE:  # the clock jumped past it (a paused or restarted exchange)
            late = floor_minute(now)
            if is_due(schedule, late, calendar):
                return late
            target = None
            continue
        return target
