"""``ops-pipeline run``: one account on Alpaca paper (or a paper exchange), once or on its schedule.

Also the entry point of the ECS task (``deploy/``, docs/deploy-aws.md): the image runs
``ops-pipeline run`` with the environment its task definition declares, as the seeds' did —
``ACCOUNT_TIER`` names the account (the one account of that tier), ``RUN_MODE=ONCE|LOOP``,
``EXECUTION_MODE=ALPACA_PAPER``; ``OPS_PIPELINE_LOG_TO=stdout`` for the ``awslogs`` driver;
``OPS_PIPELINE_METRICS=cloudwatch`` publishes the run's metrics; ``OPS_PIPELINE_MARKET_HOURS_ONLY``
makes a run started while the market is closed (the cron's 9:00–9:30, holidays) do nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ops_pipeline import logs
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.bootstrap import AccountRuntime, build_live_account
from ops_pipeline.cli.common import (
    ConfigDir,
    DatabaseUrl,
    LogFormat,
    LogFormatChoice,
    console,
    default_database,
    fail,
    logs_dir,
    open_database,
    setup_logging,
)
from ops_pipeline.config.loader import (
    ConfigSource,
    boto3_client,
    load_accounts,
    parse_tier,
)
from ops_pipeline.config.models import AccountSpec
from ops_pipeline.errors import BrokerError, ConfigError, MarketDataError
from ops_pipeline.services.cloudwatch import CloudWatchMetrics, RunMetrics
from ops_pipeline.services.runner import AccountRunner, AccountRunResult
from ops_pipeline.services.schedule import MarketTimer, wait_for_next_run

EXIT_ERROR = 1
EXIT_BUSY = 3
RETRY_AFTER_FAILURE_SECS = 60.0
RUN_MODES = ("ONCE", "LOOP")
log = logging.getLogger("ops_pipeline.cli")


class LogTo(str, Enum):
    file = "file"
    stdout = "stdout"


class MetricsSink(str, Enum):
    none = "none"
    cloudwatch = "cloudwatch"


def run_account(
    account: Annotated[str | None, typer.Option(
        "--account", envvar="OPS_PIPELINE_ACCOUNT",
        help="The account to run (accounts.toml); default: the one account of tier ACCOUNT_TIER.")] = None,
    once: Annotated[bool, typer.Option("--once", help="One position-manager and dispatcher run, then exit "
                                       "(default: RUN_MODE=ONCE; RUN_MODE=LOOP or unset: the loop).")] = False,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
    lock_wait: Annotated[float, typer.Option("--lock-wait", min=0,
                                             help="Seconds to wait for a run of the same account to finish.")] = 5.0,
    log_format: LogFormat = LogFormatChoice.text,
    log_to: Annotated[LogTo, typer.Option("--log-to", envvar="OPS_PIPELINE_LOG_TO",
                                          help="file: .ops-pipeline/logs/; stdout: for a container's log driver.")] = LogTo.file,
    metrics: Annotated[MetricsSink, typer.Option("--metrics", envvar="OPS_PIPELINE_METRICS",
                                                 help="cloudwatch: publish the run's metrics (namespace OpsPipeline).")]
    = MetricsSink.none,
    market_hours_only: Annotated[bool, typer.Option(
        "--market-hours-only", envvar="OPS_PIPELINE_MARKET_HOURS_ONLY",
        help="With --once: do nothing (exit 0) when the broker's clock says the market is closed.")] = False,
) -> None:
    """Run one account on Alpaca paper (EXECUTION_MODE=ALPACA_PAPER; OPS_PIPELINE_ALPACA_BASE_URL and
    OPS_PIPELINE_ALPACA_DATA_URL point it at a paper exchange): the position manager, then the
    dispatcher, once or on the account's schedule (parameters and credentials re-read every run).

    One run of an account at a time: another run of the same account waits up to --lock-wait
    seconds, then exits 3 saying so. --once exits 0 when the run succeeded and 1 when it ended on
    an error (recorded in the database and the log). The loop goes on after errors and runs at the
    account's minutes of the broker's market clock (open hours only; a paper exchange at --speed 60
    is followed at its speed).
    """
    once = once or _run_mode_once()
    source = _source(config_dir)
    spec = _account(source, account)
    if log_to is LogTo.stdout:
        logs.configure(None, logs.stream_handler(sys.stdout, log_format=log_format.value), log_format=log_format.value)
    else:
        setup_logging(logs.account_log_file(logs_dir(), spec.tier.value), log_format.value)
    db = open_database(database_url, default=default_database(), migrate=True)
    try:
        runtime = build_live_account(db=db, account_name=spec.name, source=source)
    except (ConfigError, BrokerError, MarketDataError) as exc:
        raise fail(str(exc)) from None
    runner = AccountRunner(db, runtime, lock_wait_secs=lock_wait)
    schedule = runtime.config.account.schedule
    timer, calendar = MarketTimer(runtime.dispatcher.clock), TradingCalendar()
    if once and market_hours_only:
        _exit_if_closed(runtime, calendar)
    published = (RunMetrics(db, CloudWatchMetrics(boto3_client("cloudwatch")), calendar)
                 if metrics is MetricsSink.cloudwatch else None)
    calibrated = once
    while True:
        if published is not None:
            published.before(runner.runtime.config)
        try:
            result = runner.run_once()
        except Exception as exc:  # noqa: BLE001 - a bug or a database failure: recorded, the loop goes on
            log.exception("[%s] run failed unexpectedly", spec.name)
            result = AccountRunResult(spec.name, "error", error=f"{type(exc).__name__}: {exc}")
        _print(result)
        if published is not None and result.status not in ("busy", "disabled"):
            published.after(runner.runtime.config, result.at)
        if once:
            raise typer.Exit(0 if result.status in ("ok", "disabled") else EXIT_BUSY if result.status == "busy" else EXIT_ERROR)
        try:
            if not calibrated:  # how fast the broker's market time runs (a paper exchange may run at 60x)
                timer.calibrate()
                calibrated = True
            wait_for_next_run(timer, schedule, calendar)
        except (BrokerError, MarketDataError) as exc:
            log.error("[%s] market clock unavailable (%s); next try in %.0fs", spec.name, exc, RETRY_AFTER_FAILURE_SECS)
            time.sleep(RETRY_AFTER_FAILURE_SECS)


def _source(config_dir: Path | None) -> ConfigSource:
    try:
        return ConfigSource.from_settings(config_dir=config_dir)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _run_mode_once() -> bool:
    """``RUN_MODE`` (seed 000's task definitions): ``ONCE`` → True, ``LOOP`` or unset → False.

    Raises:
        typer.Exit: another value (exit 2).
    """
    mode = os.environ.get("RUN_MODE", "").strip().upper()
    if mode and mode not in RUN_MODES:
        raise fail(f"RUN_MODE must be ONCE or LOOP, not {os.environ['RUN_MODE']!r}")
    return mode == "ONCE"


def _account(source: ConfigSource, name: str | None) -> AccountSpec:
    """The account named ``name``, else the one account of tier ``ACCOUNT_TIER`` (the ECS task's way).

    Raises:
        typer.Exit: no such account, no name and no ``ACCOUNT_TIER``, an unknown tier, or a tier
            with no account or several (exit 2; the accounts are named).
    """
    try:
        specs = load_accounts(source.accounts_file)
        if name is not None:
            by_name = {s.name: s for s in specs}
            if name not in by_name:
                raise ConfigError(f"no account {name!r}; accounts: {', '.join(by_name)}")
            return by_name[name]
        tier_text = os.environ.get("ACCOUNT_TIER")
        if not tier_text:
            raise ConfigError("give --account NAME (or set ACCOUNT_TIER, as an ECS task does)")
        tier = parse_tier(tier_text.strip().lower())
        of_tier = [s for s in specs if s.tier is tier]
        if len(of_tier) != 1:
            raise ConfigError(f"ACCOUNT_TIER={tier.value} names {len(of_tier)} accounts "
                              f"({', '.join(s.name for s in of_tier) or 'none'}); give --account NAME")
        return of_tier[0]
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _exit_if_closed(runtime: AccountRuntime, calendar: TradingCalendar) -> None:
    """Exit 0 saying so when the broker's clock is outside regular hours (exit 1 when it cannot be read)."""
    try:
        now = runtime.dispatcher.clock.now()
    except (BrokerError, MarketDataError) as exc:
        raise fail(f"market clock unavailable: {exc}", EXIT_ERROR) from None
    if not calendar.is_open(now):
        console.print(f"{now:%Y-%m-%d %H:%M:%S} UTC {runtime.config.name}: market closed; nothing to do", markup=False)
        log.info("[%s] market closed at %s; nothing to do", runtime.config.name, now.isoformat())
        raise typer.Exit(0)


def _print(result: AccountRunResult) -> None:
    when = f"{result.at:%Y-%m-%d %H:%M:%S} UTC " if result.at else ""
    if result.status in ("busy", "disabled"):
        console.print(f"{when}{result.account_name}: {result.error}", markup=False, soft_wrap=True)
        return
    line = (f"{when}{result.account_name}: {result.status}; positions {result.manage.as_dict() if result.manage else '-'}; "
            f"dispatch {result.dispatch.as_dict() if result.dispatch else '-'}")
    if result.abandoned:
        line += f"; {result.abandoned} abandoned run(s) of a dead process released"
    if result.error:
        line += f"; error: {result.error}"
    console.print(line, markup=False, soft_wrap=True, style="red" if result.status == "error" else None)
