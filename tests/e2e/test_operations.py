"""Operating the four accounts live (issue 8), as a trader would for a morning: `paper-exchange serve`
at --speed 60 from 2026-03-17 11:50 and `ops-pipeline start` with the live signal engine, all real
processes; pause, resume, import, kill --flatten, a crashed account, a hung account, a restart;
the exchange's books against the database at the end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.cli import app
from ops_pipeline.adapters.db.repositories import FILLED, LIVE_EXECUTION_STATUSES
from ops_pipeline.adapters.db.tables import (
    account_state_changes,
    active_positions,
    dispatch_decisions,
    dispatch_executions,
    dispatch_runs,
)
from ops_pipeline.domain.values import EXCHANGE_TZ
from tests.fault_proxy import Fault, FaultProxy
from tests.live import LARGE, TINY, Exchange, LiveAccount, account_config, audit, cli_env, write_config

pytestmark = [pytest.mark.data, pytest.mark.live]

SEED = {}  # the tiers' defaults: the seeds' limits, cooldowns and thresholds
ACCOUNTS = [
    dataclasses.replace(LARGE, params=SEED, schedule=(1, 0)),
    dataclasses.replace(TINY, params=SEED, schedule=(5, 0)),
    LiveAccount("small-5k", "small", 5_000, "PKLIVESMALL0003", "small-live-secret", SEED, (5, 1)),
    LiveAccount("medium-25k", "medium", 25_000, "PKLIVEMEDIUM004", "medium-live-secret", SEED, (5, 2)),
]
BY_NAME = {a.name: a for a in ACCOUNTS}
OFFSETS = {"large-100k": (1, 0), "tiny-1k": (5, 0), "small-5k": (5, 1), "medium-25k": (5, 2)}


class Start:
    """`ops-pipeline start` in a subprocess; its output collected by a thread."""

    def __init__(self, env: dict[str, str], db: Database) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ops_pipeline.cli", "start", "--database-url", db.url, "--metrics-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def metrics_url(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self.lines:
                if found := re.search(r"metrics: (http://\S+/metrics)", line):
                    return found.group(1)
            time.sleep(0.1)
        raise AssertionError("".join(self.lines))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def market_now(exchange: Exchange) -> dt.datetime:
    return exchange.client(LARGE).get_clock().timestamp.astimezone(dt.UTC)


def wait_market(exchange: Exchange, hhmm: str, start: Start | None = None) -> dt.datetime:
    """Wait (polling the exchange's clock, not sleeping a fixed time) until market time ``hhmm`` ET."""
    h, m = map(int, hhmm.split(":"))
    return wait_until(exchange, dt.datetime(2026, 3, 17, h, m, tzinfo=EXCHANGE_TZ), start)


def next_minute(now: dt.datetime, *, every: int, offset: int, ahead_secs: float) -> dt.datetime:
    """The first whole minute, at least ``ahead_secs`` after ``now``, on which a schedule of
    ``every`` minutes at ``offset`` runs (exchange time)."""
    minute = (now + dt.timedelta(seconds=ahead_secs)).astimezone(EXCHANGE_TZ).replace(second=0, microsecond=0)
    minute += dt.timedelta(minutes=1)
    while (minute.hour * 60 + minute.minute) % every != offset:
        minute += dt.timedelta(minutes=1)
    return minute


def wait_until(exchange: Exchange, target: dt.datetime, start: Start | None = None) -> dt.datetime:
    """Wait (polling the exchange's clock) until market time ``target``; returns the time seen."""
    deadline = time.monotonic() + 300
    while (now := market_now(exchange)) < target:
        assert time.monotonic() < deadline, f"market time stuck at {now}"
        if start is not None:
            assert start.process.poll() is None, "".join(start.lines)
        time.sleep(0.05)
    return now


def cli(env: dict[str, str], db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops_pipeline.cli", *args, "--database-url", db.url],
                          capture_output=True, text=True, env=env, timeout=180)


def scrape(url: str) -> dict[tuple[str, ...], float]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, *sorted(f"{k}={v}" for k, v in sample.labels.items()))] = sample.value
    return values


def database_figures(db: Database) -> dict[tuple[str, ...], float]:
    """The figures /metrics must show, computed from the tables directly."""
    figures: dict[tuple[str, ...], float] = defaultdict(float)
    tiers = {a.name: a.tier for a in ACCOUNTS}
    with db.read() as conn:
        for a in ACCOUNTS:
            key = (f"account_name={a.name}", f"tier={a.tier}")
            figures[("ops_pipeline_positions_count", *key)] = 0
            figures[("ops_pipeline_trades_executed_total", *key)] = 0
        for p in conn.execute(select(active_positions).where(active_positions.c.status.in_(["open", "closing"]))):
            key = (f"account_name={p.account_name}", f"tier={tiers[p.account_name]}")
            figures[("ops_pipeline_positions_count", *key)] += 1
        positioned = set(conn.execute(select(active_positions.c.execution_id)).scalars())
        for e in conn.execute(select(dispatch_executions)):
            key = (f"account_name={e.account_name}", f"tier={tiers[e.account_name]}")
            if e.status in LIVE_EXECUTION_STATUSES and e.id not in positioned:  # an order not yet a position counts
                figures[("ops_pipeline_positions_count", *key)] += 1
            if e.status == FILLED:
                figures[("ops_pipeline_trades_executed_total", *key)] += 1
        for d in conn.execute(select(dispatch_decisions).where(dispatch_decisions.c.status.in_(["rejected", "error"]))):
            figures[("ops_pipeline_gates_failed_total", f"account_name={d.account_name}", f"reason={d.reason_code}",
                     f"tier={tiers[d.account_name]}")] += 1
    return dict(figures)


def metrics_equal_database(url: str, db: Database) -> None:
    """A scrape equals the database: read the tables between two identical scrapes (runs go on)."""
    for _ in range(30):
        before = scrape(url)
        figures = database_figures(db)
        after = scrape(url)
        if before == after:
            shown = {k: v for k, v in after.items() if k[0] in {n[0] for n in figures}}
            assert shown == figures
            return
    raise AssertionError("the metrics never held still for a scrape")


def runs(db: Database, kind: str = "dispatcher") -> dict[str, list[dt.datetime]]:
    by_account: dict[str, list[dt.datetime]] = defaultdict(list)
    with db.read() as conn:
        for r in conn.execute(select(dispatch_runs).where(dispatch_runs.c.kind == kind).order_by(dispatch_runs.c.started_at)):
            by_account[r.account_name].append(r.started_at)
    return by_account


def decisions_after(db: Database, name: str, after: dt.datetime) -> list[str]:
    d = dispatch_decisions.c
    with db.read() as conn:
        return [r.reason_code or r.status for r in conn.execute(
            select(dispatch_decisions).where(d.account_name == name, d.decided_at > after))]


def recommendation_file(path: Path, now: dt.datetime, bad_rows: bool = False) -> Path:
    """A CSV (good NVDA call, then a lower-case ticker and a confidence of 1.7) or a JSON file."""
    bar = (now - dt.timedelta(minutes=1)).replace(second=0, microsecond=0).isoformat()
    good = {"ticker": "NVDA", "action": "BUY_CALL", "strategy_type": "swing_trade", "confidence": "0.9",
            "volume_ratio": "3.0", "bar_ts": bar, "created_at": now.isoformat()}
    if path.suffix == ".json":
        path.write_text(json.dumps([good]))
        return path
    rows = [good, {**good, "ticker": "nvda"}, {**good, "confidence": "1.7"}] if bad_rows else [good]
    path.write_text(",".join(good) + "\n" + "".join(",".join(r.values()) + "\n" for r in rows))
    return path


def test_a_morning_of_four_accounts_operated_live(data_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", *ACCOUNTS, tickers=("SPY", "QQQ"))
    exchange = Exchange(data_dir, tmp_path / "exchange.db", *ACCOUNTS, speed=60, start="2026-03-17 11:50").start()
    proxy = FaultProxy(exchange.url).start()
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    home = tmp_path / "home"
    env = cli_env(config, proxy.url, *ACCOUNTS, OPS_PIPELINE_HOME=str(home),
                  OPS_PIPELINE_ALPACA_REQUESTS_PER_MINUTE="12000")
    start = Start(env, db)
    try:
        url = start.metrics_url()
        wait_market(exchange, "12:01", start)

        # A crashed account process is started again; its next run cleans up after it. (Polled: on a
        # loaded machine the workers' first runs can come after 12:01 market time.)
        deadline = time.monotonic() + 60
        while True:
            with db.read() as conn:
                pid = conn.execute(select(dispatch_runs.c.pid).where(dispatch_runs.c.account_name == "tiny-1k")
                                   .order_by(dispatch_runs.c.started_at.desc())).scalars().first()
            if pid is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert pid is not None and pid != start.process.pid
        os.kill(pid, signal.SIGKILL)

        # Tiny's broker calls hang; large's runs stay on their minutes.
        hung = Fault("*", r"/.*", "hold", times=10_000, key=TINY.key, hold_secs=8)
        proxy.arm(hung)
        wait_market(exchange, "12:08", start)
        hung.times = 0  # no more holds
        hung.release.set()

        # Pause small; hand every account a recommendation from a file (one good row, two bad): the others trade it.
        paused = cli(env, db, "accounts", "pause", "small-5k", "--reason", "too aggressive?", "--by", "trader")
        assert paused.returncode == 0 and "small-5k: enabled → paused" in paused.stdout, paused.stdout + paused.stderr
        paused_at = market_now(exchange)
        recs = recommendation_file(tmp_path / "recs.csv", paused_at, bad_rows=True)
        imported = cli(env, db, "recommendations", "import", str(recs))
        assert imported.returncode == 1, imported.stdout
        assert "line 3: ticker='nvda'" in imported.stdout and "line 4: confidence='1.7'" in imported.stdout
        assert "1 stored" in imported.stdout
        again = cli(env, db, "recommendations", "import", str(recs))
        assert "0 stored, 1 already present" in again.stdout
        wait_market(exchange, "12:17", start)  # small runs at 12:16
        small_paused = decisions_after(db, "small-5k", paused_at)

        # Resume small: it trades the next recommendation.
        resumed = cli(env, db, "accounts", "resume", "small-5k", "--by", "trader")
        assert resumed.returncode == 0, resumed.stdout
        # The next row goes in 50 market seconds before small's next minute, so small's run finds it
        # fresh. In this process: a new interpreter can take more than a market minute at speed 60 on a
        # loaded machine, and small's run would come and go before the row was written.
        resumed_at = wait_until(exchange, next_minute(market_now(exchange), every=5, offset=1, ahead_secs=55)
                                - dt.timedelta(seconds=50), start)
        imported = CliRunner().invoke(app, ["recommendations", "import", str(recommendation_file(
            tmp_path / "more.json", resumed_at)), "--database-url", db.url])
        assert imported.exit_code == 0, imported.output
        deadline = time.monotonic() + 60
        while "executed" not in decisions_after(db, "small-5k", resumed_at):
            assert time.monotonic() < deadline, decisions_after(db, "small-5k", resumed_at)
            time.sleep(0.1)
        metrics_equal_database(url, db)

        # Emergency stop of everything, selling every position at the bid.
        killed = cli(env, db, "kill", "--all", "--flatten", "--reason", "end of test", "--by", "trader")
        assert killed.returncode == 0, killed.stdout + killed.stderr
        killed_at = market_now(exchange)
        for a in ACCOUNTS:
            assert exchange.client(a).get_all_positions() == [], a.name
        with db.read() as conn:
            assert conn.execute(select(active_positions).where(active_positions.c.status != "closed")).all() == []
        wait_market(exchange, "12:30", start)
        metrics_equal_database(url, db)
        assert start.stop() == 0, "".join(start.lines)

        # A restart: still killed.
        restarted_at = market_now(exchange)
        start = Start(env, db)
        start.metrics_url()
        wait_market(exchange, "12:37", start)
        assert start.stop() == 0, "".join(start.lines)
    finally:
        if start.process.poll() is None:
            start.process.kill()
        proxy.stop()

    # Schedules: every run on its account's minutes; large at every minute while tiny hung.
    by_account = runs(db)
    for name, (every, offset) in OFFSETS.items():
        minutes = [t.astimezone(EXCHANGE_TZ) for t in by_account[name]]
        assert minutes, name
        off = [f"{m:%H:%M}" for m in minutes if (m.hour * 60 + m.minute) % every != offset]
        assert off == [], (name, off)
        assert len({f"{m:%H:%M}" for m in minutes}) == len(minutes), (name, "two runs in one minute")
    large = {f"{t.astimezone(EXCHANGE_TZ):%H:%M}" for t in by_account["large-100k"]}
    steady = [f"12:{m:02d}" for m in range(1, 8)]  # tiny crashed and hung in these minutes
    assert [m for m in steady if m not in large] == []
    assert any("killed by signal 9" in line for line in (home / "logs" / "supervisor.log").read_text().splitlines())
    assert any(t > killed_at - dt.timedelta(minutes=20) for t in by_account["tiny-1k"])  # restarted, runs again

    # Pause and resume: small refused everything while paused, others traded.
    assert small_paused and set(small_paused) <= {"account_paused", "recommendation_stale"}, small_paused
    with db.read() as conn:
        executions = conn.execute(select(dispatch_executions)).all()
        changes = conn.execute(select(account_state_changes).order_by(account_state_changes.c.id)).all()
    traded = {e.account_name for e in executions if e.status == FILLED}
    assert len(traded) >= 3, traded
    nvda = [e for e in executions if e.ticker == "NVDA" and e.status == FILLED]
    assert any(e.account_name == "small-5k" and e.simulated_ts > resumed_at for e in nvda)  # trades again after resume
    assert len({e.account_name for e in nvda if e.simulated_ts < resumed_at}) >= 2  # the imported row was traded
    assert [(c.account_name, c.to_state, c.changed_by) for c in changes[:2]] == [
        ("small-5k", "paused", "trader"), ("small-5k", "enabled", "trader")]
    assert changes[0].reason == "too aggressive?"
    assert {c.account_name for c in changes if c.to_state == "killed" and c.flatten} == set(BY_NAME)

    # Kill: no order after it, not even after the restart.
    for a in ACCOUNTS:
        orders = exchange.client(a).get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
        buys = [o for o in orders if o.side.value == "buy" and o.submitted_at.astimezone(dt.UTC) > killed_at]
        assert buys == [], a.name
        assert set(decisions_after(db, a.name, restarted_at)) <= {"account_killed", "recommendation_stale"}
    for a in ACCOUNTS:  # the exchange's orders and holdings equal the database's
        assert audit(db, account_config(config, a), exchange.client(a)) == [], a.name
    exchange.stop()
