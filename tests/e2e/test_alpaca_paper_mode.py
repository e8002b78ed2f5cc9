"""EXECUTION_MODE=ALPACA_PAPER end to end: `ops-pipeline run` against a paper exchange serving the
real 2026-03-16 data, through alpaca-py, with the unchanged dispatcher and position manager."""

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.db.tables import active_positions, dispatch_executions
from ops_pipeline.adapters.market_data.calendar import from_exchange
from ops_pipeline.bootstrap import ExchangeAccount, build_paper_exchange
from ops_pipeline.cli import app
from ops_pipeline.config.secrets import secret_env_name

pytestmark = pytest.mark.data
KEY, SECRET = "PKPAPERMODE00042", "paper-mode-secret-value"
NOON = from_exchange(dt.datetime(2026, 3, 16, 12, 0))


@pytest.fixture
def paper_exchange(data_dir):
    exchange, _, _, _ = build_paper_exchange(data_dir=data_dir, start=NOON, speed=0,
                                          accounts=[ExchangeAccount("large-100k", KEY, SECRET, Decimal("100000"))])
    running = serve_in_thread(exchange)
    yield running.url
    running.stop()


def test_run_once_trades_through_alpaca_py_against_the_paper_exchange(paper_exchange, tmp_path, monkeypatch):
    for name, value in {"EXECUTION_MODE": "ALPACA_PAPER", "OPS_PIPELINE_ALPACA_BASE_URL": paper_exchange,
                        "OPS_PIPELINE_ALPACA_DATA_URL": paper_exchange,
                        secret_env_name("ops-pipeline/alpaca/large"): json.dumps(
                            {"api_key": KEY, "api_secret": SECRET, "account_name": "large-100k"})}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    db = Database(sqlite_url(tmp_path / "live.db"))
    db.upgrade()
    at = NOON - dt.timedelta(minutes=1)
    with db.transaction() as conn:
        SharedRepository(conn).add_recommendation({
            "source": "test", "ticker": "SPY", "action": "BUY_CALL", "strategy_type": "swing_trade", "confidence": 0.8,
            "volume_ratio": 2.5, "underlying_price": 668, "bar_ts": at, "feature_ts": at, "created_at": at})
    runner = CliRunner()
    first = runner.invoke(app, ["run", "--account", "large-100k", "--once", "--database-url", db.url])
    assert first.exit_code == 0, first.output
    assert "'executed': 1" in first.output
    with db.transaction() as conn:
        (execution,) = conn.execute(select(dispatch_executions)).all()
    assert (execution.execution_mode, execution.status, execution.quote_source) == ("ALPACA_PAPER", "filled", "real")
    assert execution.contracts >= 1 and execution.simulated_ts == NOON  # the exchange's market time
    second = runner.invoke(app, ["run", "--account", "large-100k", "--once", "--database-url", db.url])
    assert second.exit_code == 0, second.output
    with db.transaction() as conn:
        positions = conn.execute(select(active_positions)).all()
    assert [(p.execution_id, p.contracts, p.status) for p in positions] == [(execution.id, execution.contracts, "open")]
    assert SECRET not in first.output + second.output and KEY[:-4] not in first.output + second.output


def test_run_refuses_simulated_mode_and_live_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXECUTION_MODE", raising=False)
    result = CliRunner().invoke(app, ["run", "--account", "large-100k", "--once", "--database-url", sqlite_url(tmp_path / "x.db")])
    assert result.exit_code == 2 and "EXECUTION_MODE=ALPACA_PAPER" in result.output
    monkeypatch.setenv("EXECUTION_MODE", "ALPACA_PAPER")
    monkeypatch.setenv(secret_env_name("ops-pipeline/alpaca/large"),
                       json.dumps({"api_key": "AKLIVE00000009876", "api_secret": "x", "account_name": "large-100k"}))
    result = CliRunner().invoke(app, ["run", "--account", "large-100k", "--once", "--database-url", sqlite_url(tmp_path / "x.db")])
    assert result.exit_code == 2 and "not an Alpaca paper key" in result.output and "…9876" in result.output


def test_the_exchange_serves_the_configured_accounts_with_their_secrets(data_dir, tmp_path, monkeypatch):
    from alpaca.trading.client import TradingClient

    from ops_pipeline.config.loader import ConfigSource, StoreSettings

    (tmp_path / "parameters").mkdir()
    (tmp_path / "accounts.toml").write_text('[[accounts]]\nname = "small-5k"\ntier = "small"\ninitial_balance = 5000\n')
    monkeypatch.setenv(secret_env_name("ops-pipeline/alpaca/small"),
                       json.dumps({"api_key": "PKSMALLCONF0001", "api_secret": "small-secret", "account_name": "small-5k"}))
    exchange, _, served, _ = build_paper_exchange(data_dir=data_dir, start=NOON, speed=0, accounts=[],
                                               source=ConfigSource.from_settings(StoreSettings(), config_dir=tmp_path))
    running = serve_in_thread(exchange)
    try:
        assert [(a.name, a.balance) for a in served] == [("small-5k", Decimal("5000"))]
        account = TradingClient("PKSMALLCONF0001", "small-secret", paper=True, url_override=running.url).get_account()
        assert account.cash == "5000.00"
    finally:
        running.stop()
