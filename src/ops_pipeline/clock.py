"""Clocks: the only place the time is read. Services get one injected (``ports.Clock``)."""

from __future__ import annotations

import datetime as dt


class SystemClock:
    """Wall-clock time, aware UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class SimulatedClock:
    """A clock that shows what it was last set to (replays and tests).

    Raises:
        ValueError: set to a naive datetime, or moved backwards.
    """

    def __init__(self, start: dt.datetime) -> None:
        self._now = self._check(start)

    @staticmethod
    def _check(value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("SimulatedClock needs an aware datetime")
        return value.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def set(self, value: dt.datetime) -> None:
        value = self._check(value)
        if value < self._now:
            raise ValueError(f"the clock cannot go back from {self._now} to {value}")
        self._now = value
