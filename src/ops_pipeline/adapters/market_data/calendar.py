"""The NYSE trading calendar (exchange_calendars XNYS): sessions, opens, closes, early closes.

Exchange time is US/Eastern. Helpers convert between naive exchange time, aware UTC and epoch
seconds; everything past this module works in aware UTC datetimes or epoch seconds.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import exchange_calendars as xcals

from ops_pipeline.domain.values import EXCHANGE_TZ

UTC = dt.UTC


def to_exchange(ts: dt.datetime) -> dt.datetime:
    """An aware datetime in US/Eastern."""
    return ts.astimezone(EXCHANGE_TZ)


def exchange_date(ts: dt.datetime) -> dt.date:
    """The US/Eastern calendar date of an aware datetime."""
    return _utc_exchange_date(ts) if ts.tzinfo is UTC else ts.astimezone(EXCHANGE_TZ).date()


@lru_cache(maxsize=4096)
def _utc_exchange_date(ts: dt.datetime) -> dt.date:
    """:func:`exchange_date` of a UTC time, remembered (every run asks it of the same minute many
    times; equal UTC times are one instant, which times of a zone with a repeated hour are not)."""
    return ts.astimezone(EXCHANGE_TZ).date()


def from_exchange(naive: dt.datetime) -> dt.datetime:
    """Naive US/Eastern wall time → aware UTC."""
    return naive.replace(tzinfo=EXCHANGE_TZ).astimezone(UTC)


def epoch_to_utc(seconds: int | float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(seconds), tz=UTC)


@dataclass(frozen=True, slots=True)
class Session:
    """One trading day: its date and its open and close as aware UTC datetimes."""

    date: dt.date
    open: dt.datetime
    close: dt.datetime

    @property
    def minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)


class TradingCalendar:
    """Sessions of the NYSE between 2015 and 2030, early closes included."""

    def __init__(self) -> None:
        self._by_date = _all_sessions()
        self._dates = sorted(self._by_date)

    def sessions(self, start: dt.date, end: dt.date) -> list[Session]:
        """Every session from ``start`` to ``end`` inclusive, in order."""
        lo, hi = bisect.bisect_left(self._dates, start), bisect.bisect_right(self._dates, end)
        return [self._by_date[d] for d in self._dates[lo:hi]]

    def session(self, day: dt.date) -> Session | None:
        """The session on ``day``, or ``None`` when the market is closed that day."""
        return self._by_date.get(day)

    def is_open(self, ts: dt.datetime) -> bool:
        """True when regular trading is on at ``ts`` (open ≤ ts < close)."""
        session = self.session(exchange_date(ts))
        return session is not None and session.open <= ts < session.close


@lru_cache(maxsize=1)
def _all_sessions() -> dict[dt.date, Session]:
    cal = xcals.get_calendar("XNYS", start="2015-01-01", end="2030-12-31")
    return {
        label.date(): Session(label.date(), o.to_pydatetime(), c.to_pydatetime())
        for label, o, c in zip(cal.sessions, cal.opens, cal.closes, strict=True)
    }
