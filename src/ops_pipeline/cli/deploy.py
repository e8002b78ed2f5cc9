"""``ops-pipeline deploy plan|apply|status|rollback|destroy``: the accounts on AWS (docs/deploy-aws.md).

Thin calls into :mod:`ops_pipeline.deploy`. Every command reads the deploy file (``--file``,
default ``./deploy.toml``) and the local configuration (``--config-dir``), validated before AWS is
touched; AWS credentials and endpoint come from the usual boto3 settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError

from ops_pipeline.cli.common import ConfigDir, console, fail, table
from ops_pipeline.deploy import load_deployer
from ops_pipeline.deploy.aws import UNCHANGED, Change, Deployer, DeployError, Plan
from ops_pipeline.errors import ConfigError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Deploy the accounts to AWS: ECS tasks started by EventBridge Scheduler.")

DeployFile = Annotated[Path, typer.Option("--file", "-f", envvar="OPS_PIPELINE_DEPLOY_FILE",
                                          help="The deploy file (see deploy/deploy.example.toml).")]
DEFAULT_DEPLOY_FILE = Path("deploy.toml")


@contextmanager
def aws_errors() -> Iterator[None]:
    """AWS's refusals and unreachable endpoints as one line (exit 1): no credentials, access
    denied, a throttled or failed call."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise fail(f"AWS: {type(exc).__name__}: {exc}", 1) from None


def deployer(deploy_file: Path, config_dir: Path | None) -> Deployer:
    """The deployer, or exit 2 naming every problem of the files."""
    try:
        return load_deployer(deploy_file, config_dir)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _print_changes(changes: list[Change], title: str) -> None:
    t = table(title, "account", "resource", "name", "action", "detail")
    styles = {"create": "green", "update": "yellow", "delete": "red"}
    for c in changes:
        t.add_row(c.account, c.kind, c.name, c.action, c.detail, style=styles.get(c.action))
    console.print(t)


def _summary(plan: Plan, done: bool) -> str:
    pending = plan.pending
    if not pending:
        return "no changes: AWS already matches the deploy file"
    verb = "changed" if done else "to change"
    accounts = plan.accounts_changed()
    return (f"{len(pending)} resource(s) {verb}" + (f"; accounts: {', '.join(accounts)}" if accounts else "")
            + ("" if done else "; run `ops-pipeline deploy apply`"))


@app.command("plan")
def plan(deploy_file: DeployFile = DEFAULT_DEPLOY_FILE, config_dir: ConfigDir = None,
         all_resources: Annotated[bool, typer.Option("--all", help="Also list unchanged resources.")] = False) -> None:
    """What `apply` would change, resource by resource (reads AWS, writes nothing)."""
    d = deployer(deploy_file, config_dir)
    with aws_errors():
        p = d.plan()
        missing_cluster = bool(p.pending) and not d.cluster_exists()
    shown = p.changes if all_resources else p.pending
    if shown:
        _print_changes(shown, f"plan ({deploy_file})")
    console.print(_summary(p, done=False), markup=False)
    if missing_cluster:
        console.print(f"warning: cluster {d.settings.cluster} not found in {d.settings.region}; apply refuses until the "
                      "foundation stack (deploy/foundation.yaml) has created it", style="yellow", markup=False, soft_wrap=True)


@app.command("apply")
def apply(deploy_file: DeployFile = DEFAULT_DEPLOY_FILE, config_dir: ConfigDir = None) -> None:
    """Create or update what the plan shows, and nothing else. A second apply changes nothing.
    Schedules keep their ENABLED/DISABLED state; secrets are created as placeholders, never overwritten."""
    d = deployer(deploy_file, config_dir)
    try:
        with aws_errors():
            p = d.apply()
    except DeployError as exc:
        raise fail(str(exc), 1) from None
    if p.pending:
        _print_changes(p.pending, f"applied ({deploy_file})")
    console.print(_summary(p, done=True), markup=False)
    if any(c.kind == "secret" and c.action != UNCHANGED for c in p.pending):
        console.print("put each account's Alpaca paper keys in its new secret before its first run "
                      "(aws secretsmanager put-secret-value --secret-id NAME --secret-string file://keys.json)", markup=False)


@app.command("status")
def status(deploy_file: DeployFile = DEFAULT_DEPLOY_FILE, config_dir: ConfigDir = None) -> None:
    """Each account's schedule (state, expression), the task definition revision it starts and its
    image, the newest revision, the last task and the last log line's time."""
    d = deployer(deploy_file, config_dir)
    t = table(f"accounts on AWS ({d.settings.region}, cluster {d.settings.cluster})", "account", "schedule", "state",
              "expression", ("revision", True), ("newest", True), "image", "last task", "last log (UTC)")
    with aws_errors():
        rows = d.status()
    for row in rows:
        t.add_row(row.account, row.schedule, row.state or "not deployed", row.expression or "-",
                  str(row.revision or "-"), str(row.latest_revision or "-"), row.image or "-", row.last_task or "-",
                  f"{row.last_log_at:%Y-%m-%d %H:%M:%S}" if row.last_log_at else "-")
    console.print(t)


@app.command("rollback")
def rollback(
    name: Annotated[str | None, typer.Argument(help="The account (or --all).")] = None,
    all_accounts: Annotated[bool, typer.Option("--all", help="Every account.")] = False,
    to: Annotated[int | None, typer.Option("--to", min=1, help="This revision (default: the previous one).")] = None,
    deploy_file: DeployFile = DEFAULT_DEPLOY_FILE, config_dir: ConfigDir = None,
) -> None:
    """Point schedules back at an earlier task definition revision (seed 000 "Rollback Plan").
    The next `apply` points them at the deploy file's image again: change the file first."""
    if all_accounts == (name is not None):
        raise fail("give an account NAME or --all")
    d = deployer(deploy_file, config_dir)

    def one(account: str) -> str:
        before, after = d.rollback(account, to)
        return f"{account}: schedule now starts revision {after} (was {before})"

    with aws_errors():
        for_each_account(d, None if all_accounts else [name], one)


def for_each_account(d: Deployer, names: list[str] | None, action: Callable[[str], str]) -> None:
    """``action(account)`` for each of ``names`` (``None``: every account), printing what it returns;
    an account AWS refuses is said in red and the others go on.

    Raises:
        typer.Exit: an unknown account (exit 2, before anything is done) or a refused one (exit 1, at the end).
    """
    known = [s.name for s in d.specs]
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise fail(f"no account {', '.join(map(repr, unknown))}; accounts: {', '.join(known)}")
    failed = False
    for account in names or known:
        try:
            console.print(action(account), markup=False, soft_wrap=True)
        except DeployError as exc:
            console.print(f"error: {exc}", style="red", markup=False, soft_wrap=True)
            failed = True
    if failed:
        raise typer.Exit(1)


@app.command("destroy")
def destroy(
    deploy_file: DeployFile = DEFAULT_DEPLOY_FILE, config_dir: ConfigDir = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    delete_secrets: Annotated[bool, typer.Option("--delete-secrets", help="Also delete the accounts' secrets "
                                                 "(recoverable for 7 days).")] = False,
) -> None:
    """Delete the schedules (nothing starts any more), task definitions, log groups, parameters and
    the dashboard. Secrets stay unless --delete-secrets. Asks for the cluster's name first."""
    d = deployer(deploy_file, config_dir)
    if not yes:
        typed = typer.prompt(f"this deletes every account's schedule, task definitions, logs and parameters in "
                             f"{d.settings.region}; type the cluster name ({d.settings.cluster}) to go on")
        if typed.strip() != d.settings.cluster:
            raise fail("not confirmed; nothing deleted", 1)
    with aws_errors():
        done = d.destroy(delete_secrets=delete_secrets)
    if done:
        _print_changes(done, f"destroyed at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    console.print(f"{len(done)} resource(s) deleted", markup=False)
