"""``ops-pipeline start``: every enabled account on its schedule, supervised; and ``worker``, the
process the supervisor starts for each account and for the signal engine (not for direct use)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Annotated, Any

import typer

from ops_pipeline import logs
from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.bootstrap import build_live_account, live_market, register_accounts
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
    work_dir,
)
from ops_pipeline.config.loader import ConfigSource, account_spec, load_accounts, load_all, load_signal_settings
from ops_pipeline.config.models import Schedule
from ops_pipeline.errors import BrokerError, ConfigError, MarketDataError
from ops_pipeline.services.live_signals import LiveSignalEngine
from ops_pipeline.services.operations import account_statuses
from ops_pipeline.services.runner import AccountRunner
from ops_pipeline.services.schedule import MarketTimer
from ops_pipeline.services.supervisor import SIGNALS, Job, Supervisor, SupervisorSettings
from ops_pipeline.services.worker import EXIT_CANNOT_START, Protocol, serve
from ops_pipeline.web.metrics import create_metrics_app

log = logging.getLogger("ops_pipeline.cli")


def selected_configs(source: ConfigSource, accounts: str | None) -> list[Any]:
    """The configured accounts, limited to the comma-separated ``accounts``.

    Raises:
        typer.Exit: invalid configuration or an unknown account (exit 2).
    """
    try:
        configs = load_all(source)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if not accounts:
        return configs
    wanted = [a.strip() for a in accounts.split(",") if a.strip()]
    unknown = [a for a in wanted if a not in {c.name for c in configs}]
    if unknown:
        raise fail(f"no account {', '.join(unknown)}; accounts: {', '.join(c.name for c in configs)}")
    return [c for c in configs if c.name in wanted]


def start(
    accounts: Annotated[str | None, typer.Option("--accounts", help="Comma-separated accounts to run (default: all).")] = None,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", min=0, max=65535,
                                                     help="Serve Prometheus /metrics and /healthz on 127.0.0.1:P.")] = None,
    run_deadline: Annotated[float, typer.Option("--run-deadline", min=1,
                                                help="Real seconds a run may take before its process is killed.")] = 120.0,
    signals: Annotated[bool, typer.Option("--signals/--no-signals",
                                          help="Run the live signal engine (tickers: accounts.toml [signals]).")] = True,
    log_format: LogFormat = LogFormatChoice.text,
) -> None:
    """Run every enabled account on its staggered schedule until stopped (Ctrl-C or SIGTERM: the runs in
    progress finish first). EXECUTION_MODE=ALPACA_PAPER; OPS_PIPELINE_ALPACA_BASE_URL and
    OPS_PIPELINE_ALPACA_DATA_URL point it at a paper exchange, whose clock (and --speed) it follows.

    Each account runs in its own process (log: .ops-pipeline/logs/dispatcher-{tier}.log, large:
    dispatcher.log); a crashed one is started again. States (accounts pause, kill …) take effect at
    each account's next run.
    """
    setup_logging(logs_dir() / "supervisor.log", log_format.value)
    db = open_database(database_url, default=default_database(), migrate=True)
    source = ConfigSource.from_settings(config_dir=config_dir)
    configs = selected_configs(source, accounts)
    try:
        register_accounts(db, source)
        clock, _ = live_market(source, configs[0].name)
        tickers = load_signal_settings(source.accounts_file).tickers
    except ConfigError as exc:
        raise fail(str(exc)) from None
    env = {**os.environ, "OPS_PIPELINE_DATABASE_URL": db.url, "OPS_PIPELINE_HOME": str(work_dir().resolve())}
    if config_dir is not None:
        env["OPS_PIPELINE_CONFIG_DIR"] = str(config_dir.resolve())
    base = [sys.executable, "-m", "ops_pipeline.cli", "worker", "--log-format", log_format.value]
    jobs = [Job(SIGNALS, Schedule(every_minutes=1, offset_minutes=0), [*base, "--signals"])] if signals else []
    jobs += [Job(c.name, c.account.schedule, [*base, "--account", c.name]) for c in configs]
    calendar = TradingCalendar()
    server = None
    if metrics_port is not None:
        def statuses() -> list[Any]:
            return account_statuses(db, configs, clock.now(), calendar)

        server = serve_in_thread(create_metrics_app(statuses), port=metrics_port)
        console.print(f"metrics: {server.url}/metrics  health: {server.url}/healthz", markup=False)
    supervisor = Supervisor(jobs, MarketTimer(clock), SupervisorSettings(run_deadline, calendar, env),
                            on_result=_print_result)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: supervisor.stop())
    console.print(f"running {', '.join(c.name for c in configs)}{' and the signal engine (' + ','.join(tickers) + ')' if signals else ''}; "
                  f"logs in {logs_dir()}; Ctrl-C stops after the runs in progress", markup=False, soft_wrap=True)
    log.info("start: accounts %s; signals %s; run deadline %.0fs", ", ".join(c.name for c in configs),
             ",".join(tickers) if signals else "off", run_deadline)
    try:
        supervisor.run()
    finally:
        if server is not None:
            server.stop()
    console.print("stopped", markup=False)


def _print_result(name: str, event: dict[str, Any]) -> None:
    minute = (event.get("minute") or "")[11:16]
    detail = event.get("line") or ""
    text = f"{minute}Z {name}: {event.get('status')} ({event.get('wall_secs', 0):.2f}s){' ' + detail if detail else ''}"
    if event.get("error"):
        text += f"; error: {event['error']}"
    console.print(text, markup=False, soft_wrap=True, style="red" if event.get("status") == "error" else None)
    log.info("%s", text)


def worker(
    account: Annotated[str | None, typer.Option("--account", help="Run this account.")] = None,
    signals: Annotated[bool, typer.Option("--signals", help="Run the live signal engine.")] = False,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
    log_format: LogFormat = LogFormatChoice.text,
) -> None:
    """(Started by `ops-pipeline start`.) One account's, or the signal engine's, runs on request."""
    protocol = Protocol()
    source = ConfigSource.from_settings(config_dir=config_dir)
    try:
        if signals:
            setup_logging(logs_dir() / "signals.log", log_format.value, console_errors=False)
            run = _signal_runs(database_url, source)
        elif account:
            tier = account_spec(source.accounts_file, account).tier.value
            setup_logging(logs.account_log_file(logs_dir(), tier), log_format.value, console_errors=False)
            run = _account_runs(database_url, source, account)
        else:
            raise ConfigError("worker needs --account NAME or --signals")
    except (ConfigError, BrokerError, MarketDataError, typer.Exit) as exc:
        message = str(exc) if not isinstance(exc, typer.Exit) else "cannot open the database"
        logging.getLogger("ops_pipeline.worker").error("cannot start: %s", message)
        protocol.send(event="failed", error=message)
        raise typer.Exit(EXIT_CANNOT_START) from None
    serve(protocol, run)


def _account_runs(database_url: str | None, source: ConfigSource, account: str) -> Any:
    db = open_database(database_url, default=default_database())
    runner = AccountRunner(db, build_live_account(db=db, account_name=account, source=source))

    def run() -> dict[str, Any]:
        try:
            result = runner.run_once()
        except Exception as exc:  # noqa: BLE001 - a bug or a database failure: reported, the worker goes on
            logging.getLogger("ops_pipeline.worker").exception("[%s] run failed unexpectedly", account)
            return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        dispatch = result.dispatch.as_dict() if result.dispatch else {}
        line = ""
        if dispatch:
            line = f"claimed {dispatch.get('claimed', 0)}, executed {dispatch.get('executed', 0)}"
            if dispatch.get("rejected"):
                line += f", rejected {dispatch['rejected']}"
        if result.manage is not None and result.manage.closed:
            line += f"; closed {result.manage.closed}"
        return {"status": result.status, "error": result.error, "line": line,
                "at": result.at.isoformat() if result.at else None}

    return run


def _signal_runs(database_url: str | None, source: ConfigSource) -> Any:
    db = open_database(database_url, default=default_database())
    clock, market = live_market(source, load_accounts(source.accounts_file)[0].name)  # its clock and bars
    engine = LiveSignalEngine(db, market, load_signal_settings(source.accounts_file).tickers, TradingCalendar())

    def run() -> dict[str, Any]:
        try:
            done = engine.run(clock.now())
        except (BrokerError, MarketDataError) as exc:
            engine.log.error("signal run failed: %s", exc)
            return {"status": "error", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - reported; the next minute tries again
            engine.log.exception("signal run failed unexpectedly")
            return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "line": f"{done.bars_read} bars read, {done.written} recommendation(s) written"}

    return run

