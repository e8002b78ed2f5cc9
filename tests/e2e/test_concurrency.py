"""One account, one run at a time (item 7) and migrations that do not race (item 8): real processes
started together, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest
from sqlalchemy import select, text

from ops_pipeline.adapters.db.database import MIGRATION_LOCK, Database, sqlite_url
from ops_pipeline.adapters.db.tables import dispatch_decisions, dispatch_executions
from tests.conftest import new_pg_database
from tests.fault_proxy import Fault, FaultProxy
from tests.live import LARGE, TINY, Exchange, account_config, audit, cli_env, recommend, run_once, start_run, write_config

pytestmark = [pytest.mark.data, pytest.mark.live]
TICKERS = ("SPY", "QQQ", "TSLA", "NVDA", "NFLX", "ORCL")
CROWDED = dataclasses.replace(LARGE, params={**LARGE.params, "max_open_positions": 3})


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        db = Database(sqlite_url(tmp_path / "ops.db"))
        db.upgrade()
    else:
        db = new_pg_database(request.getfixturevalue("postgres_server"))
    yield db
    db.dispose()


def test_two_runs_of_one_account_started_together_keep_its_limits(database, data_dir, tmp_path):
    config = write_config(tmp_path / "config", CROWDED)
    exchange = Exchange(data_dir, tmp_path / "exchange.db", CROWDED).start()
    try:
        for ticker in TICKERS:
            for action in ("BUY_CALL", "BUY_PUT"):
                recommend(database, ticker, action=action)
        env = cli_env(config, exchange.url, CROWDED, OPS_PIPELINE_ALPACA_TIMEOUT_SECS="30")
        together = [start_run(CROWDED, database, env, "--lock-wait", "60") for _ in range(2)]
        outputs = [p.communicate(timeout=300)[0] for p in together]
        assert [p.returncode for p in together] == [0, 0], outputs
        assert run_once(CROWDED, database, env).returncode == 0  # positions of the last fills
        with database.read() as conn:
            executions = conn.execute(select(dispatch_executions)).all()
            reasons = conn.execute(select(dispatch_decisions.c.reason_code)).scalars().all()
        assert 1 <= len(executions) <= 3 and "max_open_positions" in reasons
        assert len({e.recommendation_id for e in executions}) == len(executions)
        assert audit(database, account_config(config, CROWDED), exchange.client(CROWDED)) == []
    finally:
        exchange.stop()


def test_a_second_run_of_a_busy_account_says_so_and_other_accounts_go_on(data_dir, tmp_path):
    config = write_config(tmp_path / "config", LARGE, TINY)
    exchange = Exchange(data_dir, tmp_path / "exchange.db", LARGE, TINY).start()
    proxy = FaultProxy(exchange.url).start()
    db = Database(sqlite_url(tmp_path / "ops.db"))
    db.upgrade()
    try:
        recommend(db, "SPY")
        env = cli_env(config, proxy.url, LARGE, TINY)
        held = Fault("GET", r"/v2/clock", "hold")  # the first run reads the market clock inside its lock
        proxy.arm(held)
        # the held run waits as long as the test needs: its broker timeout must outlast the two runs below
        first = start_run(LARGE, db, env | {"OPS_PIPELINE_ALPACA_TIMEOUT_SECS": "300"})
        assert held.entered.wait(timeout=120)
        second = run_once(LARGE, db, env, "--lock-wait", "0.2")
        assert second.returncode == 3, second.stdout
        assert "another run of account large-100k is in progress" in second.stdout
        other = run_once(TINY, db, env)  # another account is not held up
        assert other.returncode == 0, other.stdout
        held.release.set()
        output, _ = first.communicate(timeout=120)
        assert first.returncode == 0, output
    finally:
        proxy.stop()
        exchange.stop()


def _upgrade(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ops_pipeline.cli", "db", "upgrade", "--database-url", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.postgres
def test_two_first_migrations_of_a_new_postgres_database_both_succeed(postgres_server):
    name = f"ops_migrate_{int(time.time() * 1000)}"
    admin = Database(f"{postgres_server}/postgres")
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = f"{postgres_server}/{name}"
    holder = Database(url)
    with holder.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})  # both must queue behind it
        conn.commit()
        migrators = [_upgrade(url), _upgrade(url)]
        deadline = time.monotonic() + 120
        while conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar() < 2:
            assert time.monotonic() < deadline and all(m.poll() is None for m in migrators), "migrators never queued"
            conn.rollback()
            time.sleep(0.05)
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        conn.commit()
    outputs = [m.communicate(timeout=120)[0] for m in migrators]
    assert [m.returncode for m in migrators] == [0, 0], outputs
    with holder.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    holder.dispose()
    admin.dispose()


def test_two_first_migrations_of_a_new_sqlite_file_both_succeed(tmp_path):
    url = sqlite_url(tmp_path / "new.db")
    migrators = [_upgrade(url) for _ in range(3)]
    outputs = [m.communicate(timeout=120)[0] for m in migrators]
    assert [m.returncode for m in migrators] == [0, 0, 0], outputs
