"""Shared fixtures: the real data folder, a throwaway PostgreSQL server, fresh databases.

Under ``CI=true`` a missing PostgreSQL server or ``../shared/data`` fails the test instead of
skipping it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer
from sqlalchemy import text

from ops_pipeline.adapters.db.database import Database, sqlite_url

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def isolated_homes(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own user configuration folder and work folder (.ops-pipeline): nothing a
    developer has configured leaks in, and nothing a test writes lands in the checkout."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("OPS_PIPELINE_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("OPS_PIPELINE_HOME", str(home / "work"))
    return home


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("OPS_PIPELINE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (path / "bars_1min").is_dir():
        _unavailable(f"market data not found at {path}")
    return path


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start initdb + pg_ctl in a temporary folder (as the ``postgres`` user when root); yield an
    admin URL without database name."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="ops-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


_counter = itertools.count()


def new_pg_database(postgres_server: str) -> Database:
    """A new, migrated database (the migration itself, so its per-database settings apply)."""
    name = f"ops_test_{os.getpid()}_{next(_counter)}"
    admin = Database(f"{postgres_server}/postgres")
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    db = Database(f"{postgres_server}/{name}")
    db.upgrade()
    return db


@pytest.fixture
def pg_db(postgres_server: str) -> Iterator[Database]:
    """A fresh, migrated PostgreSQL database for one test."""
    db = new_pg_database(postgres_server)
    yield db
    db.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated SQLite file for one test."""
    db = Database(sqlite_url(tmp_path / "test.db"))
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")

# --- AWS: moto's server on 127.0.0.1 (boto3 reaches it through AWS_ENDPOINT_URL) ---
@pytest.fixture(scope="session")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Environment pointing boto3 at moto, with a clean moto state; returns (ssm, secretsmanager)."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    for key, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_DEFAULT_REGION": "us-west-2",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    return boto3.client("ssm"), boto3.client("secretsmanager")
