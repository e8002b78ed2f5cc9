"""What each account needs on AWS, as values: names, the task definition, the schedule, the dashboard.

Pure functions of the deploy file, the accounts and their parameters (no boto3 here). Names are the
seeds' (seed 002 "Account Overview"):

- parameter ``/ops-pipeline/dispatcher_config_{tier}`` (SSM, seed 000 "Create SSM Parameters");
- secret ``ops-pipeline/alpaca/{tier}`` (Secrets Manager; a placeholder, never overwritten);
- log group ``/ecs/ops-pipeline/dispatcher-{tier}``, large ``/ecs/ops-pipeline/dispatcher`` (seed 002
  "Separate Log Groups");
- task definition family ``ops-pipeline-dispatcher-{tier}``;
- EventBridge Scheduler schedule ``ops-pipeline-dispatcher-{tier}`` (seed 002 "Stagger Schedulers":
  large every minute; tiny, small, medium every 5 minutes at offsets 0, 1, 2), market hours in
  America/New_York, starting the task on Fargate.

Names are per tier, so AWS holds one account per tier (:func:`check_one_account_per_tier`).
"""

from __future__ import annotations

import json
from typing import Any

from ops_pipeline.config.loader import PLACEHOLDER_KEY_PREFIX
from ops_pipeline.config.models import AccountSpec, Schedule
from ops_pipeline.deploy.settings import DeploySettings
from ops_pipeline.domain.values import Tier
from ops_pipeline.errors import ConfigError

CONTAINER = "dispatcher"
TIMEZONE = "America/New_York"
MARKET_HOURS = "9-15"
"""Cron hours of the schedules, exchange time: 09:00–15:59. A task started before the 09:30 open
(or on a holiday, or after an early close) sees the market closed and does nothing
(``OPS_PIPELINE_MARKET_HOURS_ONLY``)."""
ACCOUNTS_PARAMETER = "accounts"
"""``{prefix}/accounts``: the accounts file the tasks read (``OPS_PIPELINE_ACCOUNTS_PARAMETER``)."""
METRIC_NAMESPACE = "OpsPipeline"


def schedule_name(tier: Tier) -> str:
    return f"ops-pipeline-dispatcher-{tier.value}"


def task_family(tier: Tier) -> str:
    return f"ops-pipeline-dispatcher-{tier.value}"


def log_group(tier: Tier) -> str:
    return "/ecs/ops-pipeline/dispatcher" if tier is Tier.LARGE else f"/ecs/ops-pipeline/dispatcher-{tier.value}"


def parameter_name(settings: DeploySettings, tier: Tier) -> str:
    return f"{settings.parameter_prefix}/dispatcher_config_{tier.value}"


def accounts_parameter_name(settings: DeploySettings) -> str:
    return f"{settings.parameter_prefix}/{ACCOUNTS_PARAMETER}"


def secret_name(settings: DeploySettings, tier: Tier) -> str:
    return f"{settings.secret_prefix}/{tier.value}"


def schedule_expression(schedule: Schedule) -> str:
    """``cron(1/5 9-15 ? * MON-FRI *)`` for every 5 minutes at offset 1; ``cron(* 9-15 ? * MON-FRI *)``
    for every minute. EventBridge Scheduler's cron fields: minutes hours day-of-month month day-of-week year.

    Raises:
        ConfigError: a period that does not divide the hour (a cron minute field cannot repeat it
            across hours the way the local scheduler's minute-of-day rule does).
    """
    every, offset = schedule.every_minutes, schedule.offset_minutes
    if 60 % every:
        raise ConfigError(f"schedule every {every} minutes cannot be an EventBridge cron; use a divisor of 60")
    minutes = "*" if every == 1 else f"{offset}/{every}"
    return f"cron({minutes} {MARKET_HOURS} ? * MON-FRI *)"


def check_one_account_per_tier(specs: list[AccountSpec]) -> None:
    """Raises ConfigError naming every tier that has several accounts (the AWS names are per tier)."""
    by_tier: dict[Tier, list[str]] = {}
    for spec in specs:
        by_tier.setdefault(spec.tier, []).append(spec.name)
    problems = [f"tier {t.value}: {', '.join(names)} (AWS names are per tier: one account each)"
                for t, names in by_tier.items() if len(names) > 1]
    if problems:
        raise ConfigError("accounts.toml cannot be deployed as it is", problems)


def placeholder_secret(spec: AccountSpec) -> str:
    """The secret created when none exists: the account's name and balance, keys to fill in. A run
    refuses it, naming the secret, so nothing trades until the trader puts the keys in."""
    return json.dumps({"api_key": f"{PLACEHOLDER_KEY_PREFIX}-PAPER-KEY", "api_secret": f"{PLACEHOLDER_KEY_PREFIX}-PAPER-SECRET",
                       "account_name": spec.name, "initial_balance": float(spec.initial_balance)})


def environment(settings: DeploySettings, spec: AccountSpec) -> dict[str, str]:
    """The task's environment: how ``ops-pipeline run`` finds its account, stores and sinks. No secret."""
    env = {
        "ACCOUNT_TIER": spec.tier.value,
        "EXECUTION_MODE": "ALPACA_PAPER",
        "RUN_MODE": "ONCE",
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,  # what botocore reads
        "OPS_PIPELINE_PARAMETER_STORE": "aws",
        "OPS_PIPELINE_SECRET_STORE": "aws",
        "OPS_PIPELINE_PARAMETER_PREFIX": settings.parameter_prefix,
        "OPS_PIPELINE_SECRET_PREFIX": settings.secret_prefix,
        "OPS_PIPELINE_ACCOUNTS_PARAMETER": accounts_parameter_name(settings),
        "OPS_PIPELINE_LOG_TO": "stdout",
        "OPS_PIPELINE_METRICS": "cloudwatch",
        "OPS_PIPELINE_MARKET_HOURS_ONLY": "true",
    }
    if settings.alpaca_base_url:
        env["OPS_PIPELINE_ALPACA_BASE_URL"] = settings.alpaca_base_url
    if settings.alpaca_data_url:
        env["OPS_PIPELINE_ALPACA_DATA_URL"] = settings.alpaca_data_url
    return env | settings.environment


def task_definition(settings: DeploySettings, spec: AccountSpec) -> dict[str, Any]:
    """``RegisterTaskDefinition`` arguments of the account's task (Fargate, awsvpc, awslogs)."""
    return {
        "family": task_family(spec.tier),
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": str(settings.cpu),
        "memory": str(settings.memory),
        "executionRoleArn": settings.execution_role_arn,
        "taskRoleArn": settings.task_role_arn.replace("{tier}", spec.tier.value),
        "containerDefinitions": [{
            "name": CONTAINER,
            "image": settings.image_for(spec.name),
            "essential": True,
            "memory": settings.memory,
            "environment": [{"name": k, "value": v} for k, v in sorted(environment(settings, spec).items())],
            "secrets": [{"name": "OPS_PIPELINE_DATABASE_URL", "valueFrom": settings.database_url}],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": log_group(spec.tier), "awslogs-region": settings.region,
                "awslogs-stream-prefix": CONTAINER}},
        }],
    }


def schedule_target(settings: DeploySettings, task_definition_arn: str) -> dict[str, Any]:
    """The schedule's target: ECS ``RunTask`` of one task on Fargate in the deploy file's network.
    No retries: a run a minute late is the next minute's run, and the next tick comes anyway."""
    return {
        "Arn": settings.cluster_arn,
        "RoleArn": settings.scheduler_role_arn,
        "EcsParameters": {
            "TaskDefinitionArn": task_definition_arn,
            "TaskCount": 1,
            "LaunchType": "FARGATE",
            "NetworkConfiguration": {"awsvpcConfiguration": {
                "Subnets": list(settings.subnets), "SecurityGroups": list(settings.security_groups),
                "AssignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED"}},
        },
        "RetryPolicy": {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0},
    }


def schedule(settings: DeploySettings, spec: AccountSpec, task_definition_arn: str) -> dict[str, Any]:
    """``CreateSchedule`` / ``UpdateSchedule`` arguments, without ``State`` (an operator's
    ENABLED/DISABLED is never changed by a deploy)."""
    return {
        "Name": schedule_name(spec.tier),
        "ScheduleExpression": schedule_expression(spec.schedule),
        "ScheduleExpressionTimezone": TIMEZONE,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": schedule_target(settings, task_definition_arn),
        "Description": f"ops-pipeline: one run of {spec.name} ({spec.tier.value})",
    }


def dashboard_body(settings: DeploySettings, specs: list[AccountSpec]) -> str:
    """The CloudWatch dashboard of seed 000 item 11.6: the accounts side by side, one line each."""
    def per_account(metric: str, stat: str) -> list[list[Any]]:
        return [[METRIC_NAMESPACE, metric, "account_name", s.name, "tier", s.tier.value, {"stat": stat, "label": s.name}]
                for s in specs]

    def widget(title: str, metrics: list[list[Any]], x: int, y: int, **extra: Any) -> dict[str, Any]:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
                "properties": {"title": title, "region": settings.region, "view": "timeSeries", "period": 300,
                               "metrics": metrics, **extra}}

    gates = [{"expression": f"SEARCH('{{{METRIC_NAMESPACE},account_name,tier,reason}} MetricName=\"gates.failed\"', "
                            "'Sum', 300)", "id": "gates", "label": ""}]
    widgets = [
        widget("Open positions (positions.count)", per_account("positions.count", "Maximum"), 0, 0),
        widget("Exposure, $ (exposure.dollars)", per_account("exposure.dollars", "Maximum"), 12, 0),
        widget("Trades executed (trades.executed)", per_account("trades.executed", "Sum"), 0, 6, stacked=True),
        widget("Gate rejections by account and reason (gates.failed)", [gates], 12, 6, stacked=True),
        widget("P&L today, $ (pnl.today)", per_account("pnl.today", "Average"), 0, 12),
        widget("Run errors (runs.errors)", per_account("runs.errors", "Sum"), 12, 12),
    ]
    return json.dumps({"widgets": widgets}, sort_keys=True)
