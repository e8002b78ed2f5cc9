"""The files that go to AWS as they are: the foundation template (cfn-lint, and each task role
reading only its own account's parameter and secret), the Dockerfile and its build context, and
the schedule expressions."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode

from ops_pipeline.config.models import Schedule
from ops_pipeline.deploy.resources import schedule_expression
from ops_pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "foundation.yaml"
TIERS = ("tiny", "small", "medium", "large")


def test_the_foundation_template_passes_cfn_lint():
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _resources_of(statement: dict) -> list[str]:
    resources = statement["Resource"]
    resources = resources if isinstance(resources, list) else [resources]
    return [json.dumps(r) for r in resources]


def test_each_task_role_reads_only_its_own_parameter_and_secret():
    template, problems = decode(str(TEMPLATE))
    assert not problems
    for tier in TIERS:
        role = template["Resources"][f"TaskRole{tier.capitalize()}"]["Properties"]
        assert role["RoleName"] == f"ops-pipeline-task-{tier}"
        statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
        others = [t for t in TIERS if t != tier]
        for statement in statements:
            text = " ".join(_resources_of(statement))
            assert not any(f"_{o}" in text or f"/{o}-" in text for o in others), (tier, text)
        secret = next(s for s in statements if s["Action"] == "secretsmanager:GetSecretValue")
        assert _resources_of(secret)[0].endswith(f'${{SecretPrefix}}/{tier}-*"}}')
        params = next(s for s in statements if s["Action"] == "ssm:GetParameter")
        names = sorted(r.rsplit("/", 1)[1].rstrip('"}') for r in _resources_of(params))
        assert names == ["accounts", "dispatcher_config", f"dispatcher_config_{tier}"]
        assert not any("ssm:*" in json.dumps(s["Action"]) or s["Action"] == "*" for s in statements)


def test_the_scheduler_may_only_start_dispatcher_tasks_in_the_cluster():
    template, _ = decode(str(TEMPLATE))
    statements = template["Resources"]["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    run = next(s for s in statements if s["Action"] == "ecs:RunTask")
    assert "task-definition/ops-pipeline-dispatcher-*" in json.dumps(run["Resource"])
    assert run["Condition"]["ArnEquals"]["ecs:cluster"] == {"Fn::GetAtt": ["Cluster", "Arn"]}
    passed = next(s for s in statements if s["Action"] == "iam:PassRole")
    assert passed["Condition"]["StringEquals"]["iam:PassedToService"] == "ecs-tasks.amazonaws.com"


DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_the_dockerfile_is_pinned_slim_non_root_and_runs_the_task_entry_point():
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert bases and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", b) for b in bases), bases
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert json.loads(re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.M).group(1)) == ["ops-pipeline"]
    assert json.loads(re.search(r"^CMD (.+)$", DOCKERFILE, re.M).group(1)) == ["run"]
    declared = re.findall(r"^(?:ENV|ARG)\s+(.*)$", DOCKERFILE, re.M) + re.findall(r"^\s+(\w+)=", DOCKERFILE, re.M)
    assert not any(re.search(r"KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL", d, re.I) for d in declared)
    assert "pip install ." in DOCKERFILE


def _in_build_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path (or a parent) decides."""
    included = True
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) or
               fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat.replace("**/", "")) and pat.startswith("**/") for p in prefixes):
            included = negated
    return included


def test_the_build_context_holds_the_package_and_nothing_local_or_secret():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    context = [p for p in tracked if _in_build_context(p, patterns)]
    assert "pyproject.toml" in context and "README.md" in context
    assert "src/ops_pipeline/config/defaults/accounts.toml" in context and "src/ops_pipeline/cli/run.py" in context
    assert not any(p.startswith(("tests/", "docs/", "benchmarks/", "deploy/", ".ci/")) for p in context)
    for local in (".ops-pipeline/ops-pipeline.db", "secrets.json", ".env", "src/x/__pycache__/a.pyc", "deploy.toml",
                  ".venv/bin/python"):
        assert not _in_build_context(local, patterns), local


@pytest.mark.parametrize(("every", "offset", "expression"), [
    (1, 0, "cron(* 9-15 ? * MON-FRI *)"), (5, 0, "cron(0/5 9-15 ? * MON-FRI *)"),
    (5, 2, "cron(2/5 9-15 ? * MON-FRI *)"), (15, 7, "cron(7/15 9-15 ? * MON-FRI *)")])
def test_schedule_expressions_fire_at_the_local_schedulers_minutes(every, offset, expression):
    schedule = Schedule(every_minutes=every, offset_minutes=offset)
    assert schedule_expression(schedule) == expression
    # the cron's minutes within an hour are exactly the minutes the local scheduler fires at
    start, step = (0, 1) if every == 1 else (offset, every)
    assert [m for m in range(60) if schedule.fires_at(10 * 60 + m)] == list(range(start, 60, step))


def test_a_period_that_does_not_divide_the_hour_is_refused():
    with pytest.raises(ConfigError, match="divisor of 60"):
        schedule_expression(Schedule(every_minutes=7, offset_minutes=0))


def test_the_example_deploy_file_is_valid_for_the_shipped_accounts():
    from ops_pipeline.config.loader import default_config_dir, load_accounts
    from ops_pipeline.deploy.settings import load_deploy_file

    names = [s.name for s in load_accounts(default_config_dir() / "accounts.toml")]
    settings = load_deploy_file(ROOT / "deploy" / "deploy.example.toml", names)
    assert settings.image_for("tiny-1k").endswith("/ops-pipeline:v0.1.0")
    assert settings.cluster_arn == "arn:aws:ecs:us-west-2:123456789012:cluster/ops-pipeline-cluster"
