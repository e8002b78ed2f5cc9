"""Shared fixtures: the real data folder, a throwaway PostgreSQL server, fresh databases.

Under ``CI=true`` a missing PostgreSQL server or ``../shared/data`` fails the test instead of
skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from ops_pipeline.adapters.db.database import Database, sqlite_url
from tests import pgserver

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (:mod:`tests.pgserver`); yields an admin URL
    without database name."""
    if not pgserver.available():
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    with pgserver.throwaway_server() as url:
        yield url


new_pg_database = pgserver.new_pg_database


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
