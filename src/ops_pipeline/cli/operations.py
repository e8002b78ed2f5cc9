"""Operating the accounts (seed 002): ``accounts enable|disable|pause|resume|pause-all|resume-all``,
``kill``, ``status``, ``health``, ``logs``. Thin calls into
:mod:`ops_pipeline.services.account_states` and :mod:`ops_pipeline.services.operations`."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ops_pipeline import logs
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.bootstrap import build_live_account, live_market, register_accounts
from ops_pipeline.cli.admin import accounts_app
from ops_pipeline.cli.common import (
    ConfigDir,
    DatabaseUrl,
    console,
    default_database,
    fail,
    logs_dir,
    open_database,
    setup_logging,
    table,
)
from ops_pipeline.cli.deploy import DEFAULT_DEPLOY_FILE, DeployFile, aws_errors, deployer, for_each_account
from ops_pipeline.cli.start import selected_configs
from ops_pipeline.clock import SystemClock
from ops_pipeline.config.loader import ConfigSource, account_spec
from ops_pipeline.deploy.aws import DeployError
from ops_pipeline.domain.gates import MINUS
from ops_pipeline.domain.states import StateCommand
from ops_pipeline.domain.values import EXCHANGE_TZ, AccountState, ExecutionMode
from ops_pipeline.errors import BrokerError, ConfigError, MarketDataError
from ops_pipeline.services.account_states import StateChange, change_states, operator
from ops_pipeline.services.operations import AccountStatus, account_statuses
from ops_pipeline.services.runner import AccountRunner

EXIT_REFUSED = 1
EXIT_STALE = 1
FLATTEN_LOCK_WAIT_SECS = 30.0


class TargetChoice(str, Enum):
    local = "local"
    aws = "aws"


Target = Annotated[TargetChoice, typer.Option(
    "--target", help="local: the accounts' state in the database; aws: their EventBridge schedules "
                     "(ENABLED/DISABLED, seed 002) from the deploy file.")]
By = Annotated[str | None, typer.Option("--by", help="Who makes the change (default: user@host).")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept with the change).")]
log = logging.getLogger("ops_pipeline.cli")


def _apply(command: StateCommand, names: list[str] | None, database_url: str | None, config_dir: Path | None,
           by: str | None, reason: str, *, flatten: bool = False, only_from: AccountState | None = None) -> list[StateChange]:
    db = open_database(database_url, default=default_database(), migrate=True)
    source = ConfigSource.from_settings(config_dir=config_dir)
    try:
        register_accounts(db, source)
        changes = change_states(db, command, names, by=by or operator(), reason=reason, now=SystemClock().now(),
                                flatten=flatten, only_from=only_from)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    for change in changes:
        console.print(change.describe(), markup=False, soft_wrap=True, style="yellow" if change.outcome == "refused" else None)
    if changes and any(c.outcome == "changed" for c in changes):
        console.print("takes effect at each account's next run", markup=False)
    return changes


def _schedules(names: list[str] | None, enabled: bool, deploy_file: Path, config_dir: Path | None) -> None:
    """Set the schedules of ``names`` (``None``: every account) ENABLED or DISABLED on AWS.

    Raises:
        typer.Exit: an unknown account (exit 2) or an account without a schedule (exit 1).
    """
    d = deployer(deploy_file, config_dir)

    def one(account: str) -> str:
        before, after = d.set_state(account, enabled)
        return f"{account}: schedule " + ("already " + after if before == after else f"{before} → {after}")

    with aws_errors():
        for_each_account(d, names, one)


def _one(command: StateCommand) -> Any:
    on_aws = command in (StateCommand.ENABLE, StateCommand.DISABLE)

    def handler(name: Annotated[str, typer.Argument(help="The account.")], database_url: DatabaseUrl = None,
                config_dir: ConfigDir = None, by: By = None, reason: Reason = "",
                target: Target = TargetChoice.local, deploy_file: DeployFile = DEFAULT_DEPLOY_FILE) -> None:
        if target is TargetChoice.aws:
            if not on_aws:
                raise fail(f"{command.value} is a state in the database (no schedule expresses it); "
                           "give --database-url of the AWS database without --target aws")
            _schedules([name], command is StateCommand.ENABLE, deploy_file, config_dir)
            return
        changes = _apply(command, [name], database_url, config_dir, by, reason)
        if any(c.outcome == "refused" for c in changes):
            raise typer.Exit(EXIT_REFUSED)

    handler.__doc__ = {
        StateCommand.ENABLE: "Run a disabled account again (seed 002 \"Start tiny account\").",
        StateCommand.DISABLE: "Stop running an account at all: no runs, positions not managed (seed 002 \"Stop tiny account\").",
        StateCommand.PAUSE: "No new entries; the position manager still exits positions.",
        StateCommand.RESUME: "Trade again after a pause or an emergency stop (kill).",
    }[command]
    return handler


for _command in (StateCommand.ENABLE, StateCommand.DISABLE, StateCommand.PAUSE, StateCommand.RESUME):
    accounts_app.command(_command.value)(_one(_command))


@accounts_app.command("pause-all")
def pause_all(database_url: DatabaseUrl = None, config_dir: ConfigDir = None, by: By = None, reason: Reason = "",
              target: Target = TargetChoice.local, deploy_file: DeployFile = DEFAULT_DEPLOY_FILE) -> None:
    """Pause every account (seed 002 "Pause all"); disabled and killed accounts are left as they are.
    --target aws: every schedule DISABLED, as the seed's loop of `aws scheduler update-schedule` did."""
    if target is TargetChoice.aws:
        _schedules(None, False, deploy_file, config_dir)
        return
    _apply(StateCommand.PAUSE, None, database_url, config_dir, by, reason, only_from=AccountState.ENABLED)


@accounts_app.command("resume-all")
def resume_all(database_url: DatabaseUrl = None, config_dir: ConfigDir = None, by: By = None, reason: Reason = "",
               target: Target = TargetChoice.local, deploy_file: DeployFile = DEFAULT_DEPLOY_FILE) -> None:
    """Resume every paused account (seed 002 "Resume all"). A killed account is resumed by name only.
    --target aws: every schedule ENABLED (a killed account's runs still refuse entries: the kill is in
    the database)."""
    if target is TargetChoice.aws:
        _schedules(None, True, deploy_file, config_dir)
        return
    _apply(StateCommand.RESUME, None, database_url, config_dir, by, reason, only_from=AccountState.PAUSED)


def kill(
    name: Annotated[str | None, typer.Argument(help="The account (or --all).")] = None,
    all_accounts: Annotated[bool, typer.Option("--all", help="Every account.")] = False,
    flatten: Annotated[bool, typer.Option("--flatten", help="Also sell every held position at the bid.")] = False,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
    by: By = None,
    reason: Reason = "",
    target: Target = TargetChoice.local,
    deploy_file: DeployFile = DEFAULT_DEPLOY_FILE,
) -> None:
    """Emergency stop (seed 002): no new order from the account's next run on, until `accounts resume NAME`.

    With --flatten the position manager also sells every position the account holds, at the bid,
    through the broker: at once (a position-manager run per account, now, when EXECUTION_MODE=ALPACA_PAPER)
    and at every later run while the account stays killed.

    --target aws also disables the accounts' schedules (seed 002 "Emergency Stop Single Account"), first,
    so no task starts; the kill is recorded in the database given by --database-url (the AWS one), if any.
    """
    if all_accounts == (name is not None):
        raise fail("give an account NAME or --all")
    if target is TargetChoice.aws:
        _schedules(None if all_accounts else [name], False, deploy_file, config_dir)
        if database_url is None:
            console.print("schedules disabled; the database's state is unchanged (give --database-url to record the "
                          "kill there too" + (", and to flatten" if flatten else "") + ")", markup=False, soft_wrap=True)
            if flatten:
                raise typer.Exit(EXIT_REFUSED)
            return
        if flatten:
            console.print("schedules are disabled: positions this command cannot sell now stay open until a run "
                          "(`ops-pipeline run` or an enabled schedule) sells them", markup=False, soft_wrap=True)
    changes = _apply(StateCommand.KILL, None if all_accounts else [name], database_url, config_dir, by, reason,
                     flatten=flatten)
    if not flatten:
        return
    source = ConfigSource.from_settings(config_dir=config_dir)
    if source.execution_mode is not ExecutionMode.ALPACA_PAPER:
        console.print("positions are sold at each account's next run", markup=False)
        return
    setup_logging(logs_dir() / "operations.log")
    db = open_database(database_url, default=default_database(), migrate=True)
    failed = False
    for change in changes:
        try:
            runtime = build_live_account(db=db, account_name=change.account_name, source=source)
        except (ConfigError, BrokerError, MarketDataError) as exc:
            console.print(f"{change.account_name}: not flattened now ({exc}); its next run sells", markup=False, soft_wrap=True)
            failed = True
            continue
        result = AccountRunner(db, runtime, lock_wait_secs=FLATTEN_LOCK_WAIT_SECS).run_once(dispatch=False)
        closed = sum((result.manage.closed or {}).values()) if result.manage else 0
        left = result.manage.open if result.manage else "?"
        console.print(f"{change.account_name}: {result.status}; {closed} position(s) sold, {left} still open"
                      + (f"; {result.error}" if result.error else ""), markup=False, soft_wrap=True)
        failed |= not result.ok
    if failed:
        raise typer.Exit(EXIT_REFUSED)


def _market_now(source: ConfigSource, names: list[str]) -> tuple[dt.datetime, str]:
    """The broker's clock (market time at a paper exchange), else the wall clock; and which it was."""
    if source.execution_mode is ExecutionMode.ALPACA_PAPER and names:
        try:
            clock, _ = live_market(source, names[0])
            return clock.now(), "broker clock"
        except (ConfigError, BrokerError, MarketDataError) as exc:
            console.print(f"broker clock unavailable ({exc}); judged by the wall clock", markup=False, soft_wrap=True,
                          style="yellow")
    return SystemClock().now(), "wall clock"


def _statuses(database_url: str | None, config_dir: Path | None, accounts: str | None) -> tuple[list[AccountStatus], dt.datetime, str]:
    source = ConfigSource.from_settings(config_dir=config_dir)
    configs = selected_configs(source, accounts)
    db = open_database(database_url, default=default_database(), migrate=True)
    now, which = _market_now(source, [c.name for c in configs])
    return account_statuses(db, configs, now, TradingCalendar()), now, which


def _money(value: Any) -> str:
    return f"{MINUS}${abs(value):,.2f}" if value < 0 else f"${value:,.2f}"


def _et(ts: dt.datetime | None) -> str:
    return f"{ts.astimezone(EXCHANGE_TZ):%m-%d %H:%M} ET" if ts else "-"


def _short_credentials(r: AccountStatus) -> str:
    """``key …0001 from ops-pipeline/alpaca/large``: the masked key and the secret it came from
    (the run's full label also names the version and where the store found it)."""
    if not r.credentials:
        return "-"
    return r.credentials.split(" (")[0].removeprefix(f"account {r.name}, ")


def status(database_url: DatabaseUrl = None, config_dir: ConfigDir = None,
           accounts: Annotated[str | None, typer.Option("--accounts", help="Comma-separated accounts.")] = None) -> None:
    """One row per account: state, tier, schedule, last run, positions and exposure against their limits,
    today's P&L against the daily loss limit, halted or not, the credentials in use (masked)."""
    rows, now, which = _statuses(database_url, config_dir, accounts)
    t = table(f"accounts at {now.astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M:%S} ET ({which})", "account", "state", "tier",
              "schedule", "last run", ("positions", True), ("exposure", True), ("P&L today / max loss", True), "halted",
              "health", "credentials")
    for r in rows:
        state = r.state + (" + flatten" if r.flatten else "")
        last = "never" if r.last_run_at is None else (
            f"{_et(r.last_run_at)} {r.last_run_status}" + (f" {r.last_run_secs:.2f}s" if r.last_run_secs is not None else ""))
        t.add_row(r.name, state, r.tier, r.schedule, last, f"{r.open_positions}/{r.max_positions}",
                  f"${r.exposure:,.0f}/${r.max_exposure:,.0f}", f"{_money(r.pnl_today)} / {MINUS}${r.max_daily_loss:,.0f}",
                  f"yes {_et(r.halted_at)}" if r.halted_at else "no", r.health, _short_credentials(r))
    console.print(t)


def health(database_url: DatabaseUrl = None, config_dir: ConfigDir = None,
           accounts: Annotated[str | None, typer.Option("--accounts", help="Comma-separated accounts.")] = None) -> None:
    """Seed 002 "Account Health Check", judged from runs (not trades): active (a run within 15 market
    minutes), slow (within an hour), stale. Exits 1 when an account that should run is stale."""
    rows, now, which = _statuses(database_url, config_dir, accounts)
    t = table(f"health at {now.astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M} ET ({which})", "account", "state", "last run",
              ("market minutes since", True), "status")
    icons = {"active": "✅ Active", "slow": "⚠️ Slow", "stale": "❌ Stale", "disabled": "disabled"}
    for r in rows:
        t.add_row(r.name, r.state, _et(r.last_run_at), "-" if r.minutes_since_run is None else str(r.minutes_since_run),
                  icons[r.health])
    console.print(t)
    if any(r.health == "stale" for r in rows):
        raise typer.Exit(EXIT_STALE)


SINCE = re.compile(r"^(\d+)([smhd])$")
LINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)|\"time\": \"([^\"]+)\"")


def _since(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    match = SINCE.match(text.strip())
    if not match:
        raise fail(f"--since must look like 30s, 5m, 2h or 1d, not {text!r}")
    n, unit = int(match.group(1)), match.group(2)
    return dt.datetime.now() - dt.timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def _line_time(line: str) -> dt.datetime | None:
    match = LINE_TIME.search(line)
    if not match:
        return None
    if match.group(1):
        return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return dt.datetime.fromisoformat(match.group(2)).astimezone().replace(tzinfo=None)


def log_file_for(name: str, config_dir: Path | None) -> Path:
    """The log of an account (seed 002 "Separate Log Groups"), or of ``supervisor`` / ``signals``.

    Raises:
        typer.Exit: an unknown name (exit 2).
    """
    if name in ("supervisor", "signals", "operations"):
        return logs_dir() / f"{name}.log"
    try:
        spec = account_spec(ConfigSource.from_settings(config_dir=config_dir).accounts_file, name)
    except ConfigError as exc:
        raise fail(f"{exc} (or supervisor, signals, operations)") from None
    return logs.account_log_file(logs_dir(), spec.tier.value)


def show_logs(
    name: Annotated[str, typer.Argument(help="An account, or supervisor / signals.")],
    since: Annotated[str | None, typer.Option("--since", help="Only lines of the last 30s, 5m, 2h, 1d.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")] = False,
    grep: Annotated[str | None, typer.Option("--grep", help="Only lines containing this text.")] = None,
    config_dir: ConfigDir = None,
    target: Target = TargetChoice.local,
    deploy_file: DeployFile = DEFAULT_DEPLOY_FILE,
) -> None:
    """An account's log (.ops-pipeline/logs/dispatcher-{tier}.log; large: dispatcher.log), rotated files included.
    --target aws: its CloudWatch log group (/ecs/ops-pipeline/dispatcher-{tier}; large: /ecs/ops-pipeline/dispatcher)."""
    start = _since(since)
    if target is TargetChoice.aws:
        _aws_logs(name, start, grep, follow, deploy_file, config_dir)
        return
    path = log_file_for(name, config_dir)
    files = [p for p in (Path(f"{path}.{i}") for i in range(logs.BACKUPS, 0, -1)) if p.exists()]
    if path.exists():
        files.append(path)
    if not files and not follow:
        raise fail(f"no log yet at {path}")

    def keep(line: str) -> bool:
        if grep is not None and grep not in line:
            return False
        if start is not None:
            at = _line_time(line)
            return at is None or at >= start
        return True

    for f in files:
        with f.open(encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if keep(line):
                    console.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
    if not follow:
        return
    position = path.stat().st_size if path.exists() else 0
    inode = path.stat().st_ino if path.exists() else None
    try:
        while True:
            time.sleep(0.5)
            if not path.exists():
                continue
            stat = path.stat()
            if stat.st_ino != inode or stat.st_size < position:
                position, inode = 0, stat.st_ino
            if stat.st_size > position:
                with path.open(encoding="utf-8", errors="replace") as stream:
                    stream.seek(position)
                    for line in stream:
                        if keep(line):
                            console.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
                    position = stream.tell()
    except KeyboardInterrupt:
        return



AWS_FOLLOW_SECS = 2.0


def _aws_logs(name: str, start: dt.datetime | None, grep: str | None, follow: bool, deploy_file: Path,
              config_dir: Path | None) -> None:
    """Print the account's CloudWatch log events (``aws logs tail`` of seed 002), oldest first;
    with ``follow``, poll for new ones until Ctrl-C."""
    d = deployer(deploy_file, config_dir)
    if name not in [s.name for s in d.specs]:
        raise fail(f"no account {name!r}; accounts: {', '.join(s.name for s in d.specs)}")
    since = start.astimezone(dt.UTC) if start is not None else None
    seen: set[str] = set()
    newest: int | None = None
    try:
        while True:
            try:
                with aws_errors():
                    events = d.log_events(name, since, grep, next_start=newest)
            except DeployError as exc:
                raise fail(str(exc), EXIT_REFUSED) from None
            for event in events:
                if event.get("eventId") in seen:
                    continue
                seen.add(event.get("eventId", ""))
                newest = max(newest or 0, event["timestamp"])
                at = dt.datetime.fromtimestamp(event["timestamp"] / 1000, tz=dt.UTC)
                console.print(f"{at:%Y-%m-%d %H:%M:%S} {event.get('logStreamName', '')} {event['message'].rstrip()}",
                              markup=False, highlight=False, soft_wrap=True)
            if not follow:
                return
            time.sleep(AWS_FOLLOW_SECS)
    except KeyboardInterrupt:
        return
