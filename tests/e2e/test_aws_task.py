"""The ECS task's entry point, run as the task would be: `deploy apply` against moto, then the
image's command (Dockerfile ENTRYPOINT + CMD) in a subprocess with only the environment its task
definition declares — its `environment`, its `secrets` resolved as ECS does, and the task role's
credentials and endpoint (moto). The account trades at a paper exchange; the run's metrics land in
moto's CloudWatch equal to the database, and no secret appears in the task definition, the log
(stdout, the awslogs stream) or the metrics."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.cli import app
from ops_pipeline.services.operations import account_statuses
from tests.live import MARKET_NOW, TINY, Exchange, account_config, recommend, write_config

pytestmark = [pytest.mark.live, pytest.mark.data, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-west-2"
ACCOUNT_ID = "123456789012"
FAMILY = "ops-pipeline-dispatcher-tiny"
DIMENSIONS = [{"Name": "account_name", "Value": TINY.name}, {"Name": "tier", "Value": TINY.tier}]


def image_command() -> list[str]:
    """The image's ENTRYPOINT + CMD, read from the Dockerfile (exec form)."""
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert entry[0] == "ops-pipeline"
    return [sys.executable, "-m", "ops_pipeline.cli", *entry[1:], *cmd]


def dockerfile_env() -> dict[str, str]:
    """The image's own ENV (the task definition's environment is added to it)."""
    block = re.search(r"^ENV (.*?)(?=^\S)", (ROOT / "Dockerfile").read_text(), re.M | re.S).group(1)
    pairs = dict(re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")))
    pairs.pop("PATH", None)
    return pairs


class Task:
    """One account deployed to moto, started as ECS would start its task."""

    def __init__(self, tmp: Path, moto: str, db: Database, exchange: Exchange) -> None:
        self.tmp, self.moto, self.db = tmp, moto, db
        self.c = {n: boto3.client(n, region_name=REGION) for n in ("ecs", "secretsmanager", "cloudwatch", "logs")}
        self.c["ecs"].create_cluster(clusterName="ops-pipeline-cluster")
        database_arn = self.c["secretsmanager"].create_secret(Name="ops-pipeline/database-url", SecretString=db.url)["ARN"]
        config = write_config(tmp / "config", TINY)
        deploy = tmp / "deploy.toml"
        deploy.write_text("\n".join([
            f'region = "{REGION}"', 'subnets = ["subnet-0aaa"]', 'security_groups = ["sg-0ccc"]',
            f'image_repository = "{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/ops-pipeline"', 'image_tag = "v1"',
            f'execution_role_arn = "arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-task-execution"',
            f'task_role_arn = "arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-task-{{tier}}"',
            f'scheduler_role_arn = "arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-scheduler"',
            f'database_url = "{database_arn}"',
            f'alpaca_base_url = "{exchange.url}"', f'alpaca_data_url = "{exchange.url}"', ""]))
        applied = CliRunner().invoke(app, ["deploy", "apply", "--file", str(deploy), "--config-dir", str(config)])
        assert applied.exit_code == 0, applied.output
        self.config = config
        self.task_definition = self.c["ecs"].describe_task_definition(taskDefinition=FAMILY)["taskDefinition"]
        self.home = tmp / "home"
        self.home.mkdir()

    def put_keys(self) -> None:
        """What the trader does after the first apply: the account's paper keys into its secret."""
        self.c["secretsmanager"].put_secret_value(SecretId="ops-pipeline/alpaca/tiny", SecretString=json.dumps(
            {"api_key": TINY.key, "api_secret": TINY.secret, "account_name": TINY.name, "initial_balance": 1000}))

    def environment(self) -> dict[str, str]:
        (container,) = self.task_definition["containerDefinitions"]
        env = dockerfile_env() | {e["name"]: e["value"] for e in container["environment"]}
        for secret in container["secrets"]:  # the execution role resolves these when the task starts
            env[secret["name"]] = self.c["secretsmanager"].get_secret_value(SecretId=secret["valueFrom"])["SecretString"]
        env["OPS_PIPELINE_HOME"] = str(self.home / ".ops-pipeline")
        return env | {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "AWS_ENDPOINT_URL": self.moto,
                      "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # the task role's

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(image_command(), env=self.environment(), cwd=self.home, capture_output=True, text=True,
                              timeout=180)

    def metric(self, name: str, stat: str, **extra: str) -> list[float]:
        now = dt.datetime.now(dt.UTC)
        dims = DIMENSIONS + [{"Name": k, "Value": v} for k, v in extra.items()]
        answer = self.c["cloudwatch"].get_metric_data(
            MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": {"Namespace": "OpsPipeline", "MetricName": name,
                                                                     "Dimensions": dims}, "Period": 60, "Stat": stat}}],
            StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(minutes=5), ScanBy="TimestampAscending")
        return answer["MetricDataResults"][0]["Values"]

    def reasons(self) -> set[str]:
        listed = self.c["cloudwatch"].list_metrics(Namespace="OpsPipeline", MetricName="gates.failed")["Metrics"]
        return {d["Value"] for m in listed for d in m["Dimensions"] if d["Name"] == "reason"}


def low_confidence(db: Database) -> None:
    """A recommendation the confidence gate rejects (a gates.failed reason to count)."""
    at = MARKET_NOW - dt.timedelta(minutes=1)
    with db.transaction() as conn:
        SharedRepository(conn).add_recommendation({
            "source": "test", "ticker": "QQQ", "action": "BUY_PUT", "strategy_type": "day_trade", "confidence": 0.1,
            "volume_ratio": 2.5, "underlying_price": 500, "bar_ts": at, "feature_ts": at, "created_at": at})


@pytest.fixture
def exchange(data_dir, tmp_path):
    ex = Exchange(data_dir, tmp_path / "exchange.db", TINY).start()
    yield ex
    ex.stop()


def test_the_task_runs_one_account_from_its_task_definition_and_publishes_metrics_equal_to_the_database(
        aws, moto_endpoint, pg_db, exchange, tmp_path):
    task = Task(tmp_path, moto_endpoint, pg_db, exchange)
    placeholder = task.run()  # before the trader put the keys in: refused, naming the secret, nothing traded
    assert placeholder.returncode == 2 and "ops-pipeline/alpaca/tiny still holds the placeholder" in placeholder.stdout
    task.put_keys()
    recommend(pg_db, "SPY")
    low_confidence(pg_db)
    first = task.run()
    assert first.returncode == 0, first.stdout + first.stderr
    config = account_config(task.config, TINY)
    for run in (1, 2):
        if run == 2:
            recommend(pg_db, "QQQ", action="BUY_PUT")
            second = task.run()
            assert second.returncode == 0, second.stdout + second.stderr
        (status,) = account_statuses(pg_db, [config], MARKET_NOW, TradingCalendar())
        assert status.trades_executed >= run and status.gates_failed, status  # the equality below is not 0 == 0
        assert sum(task.metric("trades.executed", "Sum")) == status.trades_executed
        assert task.metric("positions.count", "Maximum")[-1] == status.open_positions
        assert task.metric("exposure.dollars", "Maximum")[-1] == pytest.approx(float(status.exposure))
        assert task.reasons() == set(status.gates_failed)
        for reason, count in status.gates_failed.items():
            assert sum(task.metric("gates.failed", "Sum", reason=reason)) == count
        assert sum(task.metric("runs.errors", "Sum")) == status.run_errors == 0
    # the log went to stdout (the awslogs driver's stream), one line per event, naming the account
    assert "Loaded credentials for account: tiny-1k" in first.stdout and "tiny-1k" in first.stdout
    # no secret in the task definition, the log or the metrics
    listed = json.dumps(task.c["cloudwatch"].list_metrics(Namespace="OpsPipeline"), default=str)
    for text in (json.dumps(task.task_definition, default=str), first.stdout + first.stderr, listed):
        assert TINY.secret not in text and TINY.key not in text and pg_db.url not in text


def test_a_task_started_while_the_market_is_closed_does_nothing(aws, moto_endpoint, pg_db, data_dir, tmp_path):
    closed = Exchange(data_dir, tmp_path / "exchange.db", TINY, start="2026-03-16 09:10").start()
    try:
        task = Task(tmp_path, moto_endpoint, pg_db, closed)
        task.put_keys()
        recommend(pg_db, "SPY")
        result = task.run()
    finally:
        closed.stop()
    assert result.returncode == 0 and "market closed; nothing to do" in result.stdout, result.stdout + result.stderr
    (status,) = account_statuses(pg_db, [account_config(task.config, TINY)], MARKET_NOW, TradingCalendar())
    assert status.last_run_at is None and status.trades_executed == 0
    assert task.c["cloudwatch"].list_metrics(Namespace="OpsPipeline")["Metrics"] == []
