"""The live rig for trust tests: `ops-pipeline paper-exchange serve` and `ops-pipeline run` as real
subprocesses (optionally with a :class:`~tests.fault_proxy.FaultProxy` between them), a scenario
configuration, recommendations written as another service would, and an audit that compares the
exchange's books with the database.

Market time is frozen at 2026-03-16 12:00 ET (``--speed 0``), so every run sees the same quotes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import AccountRepository, SharedRepository
from ops_pipeline.adapters.market_data.calendar import from_exchange
from ops_pipeline.bootstrap import exchange_secret_env
from ops_pipeline.config.loader import ConfigSource
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.config.secrets import secret_env_name
from ops_pipeline.reports.invariants import check_account, check_consistency, compare_holdings, open_contracts

MARKET_NOW = from_exchange(dt.datetime(2026, 3, 16, 12, 0))
START = "2026-03-16 12:00"


@dataclass(frozen=True)
class LiveAccount:
    name: str
    tier: str
    balance: int
    key: str
    secret: str
    params: dict[str, Any] = field(default_factory=dict)
    schedule: tuple[int, int] = (1, 0)
    """(every_minutes, offset_minutes)."""


LARGE = LiveAccount("large-100k", "large", 100_000, "PKLIVELARGE0001", "large-live-secret",
                    {"ticker_cooldown_minutes": 0, "max_trades_per_ticker_per_day": 10, "max_open_positions": 5})
TINY = LiveAccount("tiny-1k", "tiny", 1_000, "PKLIVETINY00002", "tiny-live-secret",
                   {"ticker_cooldown_minutes": 0, "max_trades_per_ticker_per_day": 10})


def write_config(folder: Path, *accounts: LiveAccount, tickers: tuple[str, ...] | None = None) -> Path:
    """accounts.toml (with ``[signals] tickers`` when given) and one parameter per tier for
    ``accounts``; returns the folder."""
    (folder / "parameters").mkdir(parents=True, exist_ok=True)
    lines = ["[signals]", f"tickers = {json.dumps(list(tickers))}", ""] if tickers else []
    for a in accounts:
        lines += ["[[accounts]]", f'name = "{a.name}"', f'tier = "{a.tier}"', f"initial_balance = {a.balance}",
                  f"schedule = {{ every_minutes = {a.schedule[0]}, offset_minutes = {a.schedule[1]} }}", ""]
        set_params(folder, a, a.params)
    (folder / "accounts.toml").write_text("\n".join(lines))
    return folder


def set_params(folder: Path, account: LiveAccount, params: dict[str, Any]) -> None:
    """Replace the tier's parameter file (the next run applies it)."""
    (folder / "parameters" / f"dispatcher_config_{account.tier}.json").write_text(
        json.dumps({"account_tier": account.tier, **params}))


class Exchange:
    """`ops-pipeline paper-exchange serve` in a subprocess, with its state in a file (restartable)."""

    def __init__(self, data_dir: Path, state: Path, *accounts: LiveAccount, speed: float = 0.0, start: str = START) -> None:
        self.data_dir, self.state, self.accounts, self.speed, self.start_at = data_dir, state, accounts, speed, start
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.first_line = ""

    def start(self, *extra: str) -> Exchange:
        env = {**os.environ, **{exchange_secret_env(a.name): a.secret for a in self.accounts}}
        args = [sys.executable, "-m", "ops_pipeline.cli", "paper-exchange", "serve", "--port", "0",
                "--data", str(self.data_dir), "--start", self.start_at, "--speed", str(self.speed), "--state", str(self.state),
                *extra]
        for a in self.accounts:
            args += ["--account", f"{a.name}:{a.key}:{a.balance}"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", self.first_line)
        if not found:
            rest = self.process.stdout.read() if self.process.poll() is not None else ""
            raise AssertionError(f"the paper exchange did not start: {self.first_line}{rest}")
        self.url = found.group(0)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def client(self, account: LiveAccount) -> TradingClient:
        return TradingClient(account.key, account.secret, paper=True, url_override=self.url)


def cli_env(config_dir: Path, broker_url: str, *accounts: LiveAccount, **extra: str) -> dict[str, str]:
    """The environment of an `ops-pipeline run` against ``broker_url`` (the exchange or a proxy)."""
    env = {**os.environ, "EXECUTION_MODE": "ALPACA_PAPER", "OPS_PIPELINE_ALPACA_BASE_URL": broker_url,
           "OPS_PIPELINE_ALPACA_DATA_URL": broker_url, "OPS_PIPELINE_CONFIG_DIR": str(config_dir),
           "OPS_PIPELINE_ALPACA_TIMEOUT_SECS": "5", "COLUMNS": "200"}
    for a in accounts:
        env[secret_env_name(f"ops-pipeline/alpaca/{a.tier}")] = json.dumps(
            {"api_key": a.key, "api_secret": a.secret, "account_name": a.name})
    env.pop("OPS_PIPELINE_FAILPOINTS", None)
    return env | extra


def start_run(account: LiveAccount, db: Database, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops_pipeline.cli", "run", "--account", account.name, "--once", "--database-url", db.url,
         *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def run_once(account: LiveAccount, db: Database, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """`ops-pipeline run --account NAME --once` to the end."""
    process = start_run(account, db, env, *extra)
    output, _ = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def recommend(db: Database, ticker: str, *, minutes_before: float = 2, action: str = "BUY_CALL",
              strategy: str = "swing_trade", source: str = "test") -> None:
    """A recommendation written as another service would, ``minutes_before`` the frozen market time."""
    at = MARKET_NOW - dt.timedelta(minutes=minutes_before)
    with db.transaction() as conn:
        SharedRepository(conn).add_recommendation({
            "source": source, "ticker": ticker, "action": action, "strategy_type": strategy, "confidence": 0.8,
            "volume_ratio": 2.5, "underlying_price": 600, "bar_ts": at, "feature_ts": at, "created_at": at})


def account_config(config_dir: Path, account: LiveAccount) -> AccountConfig:
    from ops_pipeline.config.loader import load_all

    return next(c for c in load_all(ConfigSource.from_dir(config_dir)) if c.name == account.name)


def audit(db: Database, config: AccountConfig, client: TradingClient) -> list[str]:
    """Everything that must hold between the exchange and the database after any crash or fault:

    no recommendation with more than one order at the exchange; no exchange order unknown to the
    database; every fill recorded at the exchange's price; positions only from filled executions
    (none adopted: nothing was bought by hand); no closed position without a P&L; no order left
    unsettled; the exchange's holdings equal to the database's open contracts; the account's limits.
    """
    name = config.name
    with db.read() as conn:
        problems = check_account(conn, config) + check_consistency(conn, config)
        held = open_contracts(conn, name)
        repo = AccountRepository(conn, name)
        executions = {e.client_order_id: e for e in repo.executions()}
        positions = repo.positions()
    orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
    buys = [o for o in orders if o.side == OrderSide.BUY]
    per_recommendation = Counter(o.client_order_id.rsplit("-rec", 1)[-1] for o in buys)
    problems += [f"recommendation {r}: {n} orders at the exchange" for r, n in per_recommendation.items() if n > 1]
    for order in buys:
        e = executions.get(order.client_order_id)
        if e is None:
            problems.append(f"exchange order {order.client_order_id} is unknown to the database")
        elif order.filled_avg_price is not None and (e.status != "filled" or float(e.premium) != float(order.filled_avg_price)):
            problems.append(f"{order.client_order_id}: exchange filled {order.filled_qty} at {order.filled_avg_price}, "
                            f"database says {e.status} at {e.premium}")
    sells = {o.client_order_id: o for o in orders if o.side == OrderSide.SELL}
    for p in positions:
        if p.execution_id is None:
            problems.append(f"position {p.id} {p.option_symbol} adopted ({p.flags}): a phantom of a lost answer")
        if p.status == "closed" and p.close_client_order_id in sells:
            sold = sells[p.close_client_order_id]
            if p.exit_price is None or float(p.exit_price) != float(sold.filled_avg_price):
                problems.append(f"position {p.id}: sold at {sold.filled_avg_price}, recorded exit {p.exit_price}")
        if p.status == "closed" and p.realized_pnl is None:
            problems.append(f"position {p.id} closed ({p.exit_reason}) with no P&L")
    broker = {p.symbol: int(p.qty) for p in client.get_all_positions()}
    problems += [f"holdings differ: {d}" for d in compare_holdings(held, broker)]
    return problems
