"""The Alpaca adapter (alpaca-py) against the paper exchange on 127.0.0.1, faults included, and
the dispatcher and position manager running unchanged on it."""

import datetime as dt
import logging
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select

from ops_pipeline.adapters.brokers.alpaca.client import AlpacaBroker, RateLimiter
from ops_pipeline.adapters.brokers.paper_exchange.app import ApiKey, create_app
from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.db.tables import active_positions, dispatch_decisions, dispatch_executions
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.bootstrap import verify_alpaca_account
from ops_pipeline.clock import SimulatedClock
from ops_pipeline.domain.values import ExecutionMode, OccSymbol
from ops_pipeline.errors import ConfigError, OrderRejected, PositionNotFound
from ops_pipeline.ports import OrderRequest, OrderSide
from ops_pipeline.services.dispatcher import Dispatcher
from ops_pipeline.services.position_manager import PositionManager
from tests.factories import NOON, account_config, quote
from tests.fakes import FakeMarket, Faults, add_faults

CAL = TradingCalendar()
SYMBOLS = ["SPY260327C00660000", "SPY260327C00665000", "QQQ260327P00590000"]
KEY, SECRET = "PKLARGETESTKEY01", "large-secret"


class Venue:
    """A paper exchange with one account, served on 127.0.0.1, and the faults armed on it."""

    def __init__(self, cash: str = "100000", options_level: int = 2) -> None:
        self.market = FakeMarket([quote(s, bid="2.46", ask="2.50") for s in SYMBOLS],
                                 prices={"SPY": Decimal("660"), "QQQ": Decimal("600")})
        self.clock = SimulatedClock(NOON)
        self.exchange = SimulatedExchange(self.market, self.clock, CAL)
        self.exchange.open_account("large-100k", Decimal(cash))
        self.faults = Faults()
        app = create_app(self.exchange, {KEY: ApiKey("large-100k", SECRET, options_level)}, self.market, self.clock)
        add_faults(app, self.faults)
        self.server = serve_in_thread(app)
        self.sleeps: list[float] = []

    def broker(self, timeout_secs: float = 5.0) -> AlpacaBroker:
        fake_time = iter(range(10**9))
        limiter = RateLimiter(monotonic=lambda: float(next(fake_time)), sleep=self.sleeps.append)
        return AlpacaBroker(KEY, SECRET, base_url=self.server.url, timeout_secs=timeout_secs, limiter=limiter,
                            sleep=self.sleeps.append)

    @property
    def book(self):
        return self.exchange.broker_for("large-100k")


@pytest.fixture
def venue():
    v = Venue()
    yield v
    v.server.stop()


def buy(cid: str, qty: int = 2, symbol: str = SYMBOLS[0]) -> OrderRequest:
    return OrderRequest(cid, OccSymbol.parse(symbol), OrderSide.BUY, qty)


def test_a_504_after_the_order_was_taken_gives_exactly_one_order(venue):
    venue.faults.status_after_order = 504
    result = venue.broker().submit_order(buy("ops-large-100k-rec1"))
    assert (result.client_order_id, result.filled_qty, result.filled_avg_price) == ("ops-large-100k-rec1", 2, Decimal("2.50"))
    assert venue.faults.order_posts == 1 and len(venue.book.orders()) == 1
    assert [p.qty for p in venue.book.get_positions()] == [2]


def test_a_429_waits_and_then_succeeds(venue):
    venue.faults.rate_limited = 1
    result = venue.broker().submit_order(buy("ops-large-100k-rec2"))
    assert result.filled_qty == 2 and venue.sleeps == [2.0]  # the Retry-After of the 429
    assert len(venue.book.orders()) == 1


def test_a_timeout_is_resolved_by_client_order_id(venue):
    release = threading.Event()
    venue.faults.hold_after_order = release
    try:
        result = venue.broker(timeout_secs=0.3).submit_order(buy("ops-large-100k-rec3"))
    finally:
        release.set()
    assert result.client_order_id == "ops-large-100k-rec3" and result.filled_qty == 2
    assert len(venue.book.orders()) == 1


def test_refusals_map_to_our_errors(venue):
    broker = venue.broker()
    with pytest.raises(OrderRejected) as err:
        broker.submit_order(buy("too-big", qty=1000))
    assert err.value.code == "insufficient_buying_power"
    with pytest.raises(PositionNotFound):
        broker.close_position(OccSymbol.parse(SYMBOLS[2]), 1, "close-nothing")
    assert venue.faults.order_posts == 1  # the close sent nothing


def test_live_keys_and_live_urls_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="not a paper key") as err:
        AlpacaBroker("AKLIVEKEY000001234", "s")
    assert "…1234" in str(err.value) and "AKLIVEKEY" not in str(err.value)
    with pytest.raises(ConfigError, match="live trading endpoint"):
        AlpacaBroker(KEY, SECRET, base_url="https://api.alpaca.markets")


def rig(db, broker, market, clock, cfg):
    with db.transaction() as conn:
        SharedRepository(conn).register_account(name=cfg.name, tier=cfg.risk.account_tier.value,
                                                initial_balance=cfg.account.initial_balance, state="enabled",
                                                notes="", secret_name="", now=NOON)
    mode = ExecutionMode.ALPACA_PAPER if isinstance(broker, AlpacaBroker) else ExecutionMode.SIMULATED
    return Dispatcher(db, cfg, broker, market, clock, mode), PositionManager(db, cfg, broker, market, clock, CAL)


def recommend(db, minute: int, ticker: str, action: str = "BUY_CALL") -> None:
    at = NOON + dt.timedelta(minutes=minute)
    with db.transaction() as conn:
        SharedRepository(conn).add_recommendation({
            "source": "test", "ticker": ticker, "action": action, "strategy_type": "swing_trade", "confidence": 0.8,
            "volume_ratio": 2.5, "underlying_price": 600, "bar_ts": at, "feature_ts": at,
            "created_at": at})


def scenario(db, broker, venue, cfg):
    dispatcher, manager = rig(db, broker, venue.market, venue.clock, cfg)
    for minute, ticker, action in ((0, "SPY", "BUY_CALL"), (1, "QQQ", "BUY_PUT"), (2, "SPY", "BUY_CALL"), (20, "SPY", "BUY_CALL")):
        venue.clock.set(NOON + dt.timedelta(minutes=minute))
        recommend(db, minute, ticker, action)
        manager.run()
        dispatcher.run()
    venue.clock.set(NOON + dt.timedelta(minutes=21))
    venue.market.set_quote(quote(SYMBOLS[0], bid="3.80", ask="3.85", at=venue.clock.now()))  # target hit
    manager.run()
    with db.transaction() as conn:
        decisions = [(d.recommendation_id, d.status, d.reason_code, d.option_symbol, d.contracts)
                     for d in conn.execute(select(dispatch_decisions).order_by(dispatch_decisions.c.id))]
        executions = [(e.option_symbol, e.contracts, e.premium, e.notional, e.status)
                      for e in conn.execute(select(dispatch_executions).order_by(dispatch_executions.c.id))]
        positions = [(p.option_symbol, p.contracts, p.status, p.exit_reason, p.exit_price, p.realized_pnl)
                     for p in conn.execute(select(active_positions).order_by(active_positions.c.id))]
    return decisions, executions, positions


def test_simulated_and_alpaca_paper_give_the_same_decisions_and_fills(any_db, venue, tmp_path):
    cfg = account_config("large-100k", ticker_cooldown_minutes=15)
    over_http = scenario(any_db, venue.broker(), venue, cfg)
    other = Venue()
    try:
        db2 = Database(sqlite_url(tmp_path / "direct.db"))
        db2.upgrade()
        direct = scenario(db2, other.book, other, cfg)
    finally:
        other.server.stop()
    assert over_http == direct
    decisions, executions, positions = over_http
    assert [d[1:3] for d in decisions] == [("executed", None), ("executed", None), ("rejected", "ticker_cooldown"),
                                           ("executed", None)]
    assert positions[0][2:4] == ("closed", "take_profit")


def test_position_manager_on_alpaca_adopts_once_and_closes_missing_without_orders(sqlite_db, venue):
    cfg = account_config("large-100k")
    broker = venue.broker()
    dispatcher, manager = rig(sqlite_db, broker, venue.market, venue.clock, cfg)
    venue.book.submit_order(buy("by-hand", qty=3, symbol=SYMBOLS[1]))
    for minute in range(3):
        venue.clock.set(NOON + dt.timedelta(minutes=minute))
        manager.run()
    with sqlite_db.transaction() as conn:
        rows = conn.execute(select(active_positions)).all()
    assert [(r.option_symbol, r.contracts, r.flags, r.status) for r in rows] == [(SYMBOLS[1], 3, "adopted", "open")]
    venue.book.close_position(OccSymbol.parse(SYMBOLS[1]), 3, "sold-by-hand")
    posts = venue.faults.order_posts
    venue.clock.set(NOON + dt.timedelta(minutes=5))
    assert manager.run().closed == {"not_at_broker": 1}
    assert venue.faults.order_posts == posts


def test_startup_verification_logs_the_account_and_needs_options_level_2(venue, caplog):
    caplog.set_level(logging.INFO)
    cfg = account_config("large-100k")
    account = verify_alpaca_account(cfg, venue.broker())
    assert account.account_number == "SIM-LARGE-100K" and account.buying_power == Decimal("100000.00")
    lines = " | ".join(r.getMessage() for r in caplog.records if r.name == "ops_pipeline.startup")
    assert "Connected to Alpaca: Account SIM-LARGE-100K, Buying power: $100,000.00" in lines and "Max contracts 10" in lines
    assert "Account tier: large" in lines
    level_one = Venue(options_level=1)
    try:
        with pytest.raises(ConfigError, match="options trading level 1"):
            verify_alpaca_account(cfg, level_one.broker())
    finally:
        level_one.server.stop()


def test_a_403_from_the_broker_is_a_recorded_rejection_and_the_run_goes_on(sqlite_db, venue):
    cfg = account_config("large-100k", paper_ignore_buying_power=True, ticker_cooldown_minutes=0)
    venue.market.set_quote(quote(SYMBOLS[2], bid="2.50", ask="2.50"))  # no spread: no unrealized loss to trip other gates
    venue.book.submit_order(buy("drain-cash", qty=398, symbol=SYMBOLS[2]))  # cash $500 left, equity $100K
    dispatcher, _ = rig(sqlite_db, venue.broker(), venue.market, venue.clock, cfg)
    recommend(sqlite_db, 0, "SPY")
    recommend(sqlite_db, 0, "QQQ", "BUY_PUT")
    summary = dispatcher.run()
    assert summary.rejected == {"insufficient_buying_power": 2} and summary.claimed == 2
    with sqlite_db.transaction() as conn:
        decisions = conn.execute(select(dispatch_decisions.c.status, dispatch_decisions.c.reason_detail)).all()
        executions = conn.execute(select(dispatch_executions.c.status)).all()
    assert all(d.status == "rejected" and "insufficient options buying power" in d.reason_detail for d in decisions)
    assert [e.status for e in executions] == ["rejected", "rejected"]


def test_limit_orders_fill_when_marketable_rest_otherwise_and_expire_at_the_close(venue):
    broker = venue.broker()
    marketable = broker.submit_order(OrderRequest("lim-1", OccSymbol.parse(SYMBOLS[0]), OrderSide.BUY, 1, Decimal("2.60")))
    assert (marketable.status.value, marketable.filled_avg_price, marketable.limit_price) == ("filled", Decimal("2.50"), Decimal("2.60"))
    resting = broker.submit_order(OrderRequest("lim-2", OccSymbol.parse(SYMBOLS[1]), OrderSide.BUY, 2, Decimal("2.00")))
    assert (resting.status.value, resting.filled_qty) == ("new", 0)
    assert broker.get_account().buying_power == Decimal("100000") - 250 - 400  # the resting buy holds $400
    venue.clock.set(NOON + dt.timedelta(minutes=5))
    venue.market.set_quote(quote(SYMBOLS[1], bid="1.90", ask="1.95", at=venue.clock.now()))
    filled = broker.get_order_by_client_id("lim-2")
    assert (filled.status.value, filled.filled_qty, filled.filled_avg_price) == ("filled", 2, Decimal("1.95"))
    late = broker.submit_order(OrderRequest("lim-3", OccSymbol.parse(SYMBOLS[2]), OrderSide.BUY, 1, Decimal("1.00")))
    assert late.status.value == "new"
    venue.clock.set(NOON + dt.timedelta(hours=5))  # past 16:00 New York
    assert broker.get_order_by_client_id("lim-3").status.value == "expired"
    assert broker.get_account().buying_power == broker.get_account().cash  # nothing held any more


def test_a_duplicate_client_order_id_returns_the_existing_order_and_market_hours_refuse(venue):
    broker = venue.broker()
    first = broker.submit_order(buy("ops-large-100k-rec9"))
    again = broker.submit_order(buy("ops-large-100k-rec9"))  # a retry after a restart: 422, then the lookup
    assert again.broker_order_id == first.broker_order_id and len(venue.book.orders()) == 1
    venue.clock.set(NOON + dt.timedelta(hours=5))
    with pytest.raises(OrderRejected, match="regular hours") as err:
        broker.submit_order(buy("after-the-close"))
    assert err.value.code == "rejected"
