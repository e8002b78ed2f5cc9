"""`ops-pipeline deploy` and `--target aws` against moto's server (boto3 through AWS_ENDPOINT_URL):
exactly the resources of seeds 000/002, idempotent applies, a one-account hotfix, rollback, schedule
states, logs, destroy, and no secret anywhere a deploy writes or prints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from ops_pipeline.cli import app
from ops_pipeline.config.loader import default_config_dir

ACCOUNT_ID = "123456789012"  # moto's
REGION = "us-west-2"
DB_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:ops-pipeline/database-url-AbCdEf"
TIERS = {"large-100k": "large", "tiny-1k": "tiny", "small-5k": "small", "medium-25k": "medium"}
LOG_GROUPS = {"large": "/ecs/ops-pipeline/dispatcher", "tiny": "/ecs/ops-pipeline/dispatcher-tiny",
              "small": "/ecs/ops-pipeline/dispatcher-small", "medium": "/ecs/ops-pipeline/dispatcher-medium"}
EXPRESSIONS = {"large": "cron(* 9-15 ? * MON-FRI *)", "tiny": "cron(0/5 9-15 ? * MON-FRI *)",
               "small": "cron(1/5 9-15 ? * MON-FRI *)", "medium": "cron(2/5 9-15 ? * MON-FRI *)"}
SECRET_VALUE = "s3cr3t-VALUE-never-shown-7777"
PAPER_KEY = "PKDEPLOYTEST0000ZZZZ"


def deploy_toml(**changes: str) -> str:
    values = {
        "region": f'"{REGION}"', "cluster": '"ops-pipeline-cluster"', "subnets": '["subnet-0aaa", "subnet-0bbb"]',
        "security_groups": '["sg-0ccc"]', "image_repository": f'"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/ops-pipeline"',
        "image_tag": '"v1"', "execution_role_arn": f'"arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-task-execution"',
        "task_role_arn": f'"arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-task-{{tier}}"',
        "scheduler_role_arn": f'"arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-scheduler"', "database_url": f'"{DB_ARN}"',
    } | changes
    return "\n".join(f"{k} = {v}" for k, v in values.items() if v is not None) + "\n"


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "config"
        shutil.copytree(default_config_dir(), self.config)
        self.deploy_file = tmp / "deploy.toml"
        self.deploy_file.write_text(deploy_toml())
        self.c = {n: boto3.client(n, region_name=REGION) for n in
                  ("ssm", "secretsmanager", "logs", "ecs", "scheduler", "cloudwatch")}
        self.c["ecs"].create_cluster(clusterName="ops-pipeline-cluster")  # the foundation stack's
        self.runner = CliRunner()

    def cli(self, *args: str, input: str | None = None):  # noqa: A002 - CliRunner's name
        result = self.runner.invoke(app, [*args, "--config-dir", str(self.config), "--file", str(self.deploy_file)],
                                    input=input, env={"COLUMNS": "250"})
        return result

    def schedule(self, tier: str) -> dict:
        return self.c["scheduler"].get_schedule(Name=f"ops-pipeline-dispatcher-{tier}")

    def states(self) -> dict[str, str]:
        return {t: self.schedule(t)["State"] for t in TIERS.values()}

    def revision_in_schedule(self, tier: str) -> int:
        return int(self.schedule(tier)["Target"]["EcsParameters"]["TaskDefinitionArn"].rsplit(":", 1)[1])

    def revisions(self, tier: str) -> list[int]:
        arns = self.c["ecs"].list_task_definitions(familyPrefix=f"ops-pipeline-dispatcher-{tier}")["taskDefinitionArns"]
        return sorted(int(a.rsplit(":", 1)[1]) for a in arns)


@pytest.fixture
def rig(aws, tmp_path) -> Rig:
    return Rig(tmp_path)


def test_apply_creates_exactly_the_resources_of_the_seeds(rig):
    result = rig.cli("deploy", "apply")
    assert result.exit_code == 0, result.output
    c = rig.c
    # parameters: the tier parameters as the local files hold them, and the accounts file
    params = {p["Name"]: p for p in c["ssm"].describe_parameters()["Parameters"]}
    assert sorted(params) == sorted(["/ops-pipeline/accounts"] + [f"/ops-pipeline/dispatcher_config_{t}" for t in TIERS.values()])
    for tier in TIERS.values():
        local = json.loads((rig.config / "parameters" / f"dispatcher_config_{tier}.json").read_text())
        assert json.loads(c["ssm"].get_parameter(Name=f"/ops-pipeline/dispatcher_config_{tier}")["Parameter"]["Value"]) == local
    assert c["ssm"].get_parameter(Name="/ops-pipeline/accounts")["Parameter"]["Value"] == (rig.config / "accounts.toml").read_text()
    # secrets: one placeholder per account, naming the account, with no usable key
    secrets = {s["Name"] for s in c["secretsmanager"].list_secrets()["SecretList"]}
    assert secrets == {f"ops-pipeline/alpaca/{t}" for t in TIERS.values()}
    for name, tier in TIERS.items():
        placeholder = json.loads(c["secretsmanager"].get_secret_value(SecretId=f"ops-pipeline/alpaca/{tier}")["SecretString"])
        assert placeholder["account_name"] == name and not placeholder["api_key"].startswith("PK")
    # log groups, with retention
    groups = {g["logGroupName"]: g for g in c["logs"].describe_log_groups()["logGroups"]}
    assert set(groups) == set(LOG_GROUPS.values())
    assert all(g["retentionInDays"] == 30 for g in groups.values())
    # task definitions
    families = c["ecs"].list_task_definition_families()["families"]
    assert sorted(families) == sorted(f"ops-pipeline-dispatcher-{t}" for t in TIERS.values())
    for tier in TIERS.values():
        td = c["ecs"].describe_task_definition(taskDefinition=f"ops-pipeline-dispatcher-{tier}")["taskDefinition"]
        assert td["revision"] == 1 and td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc"
        assert (td["cpu"], td["memory"]) == ("256", "512")
        assert td["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-task-execution"
        assert td["taskRoleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-task-{tier}"
        (container,) = td["containerDefinitions"]
        assert container["image"] == f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/ops-pipeline:v1"
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["ACCOUNT_TIER"] == tier and env["EXECUTION_MODE"] == "ALPACA_PAPER" and env["RUN_MODE"] == "ONCE"
        assert env["OPS_PIPELINE_PARAMETER_STORE"] == env["OPS_PIPELINE_SECRET_STORE"] == "aws"
        assert env["OPS_PIPELINE_METRICS"] == "cloudwatch" and env["OPS_PIPELINE_LOG_TO"] == "stdout"
        assert container["secrets"] == [{"name": "OPS_PIPELINE_DATABASE_URL", "valueFrom": DB_ARN}]
        assert container["logConfiguration"] == {"logDriver": "awslogs", "options": {
            "awslogs-group": LOG_GROUPS[tier], "awslogs-region": REGION, "awslogs-stream-prefix": "dispatcher"}}
    # schedules: staggered, market hours in New York, starting the task on Fargate
    names = {s["Name"] for s in c["scheduler"].list_schedules()["Schedules"]}
    assert names == {f"ops-pipeline-dispatcher-{t}" for t in TIERS.values()}
    for tier, expression in EXPRESSIONS.items():
        s = rig.schedule(tier)
        assert s["ScheduleExpression"] == expression and s["ScheduleExpressionTimezone"] == "America/New_York"
        assert s["State"] == "ENABLED" and s["FlexibleTimeWindow"] == {"Mode": "OFF"}
        target = s["Target"]
        assert target["Arn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/ops-pipeline-cluster"
        assert target["RoleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/ops-pipeline-scheduler"
        ecs = target["EcsParameters"]
        assert ecs["TaskDefinitionArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task-definition/ops-pipeline-dispatcher-{tier}:1"
        assert ecs["LaunchType"] == "FARGATE" and ecs["TaskCount"] == 1
        assert ecs["NetworkConfiguration"]["awsvpcConfiguration"] == {
            "Subnets": ["subnet-0aaa", "subnet-0bbb"], "SecurityGroups": ["sg-0ccc"], "AssignPublicIp": "DISABLED"}
    # the dashboard: every account in the seeds' metrics
    body = json.loads(c["cloudwatch"].get_dashboard(DashboardName="ops-pipeline")["DashboardBody"])
    text = json.dumps(body)
    for metric in ("positions.count", "exposure.dollars", "trades.executed", "gates.failed"):
        assert metric in text
    for name in TIERS:
        assert name in text


def test_a_second_apply_changes_nothing_and_says_so(rig):
    assert rig.cli("deploy", "apply").exit_code == 0
    modified = {t: rig.schedule(t)["LastModificationDate"] for t in TIERS.values()}
    again = rig.cli("deploy", "apply")
    assert again.exit_code == 0 and "no changes" in again.output, again.output
    plan = rig.cli("deploy", "plan")
    assert plan.exit_code == 0 and "no changes" in plan.output
    assert all(rig.revisions(t) == [1] for t in TIERS.values())
    assert {t: rig.schedule(t)["LastModificationDate"] for t in TIERS.values()} == modified


def test_a_new_image_for_one_account_touches_that_account_only_and_rollback_restores_it(rig):
    assert rig.cli("deploy", "apply").exit_code == 0
    rig.deploy_file.write_text(deploy_toml() + '\n[accounts.tiny-1k]\nimage_tag = "tiny-hotfix"\n')
    plan = rig.cli("deploy", "plan")
    assert plan.exit_code == 0, plan.output
    changed_rows = [line for line in plan.output.splitlines() if " update " in line or " create " in line]
    assert changed_rows and all("tiny-1k" in line for line in changed_rows), plan.output
    assert not any(name in plan.output for name in ("large-100k", "small-5k", "medium-25k")), plan.output
    assert "accounts: tiny-1k" in plan.output
    assert rig.cli("deploy", "apply").exit_code == 0
    assert rig.revisions("tiny") == [1, 2] and rig.revision_in_schedule("tiny") == 2
    td = rig.c["ecs"].describe_task_definition(taskDefinition="ops-pipeline-dispatcher-tiny:2")["taskDefinition"]
    assert td["containerDefinitions"][0]["image"].endswith(":tiny-hotfix")
    for tier in ("large", "small", "medium"):
        assert rig.revisions(tier) == [1] and rig.revision_in_schedule(tier) == 1
    rig.cli("accounts", "disable", "tiny-1k", "--target", "aws")
    rolled = rig.cli("deploy", "rollback", "tiny-1k")
    assert rolled.exit_code == 0 and "revision 1 (was 2)" in rolled.output, rolled.output
    assert rig.revision_in_schedule("tiny") == 1 and rig.schedule("tiny")["State"] == "DISABLED"  # state kept
    refused = rig.cli("deploy", "rollback", "tiny-1k", "--to", "7")
    assert refused.exit_code == 1 and "not an active revision" in refused.output
    assert rig.cli("deploy", "rollback", "tiny-1k", "--to", "2").exit_code == 0 and rig.revision_in_schedule("tiny") == 2


def test_accounts_disable_on_aws_disables_that_schedule_only_and_apply_keeps_it(rig):
    assert rig.cli("deploy", "apply").exit_code == 0
    result = rig.cli("accounts", "disable", "tiny-1k", "--target", "aws")
    assert result.exit_code == 0 and "ENABLED → DISABLED" in result.output, result.output
    assert rig.states() == {"large": "ENABLED", "tiny": "DISABLED", "small": "ENABLED", "medium": "ENABLED"}
    assert rig.cli("deploy", "apply").exit_code == 0  # a deploy never re-enables what an operator stopped
    assert rig.states()["tiny"] == "DISABLED"
    assert rig.cli("accounts", "pause-all", "--target", "aws").exit_code == 0
    assert set(rig.states().values()) == {"DISABLED"}
    assert rig.cli("accounts", "resume-all", "--target", "aws").exit_code == 0
    assert set(rig.states().values()) == {"ENABLED"}
    killed = rig.cli("kill", "small-5k", "--target", "aws")
    assert killed.exit_code == 0 and rig.states() == {"large": "ENABLED", "tiny": "ENABLED", "small": "DISABLED",
                                                      "medium": "ENABLED"}
    refused = rig.cli("accounts", "pause", "tiny-1k", "--target", "aws")
    assert refused.exit_code == 2 and "state in the database" in refused.output
    unknown = rig.cli("accounts", "disable", "tiny-2k", "--target", "aws")
    assert unknown.exit_code == 2 and "tiny-2k" in unknown.output


def test_apply_refuses_without_the_foundation_cluster_and_changes_nothing(rig):
    rig.deploy_file.write_text(deploy_toml(cluster='"no-such-cluster"'))
    plan = rig.cli("deploy", "plan")
    assert plan.exit_code == 0 and "cluster no-such-cluster not found" in plan.output
    result = rig.cli("deploy", "apply")
    assert result.exit_code == 1 and "foundation" in result.output and "nothing was changed" in result.output
    assert rig.c["ssm"].describe_parameters()["Parameters"] == []
    assert rig.c["scheduler"].list_schedules()["Schedules"] == []


def test_a_bad_deploy_file_names_every_problem_and_touches_nothing(rig):
    rig.deploy_file.write_text(deploy_toml(database_url='"postgresql://ops:pw@db/ops"', cpu="300",
                                           environment='{ ALPACA_API_KEY = "x" }')
                               + '\n[accounts.tiny-2k]\nimage_tag = "x"\n')
    result = rig.cli("deploy", "apply")
    assert result.exit_code == 2
    for says in ("database_url", "cpu", "ALPACA_API_KEY", "accounts.tiny-2k"):
        assert says in result.output, result.output
    assert "pw" not in result.output.replace("ops-pipeline", "")
    assert rig.c["scheduler"].list_schedules()["Schedules"] == []
    assert rig.c["ssm"].describe_parameters()["Parameters"] == []


def test_no_secret_value_in_task_definitions_plan_status_or_logs(rig):
    assert rig.cli("deploy", "apply").exit_code == 0
    keys = json.dumps({"api_key": PAPER_KEY, "api_secret": SECRET_VALUE, "account_name": "tiny-1k"})
    rig.c["secretsmanager"].put_secret_value(SecretId="ops-pipeline/alpaca/tiny", SecretString=keys)
    rig.deploy_file.write_text(deploy_toml(image_tag='"v2"'))
    outputs = [rig.cli("deploy", "plan", "--all").output, rig.cli("deploy", "apply").output,
               rig.cli("deploy", "status").output]
    second = rig.c["secretsmanager"].get_secret_value(SecretId="ops-pipeline/alpaca/tiny")["SecretString"]
    assert second == keys  # a real secret is never overwritten
    dumps = [json.dumps(rig.c["ecs"].describe_task_definition(taskDefinition=f"ops-pipeline-dispatcher-{t}:{r}"),
                        default=str) for t in TIERS.values() for r in rig.revisions(t)]
    for text in outputs + dumps:
        assert SECRET_VALUE not in text and PAPER_KEY not in text


def test_status_and_logs_read_aws(rig):
    assert rig.cli("deploy", "apply").exit_code == 0
    logs = rig.c["logs"]
    logs.create_log_stream(logGroupName=LOG_GROUPS["tiny"], logStreamName="dispatcher/dispatcher/abc")
    import time

    now_ms = int(time.time() * 1000)
    logs.put_log_events(logGroupName=LOG_GROUPS["tiny"], logStreamName="dispatcher/dispatcher/abc", logEvents=[
        {"timestamp": now_ms - 2000, "message": "INFO tiny-1k Tier: tiny, account tiny-1k"},
        {"timestamp": now_ms - 1000, "message": "INFO tiny-1k dispatch: 0 claimed"}])
    shown = rig.cli("logs", "tiny-1k", "--target", "aws", "--since", "5m", "--grep", "Tier:")
    assert shown.exit_code == 0 and "Tier: tiny" in shown.output and "claimed" not in shown.output, shown.output
    assert "claimed" in rig.cli("logs", "tiny-1k", "--target", "aws").output
    status = rig.cli("deploy", "status")
    assert status.exit_code == 0, status.output
    for name, tier in TIERS.items():
        assert name in status.output and f"ops-pipeline-dispatcher-{tier}" in status.output
    assert status.output.count("ENABLED") == 4


def test_destroy_asks_first_and_keeps_the_secrets(rig):
    assert rig.cli("deploy", "apply").exit_code == 0
    refused = rig.cli("deploy", "destroy", input="yes\n")
    assert refused.exit_code == 1 and "nothing deleted" in refused.output
    assert len(rig.c["scheduler"].list_schedules()["Schedules"]) == 4
    done = rig.cli("deploy", "destroy", input="ops-pipeline-cluster\n")
    assert done.exit_code == 0, done.output
    assert rig.c["scheduler"].list_schedules()["Schedules"] == []
    assert rig.c["ecs"].list_task_definitions(status="ACTIVE")["taskDefinitionArns"] == []
    assert rig.c["logs"].describe_log_groups()["logGroups"] == []
    assert rig.c["ssm"].describe_parameters()["Parameters"] == []
    assert len(rig.c["secretsmanager"].list_secrets()["SecretList"]) == 4
    assert "no changes" not in rig.cli("deploy", "plan").output  # everything but the secrets is to create again
