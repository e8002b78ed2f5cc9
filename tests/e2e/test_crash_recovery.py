"""Exactly once under crashes: `ops-pipeline run` killed at every step boundary and at random
requests, against `paper-exchange serve`, then run twice more. Afterwards: no recommendation with a
second order at the exchange, no position without its execution and fill, no closed position
without a P&L, the exchange's holdings equal to the database's open contracts (tests/live.py audit).
"""

from __future__ import annotations

import random
import signal

import pytest
from sqlalchemy import select

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.tables import active_positions, dispatch_decisions, dispatch_executions, dispatch_runs
from ops_pipeline.failpoints import ENV as FAILPOINTS
from tests.fault_proxy import Fault, FaultProxy
from tests.live import LARGE, Exchange, account_config, audit, cli_env, recommend, run_once, set_params, start_run, write_config

pytestmark = [pytest.mark.data, pytest.mark.live]
CHURN = {**LARGE.params, "stop_loss_pct": 0.0001}
"""A stop right under the entry: every position is sold at the first run after it opens."""
KILLED = -signal.SIGKILL


@pytest.fixture
def live(data_dir, tmp_path):
    config = write_config(tmp_path / "config", LARGE)
    exchange = Exchange(data_dir, tmp_path / "exchange.db", LARGE).start()
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    yield config, exchange, db
    exchange.stop()
    db.dispose()


def rows(db, table):
    with db.read() as conn:
        return conn.execute(select(table).order_by(*table.primary_key.columns)).all()


def run_clean_twice(db, env):
    for _ in range(2):
        result = run_once(LARGE, db, env)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("point", ["dispatcher.before_submit", "dispatcher.after_submit"])
def test_a_crash_around_an_order_post_never_sends_it_twice_and_keeps_the_fill(live, point):
    config, exchange, db = live
    for ticker in ("SPY", "QQQ"):
        recommend(db, ticker)
    env = cli_env(config, exchange.url, LARGE)
    crashed = run_once(LARGE, db, env | {FAILPOINTS: point})
    assert crashed.returncode == KILLED
    run_clean_twice(db, env)
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []
    executions = rows(db, dispatch_executions)
    assert [e.status for e in executions] == ["filled", "filled"]  # the first one sent once (again if never sent)
    assert len(exchange.client(LARGE).get_all_positions()) == 2
    runs = rows(db, dispatch_runs)
    assert [r.status for r in runs if r.kind == "dispatcher"][0] == "abandoned"


def test_a_crash_in_the_middle_of_creating_positions_creates_each_once(live):
    config, exchange, db = live
    for ticker in ("SPY", "QQQ", "TSLA"):
        recommend(db, ticker)
    env = cli_env(config, exchange.url, LARGE)
    assert run_once(LARGE, db, env).returncode == 0  # orders filled; positions are created by the next run
    crashed = run_once(LARGE, db, env | {FAILPOINTS: "position_manager.mid_create@2"})
    assert crashed.returncode == KILLED
    assert rows(db, active_positions) == []  # the transaction died whole
    run_clean_twice(db, env)
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []
    assert sorted(p.execution_id for p in rows(db, active_positions)) == [e.id for e in rows(db, dispatch_executions)]


@pytest.mark.parametrize("point", ["position_manager.before_close_submit", "position_manager.after_close_submit"])
def test_a_crash_around_a_close_post_keeps_the_exit_price_and_pnl(live, point):
    config, exchange, db = live
    set_params(config, LARGE, CHURN)
    recommend(db, "SPY")
    env = cli_env(config, exchange.url, LARGE)
    assert run_once(LARGE, db, env).returncode == 0
    crashed = run_once(LARGE, db, env | {FAILPOINTS: point})
    assert crashed.returncode == KILLED
    (closing,) = rows(db, active_positions)
    assert closing.status == "closing" and closing.close_client_order_id
    run_clean_twice(db, env)
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []
    (closed,) = rows(db, active_positions)
    assert (closed.status, closed.exit_reason) == ("closed", "stop_loss")
    assert closed.realized_pnl is not None and closed.close_client_order_id == closing.close_client_order_id
    assert exchange.client(LARGE).get_all_positions() == []


def test_sigkill_at_random_requests_then_two_runs_leave_the_books_equal(live):
    """Eight runs killed at a request drawn from a seeded generator (before or after it reaches
    the exchange), entries and exits both in play, then two clean runs."""
    config, exchange, db = live
    set_params(config, LARGE, CHURN)
    for ticker, action in (("SPY", "BUY_CALL"), ("QQQ", "BUY_CALL"), ("TSLA", "BUY_PUT"), ("SPY", "BUY_PUT")):
        recommend(db, ticker, action=action)
    proxy = FaultProxy(exchange.url).start()
    env = cli_env(config, proxy.url, LARGE)
    rng = random.Random(20261121)
    try:
        for _ in range(8):
            fault = Fault("*", r"/.*", rng.choice(["kill_before", "kill_after"]), skip=rng.randrange(2, 30))
            process = start_run(LARGE, db, env)
            fault.pid = process.pid
            proxy.arm(fault)
            process.communicate(timeout=180)
            proxy.clear()
        run_clean_twice(db, env)
    finally:
        proxy.stop()
    assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []
    decisions = rows(db, dispatch_decisions)
    assert len(decisions) == 4 and all(d.status in {"executed", "rejected"} for d in decisions)
