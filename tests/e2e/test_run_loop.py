"""`ops-pipeline run` without --once follows the broker's market clock: against a paper exchange
running 60 times faster than real time, an account runs at its own minutes of market time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.tables import dispatch_runs
from ops_pipeline.domain.values import EXCHANGE_TZ
from tests.live import TINY, Exchange, cli_env, write_config

pytestmark = [pytest.mark.data, pytest.mark.live]
TINY_EVERY_5 = dataclasses.replace(TINY, schedule=(5, 0))  # seed 002: tiny at :00, :05, :10 …


def test_run_loop_runs_at_the_accounts_minutes_of_a_fast_paper_exchange(data_dir: Path, tmp_path: Path) -> None:
    tiny = TINY_EVERY_5
    config = write_config(tmp_path / "config", tiny)
    exchange = Exchange(data_dir, tmp_path / "exchange.db", tiny, speed=60, start="2026-03-17 11:50").start()
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    env = cli_env(config, exchange.url, tiny, OPS_PIPELINE_HOME=str(tmp_path / "home"),
                  OPS_PIPELINE_ALPACA_REQUESTS_PER_MINUTE="12000")
    process = subprocess.Popen([sys.executable, "-m", "ops_pipeline.cli", "run", "--account", tiny.name,
                                "--database-url", db.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    client = exchange.client(tiny)
    end = dt.datetime(2026, 3, 17, 12, 11, tzinfo=EXCHANGE_TZ)
    deadline = time.monotonic() + 180
    try:
        while client.get_clock().timestamp < end:  # polls the exchange's clock; no fixed sleep decides the result
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "market time did not reach 12:11"
            time.sleep(0.2)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        exchange.stop()
    with db.read() as conn:
        runs = conn.execute(select(dispatch_runs.c.started_at, dispatch_runs.c.finished_at)
                            .where(dispatch_runs.c.account_name == tiny.name, dispatch_runs.c.kind == "dispatcher")
                            .order_by(dispatch_runs.c.started_at)).all()
    minutes = [r.started_at.astimezone(EXCHANGE_TZ).strftime("%H:%M") for r in runs]
    # One run at start, whenever the process got there (one real second is a market minute here, so a loaded
    # machine's start-up and first run move it), then exactly tiny's minutes after it (every 5, offset 0) to 12:10.
    first_done = runs[0].finished_at
    marks = [dt.datetime(2026, 3, 17, h, m, tzinfo=EXCHANGE_TZ) for h, m in ((11, 55), (12, 0), (12, 5), (12, 10))]
    expected = [m.strftime("%H:%M") for m in marks if m > first_done]
    assert len(expected) >= 2, (minutes, output)  # the test saw the loop wait for at least two of tiny's minutes
    assert minutes[1:] == expected, (minutes, output)
    assert "Traceback" not in output
