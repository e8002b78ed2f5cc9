"""Waiting for an account's next run in market time, with an injected clock: a paper exchange's
market clock that runs 60 times faster than the wall clock, and a wall clock that only moves when
the code sleeps."""

import datetime as dt

import pytest

from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.config.models import Schedule
from ops_pipeline.domain.values import EXCHANGE_TZ
from ops_pipeline.services.schedule import MarketTimer, wait_for_next_run


def et(day: int, hh: int, mm: int, ss: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hh, mm, ss, tzinfo=EXCHANGE_TZ)


class FastExchange:
    """Market time = ``start`` + speed × wall seconds since creation; ``sleep`` moves the wall clock."""

    def __init__(self, start: dt.datetime, speed: float) -> None:
        self.start, self.speed, self.wall, self.slept = start, speed, 0.0, []

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.wall * self.speed)

    def monotonic(self) -> float:
        return self.wall

    def sleep(self, secs: float) -> None:
        assert secs >= 0
        self.slept.append(secs)
        self.wall += secs


@pytest.fixture(scope="module")
def calendar():
    return TradingCalendar()


def test_the_timer_learns_the_clocks_speed_and_converts_market_minutes_to_real_seconds():
    exchange = FastExchange(et(17, 11, 50), speed=60)
    timer = MarketTimer(exchange, monotonic=exchange.monotonic)
    timer.calibrate(exchange.sleep, secs=0.5)
    assert timer.speed == pytest.approx(60)
    assert timer.real_secs_until(exchange.now() + dt.timedelta(minutes=5)) == pytest.approx(5)


def test_the_timer_starts_over_when_the_clock_goes_back():
    exchange = FastExchange(et(17, 11, 50), speed=60)
    timer = MarketTimer(exchange, monotonic=exchange.monotonic)
    timer.calibrate(exchange.sleep, secs=0.5)
    exchange.start -= dt.timedelta(hours=1)  # a paper exchange restarted from an older state
    timer.read()
    assert timer.speed == 1.0


def test_an_account_waits_for_its_own_minutes_at_the_exchanges_speed(calendar):
    exchange = FastExchange(et(17, 11, 50, 30), speed=60)
    timer = MarketTimer(exchange, monotonic=exchange.monotonic)
    tiny = Schedule(every_minutes=5, offset_minutes=0)
    timer.calibrate(exchange.sleep, secs=0.3)
    fired = []
    for _ in range(3):
        due = wait_for_next_run(timer, tiny, calendar, sleep=exchange.sleep)
        assert exchange.now() >= due  # never early
        assert exchange.now() - due < dt.timedelta(seconds=30)  # and not a whole minute late
        fired.append(due.astimezone(EXCHANGE_TZ).strftime("%H:%M"))
    assert fired == ["11:55", "12:00", "12:05"]
    # 14.5 market minutes at 60x are about 14.5 real seconds, not 14.5 minutes
    assert exchange.wall == pytest.approx(14.5, abs=1.5)


def test_without_calibration_a_fast_clock_is_still_never_run_early_and_its_minute_is_taken_late(calendar):
    exchange = FastExchange(et(17, 11, 50, 30), speed=60)
    timer = MarketTimer(exchange, monotonic=exchange.monotonic)  # believes 1x until it reads again
    large = Schedule(every_minutes=1, offset_minutes=0)
    due = wait_for_next_run(timer, large, calendar, sleep=exchange.sleep)
    assert exchange.now() >= due and exchange.now() - due < dt.timedelta(minutes=1)


def test_closed_hours_and_the_night_are_skipped(calendar):
    exchange = FastExchange(et(17, 15, 57, 10), speed=600)
    timer = MarketTimer(exchange, monotonic=exchange.monotonic)
    timer.calibrate(exchange.sleep, secs=0.3)
    small = Schedule(every_minutes=5, offset_minutes=1)
    assert wait_for_next_run(timer, small, calendar, sleep=exchange.sleep).astimezone(EXCHANGE_TZ) == et(18, 9, 31)
    friday = FastExchange(et(20, 15, 59, 30), speed=600)  # 2026-03-20 is a Friday
    timer = MarketTimer(friday, monotonic=friday.monotonic)
    timer.calibrate(friday.sleep, secs=0.3)
    large = Schedule(every_minutes=1, offset_minutes=0)
    assert wait_for_next_run(timer, large, calendar, sleep=friday.sleep).astimezone(EXCHANGE_TZ) == et(23, 9, 31)


def test_a_minute_the_clock_jumped_past_is_not_caught_up(calendar):
    exchange = FastExchange(et(17, 11, 58, 30), speed=60)
    timer = MarketTimer(exchange, monotonic=exchange.monotonic)
    timer.calibrate(exchange.sleep, secs=0.3)
    large = Schedule(every_minutes=1, offset_minutes=0)
    original_sleep = exchange.sleep

    def sleep_then_jump(secs: float) -> None:
        original_sleep(secs)
        if exchange.now() < et(17, 12, 0):
            exchange.start += dt.timedelta(minutes=3)  # the exchange was paused, then skipped ahead
    due = wait_for_next_run(timer, large, calendar, sleep=sleep_then_jump)
    assert due > et(17, 11, 59) and exchange.now() - due < dt.timedelta(minutes=1)
