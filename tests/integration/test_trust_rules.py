"""The daily loss latch (item 1) and bad recommendations (item 9), on SQLite and PostgreSQL with the
real dispatcher, position manager and simulated exchange."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select, text

from ops_pipeline.adapters.db.repositories import AccountRepository
from ops_pipeline.adapters.db.tables import active_positions, daily_loss_halts, dispatch_decisions, dispatch_executions
from ops_pipeline.reports.invariants import check_account
from tests.factories import NOON, account_config, quote
from tests.integration.test_services import SYMBOL, Rig

QQQ = "QQQ260327C00600000"


def latched_rig(db, **overrides):
    """large-100k with SPY and QQQ chains; stops far away so only the latch decides."""
    cfg = account_config("large-100k", **{"ticker_cooldown_minutes": 0, "stop_loss_pct": 0.9, **overrides})
    rig = Rig(db, cfg)
    rig.market.set_quote(quote(QQQ, bid="2.46", ask="2.50"))
    return rig


def test_once_the_days_loss_is_reached_nothing_opens_until_the_next_day_whatever_the_pnl_does(any_db):
    rig = latched_rig(any_db)
    rig.recommend(0)
    assert rig.dispatcher("large-100k").run().executed == 1  # 8 contracts of SPY at 2.50
    rig.advance(1)
    rig.market.set_quote(quote(SYMBOL, bid="1.68", ask="1.72", at=rig.clock.now()))  # mid 1.70: −$640 unrealized
    rig.manager("large-100k").run()
    rig.advance(1)
    rig.market.set_quote(quote(SYMBOL, bid="2.58", ask="2.62", at=rig.clock.now()))  # mid 2.60: back to +$80
    rig.manager("large-100k").run()
    rig.recommend(2, "QQQ")
    summary = rig.dispatcher("large-100k").run()
    assert summary.rejected == {"daily_loss_limit": 1} and summary.executed == 0
    (decision,) = [d for d in rig.rows(dispatch_decisions, "large-100k") if d.recommendation_id == 2]
    assert decision.reason_detail == "halted 12:01 ET at day P&L \u2212640.00, max 500.00"
    (halt,) = rig.rows(daily_loss_halts, "large-100k")
    assert (halt.trading_date, halt.day_pnl, halt.max_daily_loss, halt.action) == (
        dt.date(2026, 3, 16), Decimal("-640.00"), Decimal("500.00"), "halt")
    # a restarted process (new services) reads the same latch
    rig.advance(1)
    rig.recommend(3, "QQQ")
    assert rig.dispatcher("large-100k").run().rejected == {"daily_loss_limit": 1}
    # the next exchange day trades again
    rig.clock.set(NOON + dt.timedelta(days=1))
    rig.market.set_quote(quote(QQQ, bid="2.46", ask="2.50", at=rig.clock.now()))
    rig.recommend(60 * 24, "QQQ")
    assert rig.dispatcher("large-100k").run().executed == 1
    with any_db.read() as conn:
        assert check_account(conn, rig.configs["large-100k"]) == []


def test_a_realized_loss_past_the_limit_latches_even_while_an_open_gain_offsets_it(any_db):
    """The seen case: realized −616 by 11:23 while another position's gain lifted the day above −500."""
    rig = latched_rig(any_db, stop_loss_pct=0.25)
    rig.recommend(0)
    rig.recommend(0, "QQQ")
    assert rig.dispatcher("large-100k").run().executed == 2
    rig.manager("large-100k").run()
    rig.advance(1)
    rig.market.set_quote(quote(SYMBOL, bid="1.73", ask="1.77", at=rig.clock.now()))  # stop 1.88: sold at 1.73, −$616
    rig.market.set_quote(quote(QQQ, bid="3.10", ask="3.14", at=rig.clock.now()))  # mid 3.12: open gain +$496
    assert rig.manager("large-100k").run().closed == {"stop_loss": 1}
    rig.recommend(1, "TSLA")
    summary = rig.dispatcher("large-100k").run()
    assert summary.rejected == {"daily_loss_limit": 1}
    (halt,) = rig.rows(daily_loss_halts, "large-100k")
    assert (halt.realized_pnl, halt.day_pnl) == (Decimal("-616.00"), Decimal("-120.00"))
    (decision,) = [d for d in rig.rows(dispatch_decisions, "large-100k") if d.recommendation_id == 3]
    assert decision.reason_detail == "halted 12:01 ET at day P&L \u2212120.00 (realized \u2212616.00), max 500.00"


def test_flatten_sells_every_open_position_at_the_bid_when_the_latch_is_set(any_db):
    rig = latched_rig(any_db, daily_loss_action="flatten")
    rig.recommend(0)
    rig.recommend(0, "QQQ")
    assert rig.dispatcher("large-100k").run().executed == 2
    rig.manager("large-100k").run()
    rig.advance(1)
    rig.market.set_quote(quote(SYMBOL, bid="1.90", ask="1.94", at=rig.clock.now()))  # mid 1.92: −$464
    rig.market.set_quote(quote(QQQ, bid="2.40", ask="2.44", at=rig.clock.now()))  # mid 2.42: −$64, day −$528
    assert rig.manager("large-100k").run().closed == {"daily_loss_flatten": 2}
    closed = rig.rows(active_positions, "large-100k")
    assert [(p.status, p.exit_price) for p in closed] == [("closed", Decimal("1.9000")), ("closed", Decimal("2.4000"))]
    assert rig.exchange.broker_for("large-100k").get_positions() == []
    (halt,) = rig.rows(daily_loss_halts, "large-100k")
    assert halt.action == "flatten"


def insert_raw(db, rows: list[dict]) -> None:
    """Rows as another service writes them: plain SQL, no validation, values as given."""
    columns = ("source", "ticker", "action", "strategy_type", "confidence", "volume_ratio", "underlying_price",
               "bar_ts", "feature_ts", "created_at")
    with db.transaction() as conn:
        for i, values in enumerate(rows):
            row = {"source": f"other-{i}", "ticker": "SPY", "action": "BUY_CALL", "strategy_type": "swing_trade",
                   "confidence": 0.8, "volume_ratio": 2.5, "underlying_price": 660, "bar_ts": NOON, "feature_ts": NOON,
                   "created_at": NOON, **values}
            if db.dialect == "sqlite":
                row = {k: (v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, dt.datetime) else v)
                       for k, v in row.items()}
            conn.execute(text(f"INSERT INTO recommendations ({', '.join(columns)}) "
                              f"VALUES ({', '.join(':' + c for c in columns)})"), row)


BAD = [  # (raw values, the field named, the value shown)
    ({"confidence": 1.5}, "confidence=", "1.5"),
    ({"confidence": "NaN"}, "confidence=", "NaN"),
    ({"volume_ratio": "NaN"}, "volume_ratio=", "NaN"),
    ({"volume_ratio": -1}, "volume_ratio=", "-1"),
    ({"ticker": "SPY,QQQ"}, "ticker=", "'SPY,QQQ'"),
    ({"ticker": "soxl"}, "ticker=", "'soxl'"),
    ({"bar_ts": NOON + dt.timedelta(minutes=5), "feature_ts": NOON + dt.timedelta(minutes=5)},
     "bar_ts=", "2026-03-16 16:05:00Z is after created_at"),
    ({"action": "SELL_CALL"}, "action=", "'SELL_CALL'"),
    ({"strategy_type": "scalp"}, "strategy_type=", "'scalp'"),
]
SQLITE_ONLY = [  # values PostgreSQL's column types refuse at insert, but SQLite keeps
    ({"confidence": "high"}, "confidence=", "'high'"),
    ({"ticker": "X" * 300}, "ticker=", "'XXXXXXXX"),
    ({"volume_ratio": "Infinity"}, "volume_ratio=", "Infinity"),
]


def test_bad_recommendations_never_trade_never_block_and_say_what_is_wrong(any_db):
    corpus = BAD + (SQLITE_ONLY if any_db.dialect == "sqlite" else [])
    rig = latched_rig(any_db, max_signals_per_run=50)
    insert_raw(any_db, [values for values, _, _ in corpus])
    rig.recommend(0)  # a good one among them
    summary = rig.dispatcher("large-100k").run()
    assert summary.error is None
    assert summary.executed == 1 and summary.rejected == {"invalid_recommendation": len(corpus)}
    decisions = {d.recommendation_id: d for d in rig.rows(dispatch_decisions, "large-100k")}
    for rec_id, (_, field, value) in enumerate(corpus, start=1):
        detail = decisions[rec_id].reason_detail
        assert decisions[rec_id].reason_code == "invalid_recommendation", rec_id
        assert detail.startswith(field) and value in detail, detail
    (execution,) = rig.rows(dispatch_executions, "large-100k")
    assert execution.ticker == "SPY" and execution.recommendation_id == len(corpus) + 1
    # every other account judges them for itself: the same rows, the same answers
    other = Rig(any_db, account_config("tiny-1k", ticker_cooldown_minutes=0, max_signals_per_run=50))
    assert other.dispatcher("tiny-1k").run().rejected["invalid_recommendation"] == len(corpus)


def test_a_bad_row_next_to_a_good_one_does_not_stop_any_account(any_db):
    """Seen: one SELL_CALL row raised inside the claim, and every run of every account crashed."""
    rig = latched_rig(any_db)
    insert_raw(any_db, [{"action": "SELL_CALL"}])
    rig.recommend(0)
    for _ in range(3):
        rig.dispatcher("large-100k").run()
        rig.advance(1)
    with any_db.read() as conn:
        statuses = conn.execute(select(dispatch_decisions.c.status).order_by(dispatch_decisions.c.recommendation_id)).all()
        assert [s for (s,) in statuses] == ["rejected", "executed"]
        assert AccountRepository(conn, "large-100k").unsettled_executions() == []


def test_normalised_tickers_keep_per_ticker_limits_whole(any_db):
    """`soxl` must not count as another ticker than `SOXL`: it is refused, not traded past the limit."""
    rig = latched_rig(any_db, max_trades_per_ticker_per_day=1)
    rig.recommend(0)
    insert_raw(any_db, [{"ticker": "spy", "created_at": NOON + dt.timedelta(minutes=1),
                         "bar_ts": NOON + dt.timedelta(minutes=1), "feature_ts": NOON + dt.timedelta(minutes=1)}])
    rig.advance(2)
    summary = rig.dispatcher("large-100k").run()
    assert summary.executed == 1 and summary.rejected == {"invalid_recommendation": 1}
