"""The paper exchange is a broker you can restart (item 10), and no secret reaches the process list,
the logs or the database, not even as a hash (item 12). `paper-exchange serve` and `run` as processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest
from sqlalchemy import select

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.tables import active_positions, dispatch_runs, metadata
from ops_pipeline.bootstrap import exchange_secret_env
from ops_pipeline.config.secrets import secret_env_name
from tests.live import LARGE, Exchange, account_config, audit, cli_env, recommend, run_once, write_config

pytestmark = [pytest.mark.data, pytest.mark.live]


def books(exchange: Exchange) -> dict:
    client = exchange.client(LARGE)
    account = client.get_account()
    orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
    return {"cash": account.cash, "equity": account.equity,
            "positions": sorted((p.symbol, p.qty, p.avg_entry_price) for p in client.get_all_positions()),
            "orders": sorted((str(o.id), o.client_order_id, o.status.value, o.filled_avg_price) for o in orders)}


def test_a_killed_exchange_restarts_with_its_books_orders_ids_and_market_time(data_dir, tmp_path):
    config = write_config(tmp_path / "config", LARGE)
    exchange = Exchange(data_dir, tmp_path / "exchange.db", LARGE, speed=60).start()
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    try:
        for ticker in ("SPY", "QQQ"):
            recommend(db, ticker, minutes_before=0)
        env = cli_env(config, exchange.url, LARGE)
        assert run_once(LARGE, db, env).returncode == 0
        before = books(exchange)
        time_before = exchange.client(LARGE).get_clock().timestamp
        assert len(before["orders"]) == 2 and len(before["positions"]) == 2
        exchange.kill()
        exchange.start()  # same state file; its --start (12:00) is older than the saved market time
        assert "resumed at market time" in exchange.first_line
        assert books(exchange) == before
        assert exchange.client(LARGE).get_clock().timestamp >= time_before
        env = cli_env(config, exchange.url, LARGE)
        assert run_once(LARGE, db, env).returncode == 0
        with db.read() as conn:
            positions = conn.execute(select(active_positions)).all()
        assert [p.status for p in positions] == ["open", "open"]  # nothing closed as not_at_broker
        assert audit(db, account_config(config, LARGE), exchange.client(LARGE)) == []
        ids = [o[0] for o in books(exchange)["orders"]]
        assert len(set(ids)) == len(ids)
    finally:
        exchange.stop()
        db.dispose()


def test_fresh_starts_the_state_over(data_dir, tmp_path):
    exchange = Exchange(data_dir, tmp_path / "exchange.db", LARGE).start()
    try:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        client = exchange.client(LARGE)
        client.submit_order(MarketOrderRequest(symbol="SPY260323C00670000", qty=1, side=OrderSide.BUY,
                                               time_in_force=TimeInForce.DAY, client_order_id="before-fresh"))
        exchange.stop()
        exchange.start("--fresh")
        assert books(exchange)["orders"] == [] and exchange.client(LARGE).get_account().cash == "100000.00"
    finally:
        exchange.stop()


def test_a_secret_on_the_command_line_is_refused_and_never_echoed(data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ops_pipeline.cli", "paper-exchange", "serve", "--port", "0", "--data", str(data_dir),
         "--start", "2026-03-16 12:00", "--state", str(tmp_path / "x.db"),
         "--account", "tiny-1k:PKTINYCMDLINE01:topsecret-on-cmdline:1000"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "process list" in result.stdout and "OPS_PIPELINE_EXCHANGE_SECRET_TINY_1K" in result.stdout
    assert "topsecret-on-cmdline" not in result.stdout + result.stderr


def test_accounts_from_a_private_file_and_no_secret_in_ps_logs_or_database(data_dir, tmp_path):
    secrets_file = tmp_path / "exchange-accounts.json"
    secrets_file.write_text(json.dumps([{"name": LARGE.name, "key": LARGE.key, "secret": LARGE.secret,
                                         "balance": LARGE.balance}]))
    secrets_file.chmod(0o644)
    exchange = Exchange(data_dir, tmp_path / "exchange.db")
    with pytest.raises(AssertionError, match="readable by others"):
        exchange.start("--accounts-file", str(secrets_file))
    secrets_file.chmod(0o600)
    exchange.start("--accounts-file", str(secrets_file))
    config = write_config(tmp_path / "config", LARGE)
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    home = tmp_path / "work"
    try:
        assert LARGE.secret.encode() not in Path(f"/proc/{exchange.process.pid}/cmdline").read_bytes()
        recommend(db, "SPY")
        env = cli_env(config, exchange.url, LARGE, OPS_PIPELINE_HOME=str(home))
        secret_text = env[secret_env_name("ops-pipeline/alpaca/large")]
        result = run_once(LARGE, db, env)
        assert result.returncode == 0
        with db.read() as conn:
            stored = "\n".join(repr(tuple(r)) for t in metadata.sorted_tables for r in conn.execute(select(t)))
            (summary,) = [r.summary for r in conn.execute(select(dispatch_runs)) if r.kind == "dispatcher"]
        logs = "\n".join(p.read_text() for p in home.glob("*.log"))
        everything = result.stdout + logs + stored
        assert summary["credentials"].startswith("account large-100k, key …0001 from ops-pipeline/alpaca/large (version env")
        for leak in (LARGE.secret, LARGE.key[:-4], hashlib.sha256(secret_text.encode()).hexdigest()[:12],
                     hashlib.sha256(LARGE.secret.encode()).hexdigest()[:12]):
            assert leak not in everything
    finally:
        exchange.stop()
        db.dispose()
    assert exchange_secret_env("tiny-1k") == "OPS_PIPELINE_EXCHANGE_SECRET_TINY_1K"
    assert os.environ.get(exchange_secret_env(LARGE.name)) is None  # the test never put it in our own environment
