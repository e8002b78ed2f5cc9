"""Dispatcher and position manager on a real database and the real simulated exchange; only the
market (quotes the test sets) and broker faults are stand-ins."""

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.db.repositories import AccountRepository, SharedRepository
from ops_pipeline.adapters.db.tables import active_positions, dispatch_decisions, dispatch_executions
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, from_exchange
from ops_pipeline.clock import SimulatedClock
from ops_pipeline.domain.values import ExecutionMode, OccSymbol, Tier
from ops_pipeline.ports import OrderRequest, OrderSide
from ops_pipeline.services.dispatcher import Dispatcher
from ops_pipeline.services.position_manager import PositionManager
from tests.factories import NOON, account_config, quote
from tests.fakes import FakeMarket, TimeoutAfterSubmit

CAL = TradingCalendar()
SYMBOL = "SPY260327C00660000"


class Rig:
    def __init__(self, db, *configs):
        self.db = db
        self.clock = SimulatedClock(NOON)
        self.market = FakeMarket([quote(SYMBOL, bid="2.46", ask="2.50")], prices={"SPY": Decimal("660")})
        self.exchange = SimulatedExchange(self.market, self.clock, CAL)
        self.configs = {c.name: c for c in configs}
        with db.transaction() as conn:
            for c in configs:
                SharedRepository(conn).register_account(name=c.name, tier=c.risk.account_tier.value,
                                                        initial_balance=c.account.initial_balance, state="enabled",
                                                        notes="", secret_name="", now=NOON)
                self.exchange.open_account(c.name, c.account.initial_balance)

    def dispatcher(self, name, broker=None):
        return Dispatcher(self.db, self.configs[name], broker or self.exchange.broker_for(name), self.market, self.clock,
                          ExecutionMode.SIMULATED)

    def manager(self, name):
        return PositionManager(self.db, self.configs[name], self.exchange.broker_for(name), self.market, self.clock, CAL)

    def recommend(self, minute: int, ticker: str = "SPY") -> None:
        at = NOON + dt.timedelta(minutes=minute)
        with self.db.transaction() as conn:
            SharedRepository(conn).add_recommendation({
                "source": "test", "ticker": ticker, "action": "BUY_CALL", "strategy_type": "swing_trade",
                "confidence": 0.8, "volume_ratio": 2.5, "underlying_price": 660, "bar_ts": at, "feature_ts": at,
                "created_at": at})

    def advance(self, minutes: int) -> None:
        self.clock.set(self.clock.now() + dt.timedelta(minutes=minutes))

    def rows(self, table, name):
        with self.db.transaction() as conn:
            return conn.execute(select(table).where(table.c.account_name == name).order_by(table.c.id)).all()


def test_an_account_at_its_position_limit_does_not_stop_another_from_trading(any_db):
    a = account_config("a-small", Tier.SMALL, 5000, max_open_positions=1, ticker_cooldown_minutes=0)
    b = account_config("b-large", Tier.LARGE, 100000, ticker_cooldown_minutes=0)
    rig = Rig(any_db, a, b)
    rig.recommend(0)
    assert rig.dispatcher("a-small").run().executed == 1
    rig.advance(1)
    rig.recommend(1)
    summary_a = rig.dispatcher("a-small").run()
    summary_b = rig.dispatcher("b-large").run()
    assert summary_a.rejected == {"max_open_positions": 1}
    assert summary_b.executed == 2  # both recommendations, the one A refused included
    decisions_a = [(d.recommendation_id, d.status, d.reason_code) for d in rig.rows(dispatch_decisions, "a-small")]
    assert decisions_a == [(1, "executed", None), (2, "rejected", "max_open_positions")]
    assert len(rig.exchange.broker_for("b-large").get_positions()) == 1  # same contract, two orders
    assert rig.exchange.broker_for("b-large").get_positions()[0].qty == sum(
        e.contracts for e in rig.rows(dispatch_executions, "b-large"))


def test_an_order_whose_answer_was_lost_is_resolved_by_client_order_id_and_never_sent_twice(any_db):
    cfg = account_config("large-100k")
    rig = Rig(any_db, cfg)
    flaky = TimeoutAfterSubmit(rig.exchange.broker_for("large-100k"))
    rig.recommend(0)
    first = rig.dispatcher("large-100k", flaky).run()
    assert first.executed == 0
    (execution,) = rig.rows(dispatch_executions, "large-100k")
    assert execution.status == "pending_submit" and execution.client_order_id == "ops-large-100k-rec1"
    rig.advance(20)  # past the claim TTL: a retry would re-claim if the decision were not settled
    second = rig.dispatcher("large-100k", flaky).run()
    assert second.resolved == 1 and second.claimed == 0
    (execution,) = rig.rows(dispatch_executions, "large-100k")
    assert execution.status == "filled" and execution.broker_order_id == "sim-large-100k-000001"
    held = rig.exchange.broker_for("large-100k").get_positions()
    assert [p.qty for p in held] == [execution.contracts]
    assert [d.status for d in rig.rows(dispatch_decisions, "large-100k")] == ["executed"]


def test_a_paused_account_rejects_with_its_reason_code(any_db):
    rig = Rig(any_db, account_config("tiny-1k", Tier.TINY, 1000))
    with any_db.transaction() as conn:
        SharedRepository(conn).change_state("tiny-1k", to_state="paused", flatten=False, by="test",
                                            at=rig.clock.now(), reason="a test")
    rig.recommend(0)
    assert rig.dispatcher("tiny-1k").run().rejected == {"account_paused": 1}


def test_one_position_per_execution_however_many_runs(any_db):
    rig = Rig(any_db, account_config("large-100k", ticker_cooldown_minutes=0))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    for _ in range(12):
        rig.manager("large-100k").run()
        rig.advance(5)
    positions = rig.rows(active_positions, "large-100k")
    executions = rig.rows(dispatch_executions, "large-100k")
    assert [p.execution_id for p in positions] == [e.id for e in executions]
    assert positions[0].stop_price == Decimal("1.88") and positions[0].target_price == Decimal("3.75")  # cents


def test_stop_exit_sells_at_the_bid_and_records_the_outcome(any_db):
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    rig.advance(1)
    rig.market.set_quote(quote(SYMBOL, bid="1.80", ask="1.90", at=rig.clock.now()))
    assert rig.manager("large-100k").run().closed == {"stop_loss": 1}
    (p,) = rig.rows(active_positions, "large-100k")
    assert (p.status, p.exit_reason, p.exit_price) == ("closed", "stop_loss", Decimal("1.8000"))
    assert p.realized_pnl == (Decimal("1.80") - Decimal("2.50")) * 100 * p.contracts
    assert rig.exchange.broker_for("large-100k").get_positions() == []


def test_a_refused_close_stays_closing_and_is_retried(any_db):
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    rig.clock.set(from_exchange(dt.datetime(2026, 3, 27, 15, 50)))  # swing contract's expiry day, near the close
    rig.market.set_quote(quote(SYMBOL, bid="0", ask="0.05", at=rig.clock.now()))  # no bid: the sale is refused
    summary = rig.manager("large-100k").run()
    assert summary.close_failures == 1
    (p,) = rig.rows(active_positions, "large-100k")
    assert (p.status, p.close_attempts) == ("closing", 1) and "no_bid" in p.last_error
    rig.advance(1)
    rig.market.set_quote(quote(SYMBOL, bid="0.03", ask="0.05", at=rig.clock.now()))
    assert rig.manager("large-100k").run().closed == {"before_expiry": 1}
    (p,) = rig.rows(active_positions, "large-100k")
    assert (p.status, p.close_attempts, p.exit_price) == ("closed", 2, Decimal("0.0300"))


def test_a_close_that_never_reached_the_broker_of_a_contract_it_no_longer_holds_is_closed_not_stuck(any_db):
    """The sell was lost before the broker saw it, and the contract was then sold by hand: the next
    run must close the record (not_at_broker), not wait for a sell that does not exist."""
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    (p,) = rig.rows(active_positions, "large-100k")
    with any_db.transaction() as conn:
        AccountRepository(conn, "large-100k").update_position(
            p.id, status="closing", exit_reason="stop_loss", close_attempts=1, close_client_order_id="lost-before-sent")
    broker = rig.exchange.broker_for("large-100k")
    broker.close_position(OccSymbol.parse(SYMBOL), p.contracts, "sold-by-hand")
    rig.advance(1)
    assert rig.manager("large-100k").run().closed == {"not_at_broker": 1}
    assert [o.client_order_id for o in broker.orders()][-1] == "sold-by-hand"  # nothing more was sent


def test_a_position_the_broker_no_longer_holds_is_closed_without_an_order(any_db):
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    broker = rig.exchange.broker_for("large-100k")
    held = broker.get_positions()[0]
    broker.close_position(held.symbol, held.qty, "closed-elsewhere")  # closed by hand at the broker
    rig.advance(1)
    assert rig.manager("large-100k").run().closed == {"not_at_broker": 1}
    (p,) = rig.rows(active_positions, "large-100k")
    assert (p.status, p.exit_reason, p.realized_pnl) == ("closed", "not_at_broker", None)


def test_an_expired_contract_is_closed_at_intrinsic_value(any_db):
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    rig.clock.set(from_exchange(dt.datetime(2026, 3, 27, 16, 0)))
    rig.market.prices["SPY"] = Decimal("663.10")
    rig.exchange.settle_expirations()
    assert rig.manager("large-100k").run().closed == {"expired": 1}
    (p,) = rig.rows(active_positions, "large-100k")
    assert p.exit_price == Decimal("3.1000")
    with any_db.transaction() as conn:
        assert AccountRepository(conn, "large-100k").realized_pnl_since(NOON) == p.realized_pnl
    assert OccSymbol.parse(p.option_symbol).expiration == dt.date(2026, 3, 27)


def test_a_contract_left_past_its_expiry_is_settled_by_the_next_call_without_being_asked(any_db):
    """A served paper exchange nobody tells about the close: the next request settles the expiry."""
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    rig.clock.set(from_exchange(dt.datetime(2026, 3, 30, 10, 0)))  # the Monday after the expiry
    rig.market.prices["SPY"] = Decimal("657.25")
    assert rig.manager("large-100k").run().closed == {"expired": 1}
    (p,) = rig.rows(active_positions, "large-100k")
    assert (p.exit_price, p.realized_pnl) == (Decimal("0.0000"), -Decimal("250") * p.contracts)
    (settled,) = rig.exchange.books()["large-100k"].settlements
    assert settled.at == from_exchange(dt.datetime(2026, 3, 27, 16, 0)) and settled.price == Decimal("0.00")


def test_a_broker_position_unknown_to_the_database_is_adopted_once(any_db):
    rig = Rig(any_db, account_config("large-100k"))
    broker = rig.exchange.broker_for("large-100k")
    broker.submit_order(OrderRequest("bought-by-hand", OccSymbol.parse(SYMBOL), OrderSide.BUY, 3))
    for _ in range(4):
        rig.manager("large-100k").run()
        rig.advance(1)
    (p,) = rig.rows(active_positions, "large-100k")
    assert (p.execution_id, p.contracts, p.flags, p.entry_price, p.status) == (None, 3, "adopted", Decimal("2.5000"), "open")
    assert (p.stop_price, p.target_price) == (Decimal("1.88"), Decimal("3.75"))


def test_quantity_mismatches_are_corrected_and_flagged(any_db):
    rig = Rig(any_db, account_config("large-100k"))
    rig.recommend(0)
    rig.dispatcher("large-100k").run()
    rig.manager("large-100k").run()
    (p,) = rig.rows(active_positions, "large-100k")
    broker = rig.exchange.broker_for("large-100k")
    broker.submit_order(OrderRequest("sold-by-hand", OccSymbol.parse(SYMBOL), OrderSide.SELL, 3))
    rig.advance(1)
    rig.manager("large-100k").run()
    (corrected,) = rig.rows(active_positions, "large-100k")
    assert corrected.contracts == p.contracts - 3 and corrected.flags == f"qty_corrected:{p.contracts}->{p.contracts - 3}"
    broker.submit_order(OrderRequest("bought-by-hand", OccSymbol.parse(SYMBOL), OrderSide.BUY, 2))
    for _ in range(3):
        rig.advance(1)
        rig.manager("large-100k").run()
    rows = rig.rows(active_positions, "large-100k")
    assert [(r.contracts, r.flags) for r in rows] == [(p.contracts - 3, corrected.flags), (2, "adopted:qty_mismatch")]
    assert sum(r.contracts for r in rows) == broker.get_positions()[0].qty
