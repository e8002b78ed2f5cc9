"""Faults over real HTTP: `ops-pipeline run` → fault proxy → `paper-exchange serve` (issue items 2–6).

Each test arms a fault, runs the real CLI, then runs it clean, and checks the exchange's books
against the database (tests/live.py audit).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.tables import (
    active_positions,
    ai_option_trades,
    dispatch_decisions,
    dispatch_executions,
    dispatch_runs,
)
from ops_pipeline.bootstrap import build_live_account
from ops_pipeline.config.loader import ConfigSource, StoreSettings
from ops_pipeline.failpoints import ENV as FAILPOINTS
from ops_pipeline.services.runner import AccountRunner
from tests.fault_proxy import Fault, FaultProxy
from tests.live import LARGE, Exchange, account_config, audit, cli_env, recommend, run_once, set_params, write_config

pytestmark = [pytest.mark.data, pytest.mark.live]
ORDERS = r"/v2/orders"
BY_CLIENT_ID = r"/v2/orders:by_client_order_id"


@pytest.fixture
def live(data_dir, tmp_path):
    config = write_config(tmp_path / "config", LARGE)
    exchange = Exchange(data_dir, tmp_path / "exchange.db", LARGE).start()
    proxy = FaultProxy(exchange.url).start()
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    yield config, exchange, proxy, db
    proxy.stop()
    exchange.stop()
    db.dispose()


def rows(db, table):
    with db.read() as conn:
        return conn.execute(select(table).order_by(*table.primary_key.columns)).all()


def exchange_orders(exchange):
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import GetOrdersRequest

    return exchange.client(LARGE).get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))


def test_an_order_taken_then_answered_504_and_a_failed_lookup_is_settled_not_a_phantom(live):
    """Item 2: the exchange took the order; the answer (504) and the lookup (500) were lost."""
    config, exchange, proxy, db = live
    recommend(db, "SPY")
    env = cli_env(config, proxy.url, LARGE)
    proxy.arm(Fault("POST", ORDERS, "answer_after", 504), Fault("GET", BY_CLIENT_ID, "answer_before", 500))
    first = run_once(LARGE, db, env)
    assert first.returncode == 0, first.stdout
    assert "'unknown': 1" in first.stdout
    (pending,) = rows(db, dispatch_executions)
    assert pending.status == "pending_submit" and len(exchange_orders(exchange)) == 1
    for _ in range(2):
        assert run_once(LARGE, db, env).returncode == 0
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []
    (position,) = rows(db, active_positions)
    assert (position.execution_id, position.flags, position.status) == (pending.id, None, "open")
    assert rows(db, ai_option_trades) == []  # no phantom trade closed as not_at_broker


def test_an_order_that_never_reached_the_exchange_is_sent_again_once(live):
    """Item 3: a 503 before the exchange saw the order; the next run re-sends the same client_order_id."""
    config, exchange, proxy, db = live
    recommend(db, "SPY")
    env = cli_env(config, proxy.url, LARGE)
    proxy.arm(Fault("POST", ORDERS, "answer_before", 503))
    assert run_once(LARGE, db, env).returncode == 0
    assert exchange_orders(exchange) == []
    second = run_once(LARGE, db, env)
    assert second.returncode == 0 and "'resent': 1" in second.stdout
    (execution,) = rows(db, dispatch_executions)
    assert (execution.status, execution.submit_attempts) == ("filled", 2)
    assert [o.client_order_id for o in exchange_orders(exchange)] == [execution.client_order_id]
    assert [d.status for d in rows(db, dispatch_decisions)] == ["executed"]
    assert run_once(LARGE, db, env).returncode == 0  # its position is created by the next position manager run
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []


def test_an_order_that_never_reached_the_exchange_expires_when_its_recommendation_is_too_old(live):
    config, exchange, proxy, db = live
    recommend(db, "SPY", minutes_before=5)
    env = cli_env(config, proxy.url, LARGE)
    proxy.arm(Fault("POST", ORDERS, "answer_before", 503))
    assert run_once(LARGE, db, env).returncode == 0
    set_params(config, LARGE, {**LARGE.params, "lookback_window_minutes": 3})  # now 5 minutes is too old
    assert run_once(LARGE, db, env).returncode == 0
    (execution,) = rows(db, dispatch_executions)
    (decision,) = rows(db, dispatch_decisions)
    assert execution.status == "expired" and "never reached the broker" in execution.error
    assert (decision.status, decision.reason_code) == ("rejected", "order_expired")
    assert "age 5.0min > 3min" in decision.reason_detail
    assert exchange_orders(exchange) == []
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []


def test_a_close_whose_answer_was_lost_keeps_its_exit_price_and_pnl(live):
    """Item 4: the sell filled at the exchange, its answer and the lookup were lost."""
    config, exchange, proxy, db = live
    set_params(config, LARGE, {**LARGE.params, "stop_loss_pct": 0.0001})  # sold at the next run
    recommend(db, "SPY")
    env = cli_env(config, proxy.url, LARGE)
    assert run_once(LARGE, db, env).returncode == 0
    proxy.arm(Fault("POST", ORDERS, "answer_after", 504), Fault("GET", BY_CLIENT_ID, "answer_before", 500, times=2))
    assert run_once(LARGE, db, env).returncode == 0
    (closing,) = rows(db, active_positions)
    assert closing.status == "closing" and exchange.client(LARGE).get_all_positions() == []
    assert run_once(LARGE, db, env).returncode == 0  # the lookup fails again: wait, send nothing, close nothing
    (still,) = rows(db, active_positions)
    assert still.status == "closing" and proxy.requests("POST", ORDERS) == [200, 504]
    assert run_once(LARGE, db, env).returncode == 0
    (closed,) = rows(db, active_positions)
    sell = next(o for o in exchange_orders(exchange) if o.side.value == "sell")
    assert closed.exit_reason == "stop_loss" and float(closed.exit_price) == float(sell.filled_avg_price)
    expected = round((float(sell.filled_avg_price) - float(closed.entry_price)) * 100 * closed.contracts, 2)
    assert float(closed.realized_pnl) == expected and int(sell.filled_qty) == closed.contracts
    (trade,) = rows(db, ai_option_trades)
    assert trade.realized_pnl == closed.realized_pnl
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []


def test_runs_left_by_a_dead_process_are_abandoned_and_their_claims_released_at_once(live):
    """Item 5: killed after claiming two recommendations and sending one; market time is frozen,
    so only the abandonment (not processing_ttl_minutes) can release the other claim."""
    config, exchange, proxy, db = live
    recommend(db, "SPY")
    recommend(db, "QQQ")
    env = cli_env(config, exchange.url, LARGE)
    assert run_once(LARGE, db, env | {FAILPOINTS: "dispatcher.after_submit"}).returncode < 0
    assert [r.status for r in rows(db, dispatch_runs) if r.kind == "dispatcher"] == ["running"]
    assert [d.status for d in rows(db, dispatch_decisions)] == ["processing", "processing"]
    again = run_once(LARGE, db, env)
    assert again.returncode == 0 and "1 abandoned run(s)" in again.stdout
    runs = [r for r in rows(db, dispatch_runs) if r.kind == "dispatcher"]
    assert runs[0].status == "abandoned" and "died" in runs[0].error and runs[0].pid is not None
    assert [d.status for d in rows(db, dispatch_decisions)] == ["executed", "executed"]
    assert run_once(LARGE, db, env).returncode == 0
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []


@pytest.mark.parametrize(("fault", "says"), [
    (Fault("GET", r"/v2/options/contracts", "answer_before", 500, times=20), "option contracts of SPY: HTTP 500"),
    (Fault("GET", r"/v1beta1/options/snapshots", "answer_before", 429, times=20, headers={"Retry-After": "0"}),
     "rate limited 5 times"),
    (Fault("GET", r"/v2/clock", "answer_before", 500, times=20), "market clock unavailable"),
    (Fault("GET", r"/v2/options/contracts", "hold"), "option contracts of SPY: unreachable (ReadTimeout)"),
], ids=["contracts-500", "snapshots-429", "clock-500", "contracts-slower-than-timeout"])
def test_market_data_and_clock_failures_end_the_run_cleanly_and_the_next_run_trades(live, fault, says):
    """Item 6: recorded error, claims released, exit 1 for --once, no traceback; then a clean run trades."""
    config, exchange, proxy, db = live
    recommend(db, "SPY")
    env = cli_env(config, proxy.url, LARGE, OPS_PIPELINE_ALPACA_TIMEOUT_SECS="1")
    proxy.arm(fault)
    failed = run_once(LARGE, db, env)
    fault.release.set()
    assert failed.returncode == 1, failed.stdout
    assert "Traceback" not in failed.stdout and says in failed.stdout
    (errored,) = [r for r in rows(db, dispatch_runs) if r.status == "error"]
    assert says in errored.error
    assert [d.status for d in rows(db, dispatch_decisions)] == []  # the claim went back at once
    proxy.clear()
    assert run_once(LARGE, db, env).returncode == 0
    assert [d.status for d in rows(db, dispatch_decisions)] == ["executed"]
    assert run_once(LARGE, db, env).returncode == 0
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []


def test_a_run_without_a_market_clock_is_recorded_at_the_market_time_last_read(live, monkeypatch):
    """Not at the wall clock: at a paper exchange that is months away from market time, and status
    and health would take the failed run for the account's latest by far."""
    config, exchange, proxy, db = live
    for name, value in cli_env(config, proxy.url, LARGE).items():
        monkeypatch.setenv(name, value)
    source = ConfigSource.from_settings(StoreSettings(), config_dir=config)
    runner = AccountRunner(db, build_live_account(db=db, account_name=LARGE.name, source=source))
    market = runner.run_once().at
    proxy.arm(Fault("GET", r"/v2/clock", "answer_before", 500, times=40))
    assert runner.run_once().at == market
    fresh = AccountRunner(db, build_live_account(db=db, account_name=LARGE.name, source=source))  # a new process
    assert fresh.run_once().at == market
    errors = [r.started_at for r in rows(db, dispatch_runs) if r.status == "error"]
    assert errors == [market, market]


def test_the_loop_goes_on_after_a_failed_run(live, monkeypatch):
    """The runner a loop calls: a run that fails on market data is followed by one that trades."""
    config, exchange, proxy, db = live
    recommend(db, "SPY")
    for name, value in cli_env(config, proxy.url, LARGE).items():
        monkeypatch.setenv(name, value)
    runner = AccountRunner(db, build_live_account(db=db, account_name=LARGE.name,
                                                  source=ConfigSource.from_settings(StoreSettings(), config_dir=config)))
    proxy.arm(Fault("GET", r"/v1beta1/options/snapshots", "answer_before", 500, times=20))
    failed = runner.run_once()
    assert failed.status == "error" and "snapshots" in failed.error
    proxy.clear()
    assert runner.run_once().dispatch.executed == 1
    assert json.dumps(failed.as_dict())  # what a loop logs is plain data
