"""``ops-pipeline run``: one account on Alpaca paper (or a paper exchange), once or on its schedule."""

from __future__ import annotations

import logging
import time
from typing import Annotated

import typer

from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.bootstrap import build_live_account
from ops_pipeline import logs
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
from ops_pipeline.config.loader import ConfigSource, account_spec
from ops_pipeline.errors import BrokerError, ConfigError, MarketDataError
from ops_pipeline.services.runner import AccountRunner, AccountRunResult
from ops_pipeline.services.schedule import MarketTimer, wait_for_next_run

EXIT_ERROR = 1
EXIT_BUSY = 3
RETRY_AFTER_FAILURE_SECS = 60.0
log = logging.getLogger("ops_pipeline.cli")


def run_account(
    account: Annotated[str, typer.Option("--account", help="The account to run (accounts.toml).")],
    once: Annotated[bool, typer.Option("--once", help="One position-manager and dispatcher run, then exit.")] = False,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
    lock_wait: Annotated[float, typer.Option("--lock-wait", min=0,
                                             help="Seconds to wait for a run of the same account to finish.")] = 5.0,
    log_format: LogFormat = LogFormatChoice.text,
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
    source = ConfigSource.from_settings(config_dir=config_dir)
    setup_logging(logs.account_log_file(logs_dir(), _tier(source, account)), log_format.value)
    db = open_database(database_url, default=default_database(), migrate=True)
    try:
        runtime = build_live_account(db=db, account_name=account, source=source)
    except (ConfigError, BrokerError, MarketDataError) as exc:
        raise fail(str(exc)) from None
    runner = AccountRunner(db, runtime, lock_wait_secs=lock_wait)
    schedule = runtime.config.account.schedule
    timer, calendar = MarketTimer(runtime.dispatcher.clock), TradingCalendar()
    calibrated = once
    while True:
        try:
            result = runner.run_once()
        except Exception as exc:  # noqa: BLE001 - a bug or a database failure: recorded, the loop goes on
            log.exception("[%s] run failed unexpectedly", account)
            result = AccountRunResult(account, "error", error=f"{type(exc).__name__}: {exc}")
        _print(result)
        if once:
            raise typer.Exit(0 if result.status in ("ok", "disabled") else EXIT_BUSY if result.status == "busy" else EXIT_ERROR)
        try:
            if not calibrated:  # how fast the broker's market time runs (a paper exchange may run at 60x)
                timer.calibrate()
                calibrated = True
            wait_for_next_run(timer, schedule, calendar)
        except (BrokerError, MarketDataError) as exc:
            log.error("[%s] market clock unavailable (%s); next try in %.0fs", account, exc, RETRY_AFTER_FAILURE_SECS)
            time.sleep(RETRY_AFTER_FAILURE_SECS)


def _tier(source: ConfigSource, account: str) -> str:
    """The account's tier (its log file is named after it), or exit 2 naming the accounts."""
    try:
        return account_spec(source.accounts_file, account).tier.value
    except ConfigError as exc:
        raise fail(str(exc)) from None


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
