"""The signal engine (deterministic, no look-ahead) and the simulated broker's rules."""

import datetime as dt
from decimal import Decimal

import pytest

from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.market_data.bars import load_bars, slice_dates
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, from_exchange
from ops_pipeline.clock import SimulatedClock
from ops_pipeline.domain.values import OccSymbol
from ops_pipeline.errors import OrderRejected, PositionNotFound
from ops_pipeline.ports import OrderRequest, OrderSide
from ops_pipeline.services.signals import compute_signals
from tests.factories import NOON, quote
from tests.fakes import FakeMarket

CAL = TradingCalendar()


@pytest.mark.data
def test_signals_are_deterministic_and_use_no_future_bar(data_dir):
    series = slice_dates(load_bars(data_dir / "bars_1min" / "SPY_1min.csv", CAL, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 19))
    full = compute_signals(series)
    assert full == compute_signals(series)
    cut = len(series) // 2
    prefix = slice_dates(series, dt.date(2026, 3, 2), dt.date(2026, 3, 10))
    early = compute_signals(prefix)
    assert early == [s for s in full if s.bar_close_epoch <= prefix.end[-1]]
    assert len(full) > 50 and cut > 0
    assert {s.action.value for s in full} == {"BUY_CALL", "BUY_PUT"}
    assert all(0 <= s.confidence <= 1 and s.volume_ratio >= 1.2 for s in full)


SYMBOL = "SPY260327C00660000"


def exchange(cash: str = "1000", at: dt.datetime = NOON):
    market = FakeMarket([quote(SYMBOL, bid="2.40", ask="2.50")], prices={"SPY": Decimal("670")})
    clock = SimulatedClock(at)
    ex = SimulatedExchange(market, clock, CAL)
    ex.open_account("a", Decimal(cash))
    ex.open_account("b", Decimal(cash))
    return ex, market, clock


def buy(qty: int = 1, cid: str = "c1") -> OrderRequest:
    return OrderRequest(cid, OccSymbol.parse(SYMBOL), OrderSide.BUY, qty)


def test_buys_fill_at_the_ask_and_sells_at_the_bid():
    ex, _, _ = exchange()
    broker = ex.broker_for("a")
    filled = broker.submit_order(buy(2))
    assert filled.filled_avg_price == Decimal("2.50") and filled.quote_source.value == "real"
    assert broker.get_account().cash == Decimal("500.00")
    sold = broker.close_position(OccSymbol.parse(SYMBOL), 2, "c2")
    assert sold.filled_avg_price == Decimal("2.40")
    assert broker.get_account().cash == Decimal("980.00")
    assert broker.get_positions() == []


def test_refusals_match_alpaca():
    ex, _, clock = exchange(cash="200")
    broker = ex.broker_for("a")
    with pytest.raises(OrderRejected, match="insufficient_buying_power"):
        broker.submit_order(buy())
    with pytest.raises(OrderRejected, match="insufficient_qty"):  # never an opening sell
        broker.submit_order(OrderRequest("s1", OccSymbol.parse(SYMBOL), OrderSide.SELL, 1))
    with pytest.raises(PositionNotFound, match="position does not exist"):
        broker.close_position(OccSymbol.parse(SYMBOL), 1, "s2")
    clock.set(from_exchange(dt.datetime(2026, 3, 16, 16, 5)))
    with pytest.raises(OrderRejected, match="market_closed"):
        broker.submit_order(buy(cid="late"))


def test_a_client_order_id_is_used_once():
    ex, _, _ = exchange(cash="10000")
    broker = ex.broker_for("a")
    broker.submit_order(buy())
    with pytest.raises(OrderRejected, match="duplicate_client_order_id"):
        broker.submit_order(buy())
    assert broker.get_order_by_client_id("c1").qty == 1
    assert len(broker.get_positions()) == 1


def test_accounts_do_not_see_each_other():
    ex, _, _ = exchange()
    ex.broker_for("a").submit_order(buy())
    other = ex.broker_for("b")
    assert other.get_positions() == [] and other.get_order_by_client_id("c1") is None
    assert other.get_account().cash == Decimal("1000.00")


def test_expiry_settles_at_intrinsic_value():
    ex, market, clock = exchange()
    ex.broker_for("a").submit_order(buy())
    clock.set(from_exchange(dt.datetime(2026, 3, 27, 16, 0)))
    settled = ex.settle_expirations()
    assert [(n, s.price) for n, s in settled] == [("a", Decimal("10.00"))]  # 670 − 660
    assert ex.broker_for("a").get_account().cash == Decimal("1750.00")
