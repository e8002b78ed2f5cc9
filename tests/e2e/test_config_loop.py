"""LOOP mode on the real replay with configuration in AWS (moto): a changed parameter is applied at
the next run with its diff, an invalid one refused and recorded; a rotated secret is used by the
next run; and no secret ever leaks into logs, exceptions, CLI output, reports or database rows."""

import datetime as dt
import json
import logging

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.db.tables import dispatch_runs, metadata
from ops_pipeline.adapters.market_data.calendar import from_exchange
from ops_pipeline.cli import app
from ops_pipeline.config.loader import ConfigSource, StoreSettings
from ops_pipeline.replay import ReplaySettings, run_replay
from ops_pipeline.reports.summary import build_report

pytestmark = pytest.mark.data
DAY = dt.date(2026, 3, 17)
OLD_KEY, NEW_KEY = "PKOLDKEYAAAAAAAA1111", "PKNEWKEYBBBBBBBB2222"
SECRET = "topsecret-VALUE-42-never-printed"
PARAM = "/ops-pipeline/dispatcher_config_large"


def at(hh: int, mm: int) -> dt.datetime:
    return from_exchange(dt.datetime.combine(DAY, dt.time(hh, mm)))


@pytest.fixture
def aws_config(aws, monkeypatch, tmp_path):
    ssm, sm = aws
    monkeypatch.setenv("OPS_PIPELINE_PARAMETER_STORE", "aws")
    monkeypatch.setenv("OPS_PIPELINE_SECRET_STORE", "aws")
    ssm.put_parameter(Name=PARAM, Type="String", Value=json.dumps({"max_open_positions": 5}))
    sm.create_secret(Name="ops-pipeline/alpaca/large", SecretString=json.dumps(
        {"api_key": OLD_KEY, "api_secret": SECRET, "account_name": "large-100k", "initial_balance": 100000}))
    db = Database(sqlite_url(tmp_path / "loop.db"))
    db.upgrade()
    return ssm, sm, db


def replay(db, data_dir, on_minute, require_credentials=False):
    settings = ReplaySettings(data_dir=data_dir, start=DAY, end=DAY, accounts=("large-100k",),
                              require_credentials=require_credentials)
    return run_replay(db, settings, source=ConfigSource.from_settings(StoreSettings()), on_minute=on_minute)


def test_a_changed_parameter_is_applied_at_the_next_run_and_an_invalid_one_refused(aws_config, data_dir, caplog):
    ssm, _, db = aws_config

    def scheduler(now):
        if now == at(11, 0):
            ssm.put_parameter(Name=PARAM, Type="String", Overwrite=True, Value=json.dumps({"max_open_positions": 1}))
        if now == at(13, 0):
            ssm.put_parameter(Name=PARAM, Type="String", Overwrite=True, Value='{"max_open_positions": 0,}')

    caplog.set_level(logging.INFO)
    rig, _ = replay(db, data_dir, scheduler)
    (account,) = rig.accounts
    assert account.config.risk.max_open_positions == 1  # the refused version did not replace it
    assert account.dispatcher.config is account.config and account.watcher.refusals == 1
    with db.transaction() as conn:
        history = list(reversed(SharedRepository(conn).config_history(account_name="large-100k")))
    assert [(h.version, h.accepted) for h in history] == [("1", True), ("2", True), ("3", False)]
    assert history[1].diff == {"max_open_positions": [5, 1]} and history[1].recorded_at == at(11, 0)
    assert "not valid JSON" in history[2].reason and history[2].recorded_at == at(13, 0)
    assert any("applied; changed: max_open_positions 5 → 1" in r.getMessage() for r in caplog.records)
    assert any("refused, keeping version 2" in r.getMessage() for r in caplog.records)
    result = CliRunner().invoke(app, ["config", "history", "--database-url", db.url], env={"COLUMNS": "200"})
    assert "refused" in result.output and "max_open_positions 5 → 1" in result.output


def test_a_rotated_secret_is_used_by_the_next_run_without_a_restart(aws_config, data_dir, caplog):
    _, sm, db = aws_config
    caplog.set_level(logging.INFO)

    def scheduler(now):
        if now == at(12, 0):
            sm.put_secret_value(SecretId="ops-pipeline/alpaca/large", SecretString=json.dumps(
                {"api_key": NEW_KEY, "api_secret": SECRET + "x", "account_name": "large-100k"}))

    replay(db, data_dir, scheduler, require_credentials=True)
    with db.transaction() as conn:
        runs = conn.execute(select(dispatch_runs.c.started_at, dispatch_runs.c.summary)
                            .where(dispatch_runs.c.kind == "dispatcher").order_by(dispatch_runs.c.started_at)).all()
    before = {r.summary["credentials"].split(" from ")[0] for r in runs if r.started_at < at(12, 0)}
    after = {r.summary["credentials"].split(" from ")[0] for r in runs if r.started_at >= at(12, 0)}
    assert before == {"account large-100k, key …1111"} and after == {"account large-100k, key …2222"}
    logged = [r.getMessage() for r in caplog.records if r.name == "ops_pipeline.startup" and "credentials:" in r.getMessage()]
    assert len(logged) == 2 and "key …2222 from ops-pipeline/alpaca/large (version" in logged[1]


def test_no_secret_leaks_anywhere(aws_config, data_dir, caplog, monkeypatch, tmp_path):
    ssm, sm, db = aws_config
    db_dir = tmp_path
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    rig, _ = replay(db, data_dir, lambda now: None, require_credentials=True)
    texts.append(json.dumps(build_report(db, [a.config for a in rig.accounts], {}), default=str))
    runner = CliRunner()
    for args in (["config", "show", "--tier", "large", "--account", "large-100k"], ["config", "check", "--tier", "large"],
                 ["config", "show", "--tier", "large", "--account", "large-100k", "--json"]):
        texts.append(runner.invoke(app, args).output)
    failures = [  # every failure path of the credentials: bad JSON, bad fields, live key, wrong account
        '{"api_key": "%s", "api_secret": "%s", oops' % (OLD_KEY, SECRET),
        json.dumps({"api_key": OLD_KEY, "api_secret": SECRET, "account_name": "", "extra": SECRET}),
        json.dumps({"api_key": "AK" + OLD_KEY[2:], "api_secret": SECRET, "account_name": "large-100k"}),
        json.dumps({"api_key": OLD_KEY, "api_secret": SECRET, "account_name": "tiny-1k"}),
    ]
    monkeypatch.setenv("EXECUTION_MODE", "ALPACA_PAPER")
    for text in failures:
        sm.put_secret_value(SecretId="ops-pipeline/alpaca/large", SecretString=text)
        result = runner.invoke(app, ["config", "check", "--tier", "large"])
        assert result.exit_code == 1
        texts.append(result.output)
        replay_db = Database(sqlite_url(db_dir / f"failing-{len(texts)}.db"))
        replay_db.upgrade()
        replay(replay_db, data_dir, lambda now: None, require_credentials=True)  # every run fails, the loop goes on
        with replay_db.engine.connect() as conn:
            errors = conn.execute(select(dispatch_runs.c.error).where(dispatch_runs.c.status == "error")).scalars().all()
            texts += [repr(tuple(row)) for table in metadata.sorted_tables for row in conn.execute(select(table))]
        assert errors and all(e.startswith("ConfigError: ") for e in errors)
    texts += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            texts += [repr(tuple(row)) for row in conn.execute(select(table))]
    everything = "\n".join(texts)
    assert SECRET not in everything
    assert OLD_KEY[:-4] not in everything and OLD_KEY[2:-4] not in everything
    assert "…1111" in everything  # the masked key is what people see
