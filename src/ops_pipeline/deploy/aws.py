"""Deploying and operating the accounts on AWS with boto3: plan, apply, status, rollback, destroy,
schedule states and log reading (seed 000 "Deployment Commands", "Rollback Plan"; seed 002's runbooks).

:class:`Deployer` reads what exists, compares it with :mod:`ops_pipeline.deploy.resources`, and
writes only what differs, resource by resource, so a second ``apply`` changes nothing and a new
image for one account touches only that account. Secret *values* are never read: a secret is only
checked for existence (``DescribeSecret``) and created as a placeholder when missing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ops_pipeline.config.models import AccountSpec
from ops_pipeline.deploy import resources as r
from ops_pipeline.deploy.settings import DeploySettings
from ops_pipeline.errors import OpsPipelineError

CREATE, UPDATE, UNCHANGED, DELETE = "create", "update", "unchanged", "delete"


class DeployError(OpsPipelineError):
    """AWS refused a change, or a resource a command needs does not exist."""


@dataclass(frozen=True)
class Change:
    """One resource's difference between AWS and the deploy: ``action`` is create, update,
    unchanged or delete; ``detail`` says what differs (never a secret value)."""

    account: str
    kind: str
    name: str
    action: str
    detail: str = ""


@dataclass
class Plan:
    """Every resource's :class:`Change`, in the order ``apply`` makes them."""

    changes: list[Change] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != UNCHANGED]

    def accounts_changed(self) -> list[str]:
        return sorted({c.account for c in self.pending if c.account != "*"})


@dataclass(frozen=True)
class DeployedAccount:
    """One account on AWS as ``deploy status`` shows it."""

    account: str
    tier: str
    schedule: str
    state: str | None
    expression: str | None
    revision: int | None
    latest_revision: int | None
    image: str | None
    last_task: str | None
    last_log_at: dt.datetime | None


def _revision(task_definition_arn: str) -> int:
    return int(task_definition_arn.rsplit(":", 1)[1])


def _subset_equal(want: Any, have: Any) -> bool:
    """True when every key ``want`` sets has the same value in ``have`` (AWS adds defaults we ignore)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_subset_equal(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(_subset_equal(a, b) for a, b in zip(want, have, strict=True))
    return want == have or (want is not None and have is not None and str(want) == str(have))


def _task_view(td: dict[str, Any]) -> dict[str, Any]:
    """The parts of a task definition a deploy sets, in a comparable form."""
    c = td["containerDefinitions"][0]
    return {
        "image": c.get("image"),
        "environment": {e["name"]: e["value"] for e in c.get("environment", [])},
        "secrets": {s["name"]: s["valueFrom"] for s in c.get("secrets", [])},
        "logConfiguration": c.get("logConfiguration"),
        "memory": str(td.get("memory")), "cpu": str(td.get("cpu")),
        "executionRoleArn": td.get("executionRoleArn"), "taskRoleArn": td.get("taskRoleArn"),
        "networkMode": td.get("networkMode"), "requiresCompatibilities": sorted(td.get("requiresCompatibilities", [])),
        "container": c.get("name"),
    }


def _describe_diff(want: dict[str, Any], have: dict[str, Any]) -> str:
    parts = []
    for key, value in want.items():
        old = have.get(key)
        if value == old:
            continue
        if isinstance(value, dict) and isinstance(old, dict) and key in ("environment", "secrets"):
            names = sorted(k for k in set(value) | set(old) if value.get(k) != old.get(k))
            parts.append(f"{key} {', '.join(names)}")
        elif key in ("image", "memory", "cpu", "executionRoleArn", "taskRoleArn"):
            parts.append(f"{key} {old} → {value}")
        else:
            parts.append(key)
    return "; ".join(parts)


class Deployer:
    """The accounts of ``specs`` on AWS as ``settings`` says. ``clients`` maps a service name
    (ssm, secretsmanager, logs, ecs, scheduler, cloudwatch) to a boto3 client."""

    def __init__(self, settings: DeploySettings, specs: list[AccountSpec], clients: dict[str, Any],
                 parameters: dict[str, str | None], accounts_text: str) -> None:
        r.check_one_account_per_tier(specs)
        self.settings = settings
        self.specs = specs
        self.c = clients
        self.parameters = parameters
        """Tier parameter name → the JSON text to keep there (``None``: no local parameter; not managed)."""
        self.accounts_text = accounts_text

    # --- reading what exists -------------------------------------------------------------
    def _parameter(self, name: str) -> str | None:
        try:
            return self.c["ssm"].get_parameter(Name=name)["Parameter"]["Value"]
        except self.c["ssm"].exceptions.ParameterNotFound:
            return None

    def _secret_exists(self, name: str) -> bool:
        try:
            self.c["secretsmanager"].describe_secret(SecretId=name)
        except self.c["secretsmanager"].exceptions.ResourceNotFoundException:
            return False
        return True

    def _log_group(self, name: str) -> dict[str, Any] | None:
        for page in self.c["logs"].get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name):
            for group in page["logGroups"]:
                if group["logGroupName"] == name:
                    return group
        return None

    def _latest_task_definition(self, family: str) -> dict[str, Any] | None:
        try:
            return self.c["ecs"].describe_task_definition(taskDefinition=family)["taskDefinition"]
        except self.c["ecs"].exceptions.ClientException:
            return None

    def _schedule(self, name: str) -> dict[str, Any] | None:
        try:
            return self.c["scheduler"].get_schedule(Name=name)
        except self.c["scheduler"].exceptions.ResourceNotFoundException:
            return None

    def _dashboard(self) -> str | None:
        try:
            return self.c["cloudwatch"].get_dashboard(DashboardName=self.settings.dashboard)["DashboardBody"]
        except (self.c["cloudwatch"].exceptions.DashboardNotFoundError, self.c["cloudwatch"].exceptions.ResourceNotFound):
            return None

    def _task_definition_arn(self, family: str, revision: int) -> str:
        return f"arn:aws:ecs:{self.settings.region}:{self.settings.account_id}:task-definition/{family}:{revision}"

    def cluster_exists(self) -> bool:
        """True when the deploy file's ECS cluster exists and is active (the foundation stack's)."""
        clusters = self.c["ecs"].describe_clusters(clusters=[self.settings.cluster])["clusters"]
        return any(c.get("status") == "ACTIVE" for c in clusters)

    # --- plan ------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """What ``apply`` would change, resource by resource (reads only)."""
        plan = Plan()
        name = r.accounts_parameter_name(self.settings)
        current = self._parameter(name)
        plan.changes.append(Change("*", "accounts parameter", name, CREATE if current is None else
                                   UNCHANGED if current == self.accounts_text else UPDATE,
                                   "" if current in (None, self.accounts_text) else "accounts.toml changed"))
        for spec in self.specs:
            plan.changes += list(self._plan_account(spec))
        body = r.dashboard_body(self.settings, self.specs)
        current_body = self._dashboard()
        same = current_body is not None and json.loads(current_body) == json.loads(body)
        plan.changes.append(Change("*", "dashboard", self.settings.dashboard,
                                   CREATE if current_body is None else UNCHANGED if same else UPDATE))
        return plan

    def _plan_account(self, spec: AccountSpec) -> Iterator[Change]:
        tier, s = spec.tier, self.settings
        pname = r.parameter_name(s, tier)
        text = self.parameters.get(pname)
        if text is None:
            yield Change(spec.name, "parameter", pname, UNCHANGED, "no local parameter: tier defaults in code")
        else:
            current = self._parameter(pname)
            yield Change(spec.name, "parameter", pname, CREATE if current is None else
                         UNCHANGED if current == text else UPDATE, "" if current in (None, text) else "value changed")
        sname = r.secret_name(s, tier)
        exists = self._secret_exists(sname)
        yield Change(spec.name, "secret", sname, UNCHANGED if exists else CREATE,
                     "exists; never overwritten" if exists else "placeholder; put the paper keys in it")
        group = self._log_group(r.log_group(tier))
        if group is None:
            yield Change(spec.name, "log group", r.log_group(tier), CREATE, f"retention {s.log_retention_days} days")
        else:
            kept = group.get("retentionInDays")
            yield Change(spec.name, "log group", r.log_group(tier), UNCHANGED if kept == s.log_retention_days else UPDATE,
                         "" if kept == s.log_retention_days else f"retention {kept} → {s.log_retention_days} days")
        want = r.task_definition(s, spec)
        latest = self._latest_task_definition(want["family"])
        if latest is None:
            next_revision = 1
            yield Change(spec.name, "task definition", want["family"], CREATE, f"revision 1, image {s.image_for(spec.name)}")
        else:
            diff = _describe_diff(_task_view(want), _task_view(latest))
            next_revision = latest["revision"] + (1 if diff else 0)
            yield Change(spec.name, "task definition", want["family"], UPDATE if diff else UNCHANGED,
                         f"new revision {next_revision}: {diff}" if diff else f"revision {latest['revision']}")
        arn = self._task_definition_arn(want["family"], next_revision)
        wanted = r.schedule(s, spec, arn)
        current_schedule = self._schedule(wanted["Name"])
        if current_schedule is None:
            yield Change(spec.name, "schedule", wanted["Name"], CREATE,
                         f"{wanted['ScheduleExpression']} {r.TIMEZONE} → :{next_revision}")
            return
        differs = [k for k in ("ScheduleExpression", "ScheduleExpressionTimezone", "FlexibleTimeWindow", "Target")
                   if not _subset_equal(wanted[k], current_schedule.get(k))]
        detail = []
        for k in differs:
            if k == "Target":
                old = current_schedule.get("Target", {}).get("EcsParameters", {}).get("TaskDefinitionArn", "")
                detail.append(f"task definition :{old.rsplit(':', 1)[-1]} → :{next_revision}"
                              if old != arn else "target")
            else:
                detail.append(f"{k} {current_schedule.get(k)} → {wanted[k]}")
        yield Change(spec.name, "schedule", wanted["Name"], UPDATE if differs else UNCHANGED,
                     "; ".join(detail) if differs else f"{current_schedule.get('State')}, :{next_revision}")

    # --- apply -----------------------------------------------------------------------------
    def apply(self, plan: Plan | None = None) -> Plan:
        """Make AWS match the deploy; returns the plan it carried out (nothing pending: nothing done).

        Raises:
            DeployError: AWS refused a change (the changes before it stay made; ``apply`` again).
        """
        plan = plan or self.plan()
        if plan.pending and not self.cluster_exists():
            raise DeployError(f"cluster {self.settings.cluster} not found in {self.settings.region}: create the "
                              "foundation stack first (deploy/foundation.yaml); nothing was changed")
        for change in plan.pending:
            try:
                self._carry_out(change)
            except Exception as exc:  # noqa: BLE001 - botocore's errors: said with the resource they were about
                raise DeployError(f"AWS refused {change.action} of {change.kind} {change.name}: {type(exc).__name__}: "
                                  f"{exc}; the changes before it stay made; run apply again") from None
        return plan

    def _spec(self, account: str) -> AccountSpec:
        return next(s for s in self.specs if s.name == account)

    def _carry_out(self, change: Change) -> None:
        s = self.settings
        if change.kind == "accounts parameter":
            self.c["ssm"].put_parameter(Name=change.name, Value=self.accounts_text, Type="String", Overwrite=True)
        elif change.kind == "dashboard":
            self.c["cloudwatch"].put_dashboard(DashboardName=change.name, DashboardBody=r.dashboard_body(s, self.specs))
        elif change.kind == "parameter":
            self.c["ssm"].put_parameter(Name=change.name, Value=self.parameters[change.name], Type="String", Overwrite=True)
        elif change.kind == "secret":
            self.c["secretsmanager"].create_secret(Name=change.name, SecretString=r.placeholder_secret(self._spec(change.account)),
                                                   Description="ops-pipeline: Alpaca paper keys of one account")
        elif change.kind == "log group":
            if change.action == CREATE:
                self.c["logs"].create_log_group(logGroupName=change.name)
            self.c["logs"].put_retention_policy(logGroupName=change.name, retentionInDays=s.log_retention_days)
        elif change.kind == "task definition":
            self.c["ecs"].register_task_definition(**r.task_definition(s, self._spec(change.account)))
        elif change.kind == "schedule":
            spec = self._spec(change.account)
            latest = self._latest_task_definition(r.task_family(spec.tier))
            if latest is None:
                raise DeployError(f"no task definition {r.task_family(spec.tier)} for schedule {change.name}")
            wanted = r.schedule(s, spec, latest["taskDefinitionArn"])
            if change.action == CREATE:
                self.c["scheduler"].create_schedule(**wanted, State="DISABLED" if spec.state == "disabled" else "ENABLED")
            else:
                current = self._schedule(change.name) or {}
                self.c["scheduler"].update_schedule(**wanted, State=current.get("State", "ENABLED"))

    # --- status, rollback, states ------------------------------------------------------------
    def status(self) -> list[DeployedAccount]:
        """Each account's schedule (state, expression), the revision it starts and that revision's
        image, the newest revision, the last task and the last log event (reads only)."""
        rows = []
        for spec in self.specs:
            name = r.schedule_name(spec.tier)
            current = self._schedule(name)
            arn = (current or {}).get("Target", {}).get("EcsParameters", {}).get("TaskDefinitionArn")
            image = None
            if arn:
                try:
                    td = self.c["ecs"].describe_task_definition(taskDefinition=arn)["taskDefinition"]
                    image = td["containerDefinitions"][0]["image"]
                except self.c["ecs"].exceptions.ClientException:
                    image = "(revision gone)"
            latest = self._latest_task_definition(r.task_family(spec.tier))
            rows.append(DeployedAccount(
                account=spec.name, tier=spec.tier.value, schedule=name, state=(current or {}).get("State"),
                expression=(current or {}).get("ScheduleExpression"), revision=_revision(arn) if arn else None,
                latest_revision=latest["revision"] if latest else None, image=image,
                last_task=self._last_task(r.task_family(spec.tier)), last_log_at=self._last_log_at(r.log_group(spec.tier)),
            ))
        return rows

    def _last_task(self, family: str) -> str | None:
        ecs = self.c["ecs"]
        arns: list[str] = []
        try:
            for desired in ("RUNNING", "STOPPED"):
                arns += ecs.list_tasks(cluster=self.settings.cluster, family=family, desiredStatus=desired)["taskArns"]
            if not arns:
                return None
            tasks = ecs.describe_tasks(cluster=self.settings.cluster, tasks=arns[:100])["tasks"]
        except ecs.exceptions.ClusterNotFoundException:
            return "cluster not found"
        if not tasks:
            return None
        task = max(tasks, key=lambda t: t.get("createdAt") or dt.datetime.min.replace(tzinfo=dt.UTC))
        when = task.get("createdAt")
        text = f"{task.get('lastStatus', '?')}"
        if when:
            text += f" {when.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
        if task.get("stoppedReason"):
            text += f" ({task['stoppedReason']})"
        return text

    def _last_log_at(self, group: str) -> dt.datetime | None:
        try:
            streams = self.c["logs"].describe_log_streams(logGroupName=group, orderBy="LastEventTime",
                                                          descending=True, limit=1)["logStreams"]
        except self.c["logs"].exceptions.ResourceNotFoundException:
            return None
        stamp = streams[0].get("lastEventTimestamp") if streams else None
        return dt.datetime.fromtimestamp(stamp / 1000, tz=dt.UTC) if stamp else None

    def rollback(self, account: str, to_revision: int | None = None) -> tuple[int, int]:
        """Point the account's schedule back at an earlier task definition revision (seed 000
        "Rollback Plan"): ``to_revision``, else the newest active revision below the current one.
        Returns ``(from, to)``; the schedule's state is kept.

        Raises:
            DeployError: no schedule, no earlier revision, or ``to_revision`` is not an active revision.
        """
        spec = self._spec(account)
        name, family = r.schedule_name(spec.tier), r.task_family(spec.tier)
        current = self._schedule(name)
        if current is None:
            raise DeployError(f"{account}: no schedule {name} (deploy apply first)")
        now = _revision(current["Target"]["EcsParameters"]["TaskDefinitionArn"])
        active = sorted(_revision(a) for page in self.c["ecs"].get_paginator("list_task_definitions").paginate(
            familyPrefix=family, status="ACTIVE") for a in page["taskDefinitionArns"] if a.rsplit("/", 1)[1].rsplit(":", 1)[0] == family)
        if to_revision is None:
            earlier = [v for v in active if v < now]
            if not earlier:
                raise DeployError(f"{account}: {family}:{now} has no earlier active revision to roll back to")
            to_revision = earlier[-1]
        elif to_revision not in active:
            raise DeployError(f"{account}: {family}:{to_revision} is not an active revision "
                              f"(active: {', '.join(map(str, active)) or 'none'})")
        target = json.loads(json.dumps(current["Target"], default=str))
        target["EcsParameters"]["TaskDefinitionArn"] = self._task_definition_arn(family, to_revision)
        self._update_schedule(current, Target=target)
        return now, to_revision

    def _update_schedule(self, current: dict[str, Any], **changes: Any) -> None:
        """``UpdateSchedule`` replaces the whole schedule: send back every field of ``current`` with ``changes``."""
        fields = {"Name": current["Name"], "ScheduleExpression": current["ScheduleExpression"],
                  "ScheduleExpressionTimezone": current.get("ScheduleExpressionTimezone", r.TIMEZONE),
                  "FlexibleTimeWindow": current["FlexibleTimeWindow"],
                  "Target": json.loads(json.dumps(current["Target"], default=str)), "State": current["State"]}
        if current.get("Description"):
            fields["Description"] = current["Description"]
        self.c["scheduler"].update_schedule(**(fields | changes))

    def set_state(self, account: str, enabled: bool) -> tuple[str | None, str]:
        """Set the account's schedule ENABLED or DISABLED (seed 002 "Start/Stop Specific Account").
        Returns ``(before, after)``; everything else about the schedule is kept.

        Raises:
            DeployError: the account has no schedule.
        """
        spec = self._spec(account)
        name = r.schedule_name(spec.tier)
        current = self._schedule(name)
        if current is None:
            raise DeployError(f"{account}: no schedule {name} (deploy apply first)")
        state = "ENABLED" if enabled else "DISABLED"
        if current.get("State") != state:
            self._update_schedule(current, State=state)
        return current.get("State"), state

    def log_events(self, account: str, since: dt.datetime | None, pattern: str | None = None,
                   next_start: int | None = None) -> list[dict[str, Any]]:
        """The account's log events (its log group, every stream), oldest first.

        Raises:
            DeployError: the log group does not exist.
        """
        group = r.log_group(self._spec(account).tier)
        args: dict[str, Any] = {"logGroupName": group}
        if next_start is not None:
            args["startTime"] = next_start
        elif since is not None:
            args["startTime"] = int(since.timestamp() * 1000)
        if pattern:
            args["filterPattern"] = json.dumps(pattern)  # a quoted term: matched literally
        events: list[dict[str, Any]] = []
        try:
            for page in self.c["logs"].get_paginator("filter_log_events").paginate(**args):
                events += page["events"]
        except self.c["logs"].exceptions.ResourceNotFoundException:
            raise DeployError(f"{account}: no log group {group} (deploy apply first)") from None
        return sorted(events, key=lambda e: (e["timestamp"], e.get("eventId", "")))

    def destroy(self, delete_secrets: bool = False) -> list[Change]:
        """Delete the schedules first (nothing starts any more), then task definitions, log groups,
        parameters and the dashboard; the secrets only with ``delete_secrets`` (7-day recovery window)."""
        done: list[Change] = []
        s = self.settings
        for spec in self.specs:
            name = r.schedule_name(spec.tier)
            if self._schedule(name) is not None:
                self.c["scheduler"].delete_schedule(Name=name)
                done.append(Change(spec.name, "schedule", name, DELETE))
        for spec in self.specs:
            family = r.task_family(spec.tier)
            for page in self.c["ecs"].get_paginator("list_task_definitions").paginate(familyPrefix=family, status="ACTIVE"):
                for arn in page["taskDefinitionArns"]:
                    if arn.rsplit("/", 1)[1].rsplit(":", 1)[0] == family:
                        self.c["ecs"].deregister_task_definition(taskDefinition=arn)
                        done.append(Change(spec.name, "task definition", arn.rsplit("/", 1)[1], DELETE))
            group = r.log_group(spec.tier)
            if self._log_group(group) is not None:
                self.c["logs"].delete_log_group(logGroupName=group)
                done.append(Change(spec.name, "log group", group, DELETE))
            pname = r.parameter_name(s, spec.tier)
            if self._parameter(pname) is not None:
                self.c["ssm"].delete_parameter(Name=pname)
                done.append(Change(spec.name, "parameter", pname, DELETE))
            sname = r.secret_name(s, spec.tier)
            if delete_secrets and self._secret_exists(sname):
                self.c["secretsmanager"].delete_secret(SecretId=sname, RecoveryWindowInDays=7)
                done.append(Change(spec.name, "secret", sname, DELETE, "recoverable for 7 days"))
        name = r.accounts_parameter_name(s)
        if self._parameter(name) is not None:
            self.c["ssm"].delete_parameter(Name=name)
            done.append(Change("*", "accounts parameter", name, DELETE))
        if self._dashboard() is not None:
            self.c["cloudwatch"].delete_dashboards(DashboardNames=[s.dashboard])
            done.append(Change("*", "dashboard", s.dashboard, DELETE))
        return done


def clients(region: str) -> dict[str, Any]:
    """boto3 clients of the services a deploy uses, in ``region`` (``AWS_ENDPOINT_URL`` applies).
    botocore's loggers stay at INFO or above (they would log request bodies)."""
    import boto3

    from ops_pipeline.config.loader import quiet_aws_loggers

    quiet_aws_loggers()
    return {name: boto3.client(name, region_name=region)
            for name in ("ssm", "secretsmanager", "logs", "ecs", "scheduler", "cloudwatch")}
