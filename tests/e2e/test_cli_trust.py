"""Nothing a user has is destroyed by a typo, and the CLI says what is wrong in one line (items 13–19)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.cli import app
from ops_pipeline.config.loader import default_config_dir
from ops_pipeline.config.secrets import secret_env_name
from tests.conftest import new_pg_database

ONE_DAY = ["--start", "2026-03-18", "--end", "2026-03-18", "--tickers", "SPY"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `ops-pipeline` in a subprocess, output piped (not a terminal), COLUMNS unset."""
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (env or {})
    return subprocess.run([sys.executable, "-m", "ops_pipeline.cli", *args], capture_output=True, text=True,
                          timeout=600, env=environ)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("error: ")
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def previous_replay(data_dir, tmp_path_factory):
    """A finished replay whose results the typos below must not touch."""
    out = tmp_path_factory.mktemp("kept")
    result = cli("replay", "--data", str(data_dir), "--out", str(out), *ONE_DAY)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.mark.data
@pytest.mark.parametrize(("args", "says"), [
    (["--tickers", "SPY,XYZQ"], "no 1-minute bars for XYZQ"),
    (["--data", "/nonexistent/data"], "bar folder not found"),
    (["--config-dir", "/nonexistent/config"], "accounts file not found"),
    (["--bars", "5min"], "no 5-minute bars for SPY, QQQ between 2026-03-16 and 2026-03-19 — the data covers"),
    (["--start", "2026-03-14", "--end", "2026-03-15"], "no trading session between 2026-03-14 and 2026-03-15"),
    (["--start", "2024-01-02", "--end", "2024-01-05"], "no 1-minute bars for SPY, QQQ between 2024-01-02 and 2024-01-05"),
    (["--tickers", ""], "no tickers to replay"),
    (["--tickers", " , "], "no tickers to replay"),
    (["--max-quote-age", "-5"], "Invalid value for '--max-quote-age'"),
    (["--database-url", "sqlite:////nonexistent/dir/x.db"], "folder /nonexistent/dir does not exist"),
    (["--database-url", "mysql://u@h/db"], "unsupported database 'mysql'"),
])
def test_a_bad_replay_input_fails_in_one_line_and_keeps_the_last_results(previous_replay, data_dir, args, says):
    db, log = previous_replay / "replay.db", previous_replay / "replay.log"
    kept, log_size = digest(db), log.stat().st_size
    result = cli("replay", "--data", str(data_dir), "--out", str(previous_replay), *args)
    out = result.stdout + result.stderr
    assert result.returncode == 2 and says in out and "Traceback" not in out, out
    assert digest(db) == kept and log.stat().st_size >= log_size
    assert not list(previous_replay.glob("replay.db.building-*"))


@pytest.mark.data
def test_a_replay_killed_half_way_leaves_the_last_one_whole_and_the_next_one_cleans_up(previous_replay, data_dir):
    db = previous_replay / "replay.db"
    kept = digest(db)
    process = subprocess.Popen([sys.executable, "-m", "ops_pipeline.cli", "replay", "--data", str(data_dir),
                                "--out", str(previous_replay), "--start", "2026-03-16", "--end", "2026-03-19"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(previous_replay.glob("replay.db.building-*")):  # wait until it is writing its new file
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert digest(db) == kept
    Database(sqlite_url(db), read_only=True).check()
    assert cli("replay", "--data", str(data_dir), "--out", str(previous_replay), *ONE_DAY).returncode == 0
    assert not list(previous_replay.glob("replay.db.building-*"))


@pytest.mark.parametrize("url", ["bogus://x", "notaurl", "mysql://user@host/db", "sqlite:////nonexistent/dir/x.db"])
def test_a_bad_database_url_is_one_line_and_exit_2(url):
    out = one_line_error(cli("report", "--database-url", url))
    assert "database" in out or "URL" in out


def test_report_on_a_missing_file_does_not_create_it(tmp_path):
    missing = tmp_path / "nothing.db"
    out = one_line_error(cli("report", "--database-url", sqlite_url(missing)))
    assert f"no database at {missing}" in out and not missing.exists()
    out = one_line_error(cli("config", "history", "--database-url", sqlite_url(missing)))
    assert not missing.exists()


@pytest.mark.postgres
def test_report_reads_a_read_only_database(postgres_server):
    db = new_pg_database(postgres_server)
    name = db.engine.url.database
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER DATABASE {name} SET default_transaction_read_only = on"))
    db.dispose()
    result = cli("report", "--database-url", db.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Accounts" in result.stdout


def test_config_set_without_config_dir_never_writes_the_shipped_configuration(isolated_homes, monkeypatch):
    monkeypatch.delenv("OPS_PIPELINE_CONFIG_DIR", raising=False)
    shipped = {p: digest(p) for p in default_config_dir().rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["config", "set", "max_daily_loss=75", "--tier", "tiny"])
    assert result.exit_code == 0, result.output
    user = isolated_homes / "config"
    assert f"created {user}" in result.output and "max_daily_loss 100.0 → 75.0" in result.output
    assert {p: digest(p) for p in default_config_dir().rglob("*") if p.is_file()} == shipped
    assert json.loads((user / "parameters" / "dispatcher_config_tiny.json").read_text())["max_daily_loss"] == 75
    shown = CliRunner().invoke(app, ["config", "show", "--tier", "tiny", "--json"])
    assert json.loads(shown.output)["values"]["max_daily_loss"]["value"] == 75.0


def test_config_check_refuses_a_secret_that_belongs_to_another_account(monkeypatch):
    monkeypatch.delenv("OPS_PIPELINE_CONFIG_DIR", raising=False)
    monkeypatch.setenv(secret_env_name("ops-pipeline/alpaca/tiny"), json.dumps(
        {"api_key": "PKTINYCHECK0001", "api_secret": "s", "account_name": "small-5k"}))
    result = CliRunner().invoke(app, ["config", "check", "--tier", "tiny"])
    assert result.exit_code == 1
    assert "belongs to account 'small-5k', not 'tiny-1k'" in result.output


def test_tables_wrap_instead_of_being_cut_when_piped_or_narrow():
    piped = cli("accounts", "list")
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout
    for word in ("large-100k", "medium-25k", "$100,000", "$15,000", "halt"):
        assert word in piped.stdout
    narrow = cli("accounts", "list", env={"COLUMNS": "80"})
    assert narrow.returncode == 0 and "…" not in narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80


def test_help_text_is_literal():
    result = cli("paper-exchange", "serve", "--help")
    assert "NAME:KEY:BALANCE" in result.stdout and "\U0001f511" not in result.stdout


def test_log_lines_are_appended_and_each_names_its_account_and_run(tmp_path):
    """Two processes share one log that rotates while they write: every line arrives whole, once."""
    log = tmp_path / "shared.log"
    writer = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from ops_pipeline.logs import SharedRotatingFileHandler, OneLineFormatter, LINE_FORMAT\n"
        "from ops_pipeline.services.runs import RunContextFilter, run_context, account_log\n"
        "h = SharedRotatingFileHandler(Path(sys.argv[1]), max_bytes=20000, backups=50)\n"
        "h.setFormatter(OneLineFormatter(LINE_FORMAT)); h.addFilter(RunContextFilter())\n"
        "logging.getLogger().addHandler(h); logging.getLogger().setLevel(logging.INFO)\n"
        "log = account_log('test', sys.argv[2])\n"
        "with run_context('run-' + sys.argv[2]):\n"
        "    for i in range(1500):\n"
        "        log.info('line %s\\nsecond part', i)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(log), name]) for name in ("acct-a", "acct-b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    lines = [line for p in tmp_path.glob("shared.log*") if not p.name.endswith(".lock") for line in p.read_text().splitlines()]
    assert len(lines) == 3000 and len(list(tmp_path.glob("shared.log.*"))) > 2  # rotated, nothing lost
    for name in ("acct-a", "acct-b"):
        mine = [line for line in lines if f" INFO {name} run-{name} " in line]
        assert len(mine) == 1500 and all(line.endswith("\\nsecond part") for line in mine)


@pytest.mark.postgres
def test_a_replay_into_a_database_whose_account_is_running_changes_nothing(postgres_server, data_dir):
    """A replay holds every account's run lock for its whole length: with one account's run in
    progress on that database (its lock held here), even ``--reset`` stops before wiping anything."""
    db = new_pg_database(postgres_server)
    with db.transaction() as conn:
        conn.execute(text("INSERT INTO config_versions (tier, source, recorded_at, accepted) "
                          "VALUES ('large', 'a live run', now(), true)"))
    with db.account_lock("medium-25k"):
        out = one_line_error(cli("replay", "--data", str(data_dir), *ONE_DAY, "--database-url", db.url, "--reset"))
    assert "another run of account medium-25k is in progress" in out and "nothing was changed" in out
    with db.read() as conn:
        assert conn.execute(text("SELECT source FROM config_versions")).scalars().all() == ["a live run"]
    db.dispose()


def test_a_forked_child_logs_under_its_own_lock_not_its_parents(tmp_path):
    """flock locks belong to the open file: a child writing through the descriptor it inherited
    would pass its parent's lock. While the parent holds the log's lock, the child's must block."""
    import fcntl
    import logging
    import os

    from ops_pipeline.logs import SharedRotatingFileHandler

    handler = SharedRotatingFileHandler(tmp_path / "forked.log")
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "parent", None, None))  # opens the lock file
    with handler._file_lock():
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's exit code is the assertion
            try:
                fcntl.flock(handler._process_lock_fd(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                code = 1  # got the lock the parent holds: the inherited descriptor
            except BlockingIOError:
                code = 0
            os._exit(code)
        _, status = os.waitpid(child, 0)
    handler.close()
    assert os.waitstatus_to_exitcode(status) == 0
