"""Operations pieces against real data and a real database: the live signal engine through
alpaca-py and the paper exchange's bars, the importer, account states, health, schedules."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from ops_pipeline.adapters.brokers.alpaca.client import RateLimiter
from ops_pipeline.adapters.brokers.alpaca.market_data import AlpacaMarketData
from ops_pipeline.adapters.brokers.paper_exchange.app import ApiKey, create_app
from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.db.tables import account_state_changes, recommendations
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, from_exchange
from ops_pipeline.bootstrap import load_market
from ops_pipeline.clock import SimulatedClock
from ops_pipeline.config.models import Schedule
from ops_pipeline.domain.states import StateChangeRefused, StateCommand, next_state
from ops_pipeline.domain.values import AccountState
from ops_pipeline.errors import DataError
from ops_pipeline.services.account_states import change_states
from ops_pipeline.services.imports import import_recommendations
from ops_pipeline.services.live_signals import LiveSignalEngine
from ops_pipeline.services.operations import health_of
from ops_pipeline.services.schedule import is_due, next_due
from ops_pipeline.services.signals import SignalEngine

CAL = TradingCalendar()
KEY, SECRET = "PKSIGNALS000001", "signals-secret"


def _rows(db):
    with db.read() as conn:
        return sorted((r.ticker, r.bar_ts, r.action, float(r.confidence), r.strategy_type)
                      for r in conn.execute(select(recommendations)))


@pytest.mark.data
def test_the_live_engine_through_alpaca_py_writes_what_the_replay_writes_once(data_dir, tmp_path):
    day = dt.date(2026, 3, 17)
    market, _ = load_market(data_dir, 1, ["SPY", "QQQ"], day, day, CAL, dt.timedelta(minutes=30))
    clock = SimulatedClock(from_exchange(dt.datetime(2026, 3, 17, 9, 50)))
    exchange = SimulatedExchange(market, clock, CAL)
    exchange.open_account("signals", 1000)
    server = serve_in_thread(create_app(exchange, {KEY: ApiKey("signals", SECRET)}, market, clock))
    live_db, replay_db = Database(sqlite_url(tmp_path / "live.db")), Database(sqlite_url(tmp_path / "replay.db"))
    live_db.upgrade()
    replay_db.upgrade()
    try:
        data = AlpacaMarketData(KEY, SECRET, trading_url=server.url, data_url=server.url,
                                limiter=RateLimiter(per_minute=100_000))  # market time runs faster here
        live = LiveSignalEngine(live_db, data, ("SPY", "QQQ"), CAL)
        replay = SignalEngine(replay_db, market.bars)
        now = clock.now()
        while now < from_exchange(dt.datetime(2026, 3, 17, 10, 50)):
            now += dt.timedelta(minutes=1)
            clock.set(now)
            served = data.minute_bars(["SPY"], now - dt.timedelta(minutes=10), now + dt.timedelta(hours=1))["SPY"]
            assert served.end[-1] <= now.timestamp()  # nothing from the future
            live.run(now)
            replay.run(now)
        assert _rows(live_db) == _rows(replay_db) and len(_rows(live_db)) >= 2
        assert live.run(now).written == 0  # the same minute again adds nothing
        again = LiveSignalEngine(live_db, data, ("SPY", "QQQ"), CAL)  # a restarted engine neither
        assert again.run(now).written == 0 and len(_rows(live_db)) == len(_rows(replay_db))
    finally:
        server.stop()


def test_import_keeps_good_rows_names_bad_ones_and_adds_nothing_twice(any_db, tmp_path):
    path = tmp_path / "recs.csv"
    path.write_text("ticker,action,strategy_type,confidence,volume_ratio,bar_ts,created_at,source\n"
                    "SPY,BUY_CALL,day_trade,0.7,2.5,2026-03-17T15:00:00Z,2026-03-17T15:00:30Z,desk\n"
                    "SPY,SELL_CALL,day_trade,0.7,2.5,2026-03-17T15:00:00Z,,\n"
                    "QQQ,BUY_PUT,swing_trade,abc,,2026-03-17T15:01:00Z,,\n"
                    "QQQ,BUY_PUT,swing_trade,0.5,1.5,2026-03-17T15:02:00,2026-03-17T15:01:00Z,\n")
    first = import_recommendations(any_db, path)
    assert (first.read, first.stored, first.duplicates) == (4, 1, 0)
    assert first.refused[0].startswith("line 3: action='SELL_CALL'")
    assert first.refused[1].startswith("line 4: volume_ratio: required") and "confidence='abc'" in first.refused[1]
    assert first.refused[2].startswith("line 5: bar_ts=2026-03-17 15:02:00Z is after created_at")
    assert import_recommendations(any_db, path).stored == 0
    as_json = tmp_path / "recs.json"
    as_json.write_text(json.dumps({"recommendations": [{"ticker": "SPY", "action": "BUY_CALL", "strategy_type": "day_trade",
                                                        "confidence": 0.7, "volume_ratio": 2.5, "bar_ts": "2026-03-17T15:00:00Z",
                                                        "source": "desk"}, 7]}))
    second = import_recommendations(any_db, as_json)
    assert (second.stored, second.duplicates, second.refused) == (0, 1, ["record 2: not an object"])
    with any_db.read() as conn:
        (row,) = conn.execute(select(recommendations)).all()
    assert (row.source, row.ticker, row.created_at) == ("desk", "SPY", dt.datetime(2026, 3, 17, 15, 0, 30, tzinfo=dt.UTC))
    typo = tmp_path / "typo.csv"
    typo.write_text("ticker,action,strategy,confidence,volume_ratio,bar_ts\n")
    with pytest.raises(DataError, match="unknown column.*strategy"):
        import_recommendations(any_db, typo)


@pytest.mark.parametrize(("state", "command", "expected"), [
    ("enabled", "pause", "paused"), ("paused", "resume", "enabled"), ("killed", "resume", "enabled"),
    ("disabled", "enable", "enabled"), ("enabled", "disable", "disabled"), ("paused", "kill", "killed"),
    ("disabled", "kill", "killed"), ("killed", "enable", None), ("killed", "disable", None), ("killed", "pause", None),
    ("disabled", "pause", None), ("disabled", "resume", None), ("paused", "enable", None),
])
def test_state_rules(state, command, expected):
    if expected is None:
        with pytest.raises(StateChangeRefused):
            next_state(AccountState(state), StateCommand(command))
    else:
        assert next_state(AccountState(state), StateCommand(command)) is AccountState(expected)


def test_state_changes_are_kept_with_who_when_why_and_resume_all_leaves_a_kill(any_db):
    at = dt.datetime(2026, 11, 21, 15, 0, tzinfo=dt.UTC)
    with any_db.transaction() as conn:
        for name in ("tiny-1k", "small-5k"):
            SharedRepository(conn).register_account(name=name, tier=name.split("-")[0], initial_balance=1000,
                                                    state="enabled", notes="", secret_name="", now=at)
    change_states(any_db, StateCommand.KILL, ["tiny-1k"], by="ops", reason="runaway", now=at, flatten=True)
    change_states(any_db, StateCommand.PAUSE, None, by="ops", reason="", now=at, only_from=AccountState.ENABLED)
    resumed = change_states(any_db, StateCommand.RESUME, None, by="ops", reason="", now=at, only_from=AccountState.PAUSED)
    assert [(c.account_name, c.outcome) for c in resumed] == [("tiny-1k", "unchanged"), ("small-5k", "changed")]
    with any_db.read() as conn:
        states = SharedRepository(conn).account_states()
        history = conn.execute(select(account_state_changes).order_by(account_state_changes.c.id)).all()
    assert (states["tiny-1k"].state, bool(states["tiny-1k"].flatten), states["small-5k"].state) == ("killed", True, "enabled")
    assert [(h.account_name, h.from_state, h.to_state, h.changed_by, h.reason) for h in history] == [
        ("tiny-1k", "enabled", "killed", "ops", "runaway"), ("small-5k", "enabled", "paused", "ops", ""),
        ("small-5k", "paused", "enabled", "ops", "")]


def test_health_counts_open_market_minutes_only():
    friday_close = from_exchange(dt.datetime(2026, 3, 13, 15, 59))
    monday = from_exchange(dt.datetime(2026, 3, 16, 9, 40))
    assert health_of("enabled", friday_close, monday, CAL) == ("active", 11)
    assert health_of("paused", friday_close, monday + dt.timedelta(minutes=30), CAL)[0] == "slow"
    assert health_of("enabled", friday_close, monday + dt.timedelta(hours=2), CAL)[0] == "stale"
    assert health_of("disabled", None, monday, CAL) == ("disabled", None)
    assert health_of("enabled", None, monday, CAL) == ("stale", None)


def test_schedules_follow_the_session_and_early_closes():
    tiny, small = Schedule(every_minutes=5, offset_minutes=0), Schedule(every_minutes=5, offset_minutes=1)
    open_ = from_exchange(dt.datetime(2026, 3, 16, 9, 30))
    assert not is_due(tiny, open_, CAL) and is_due(tiny, open_ + dt.timedelta(minutes=5), CAL)
    assert next_due([tiny, small], open_, CAL) == open_ + dt.timedelta(minutes=1)  # small at 9:31
    early_close = from_exchange(dt.datetime(2026, 11, 27, 12, 58))  # the day after Thanksgiving closes at 13:00
    assert next_due([tiny], early_close, CAL) == from_exchange(dt.datetime(2026, 11, 30, 9, 35))
    friday = from_exchange(dt.datetime(2026, 3, 13, 16, 30))
    assert next_due([small], friday, CAL) == from_exchange(dt.datetime(2026, 3, 16, 9, 31))
