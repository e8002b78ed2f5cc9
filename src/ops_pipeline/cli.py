"""``ops-pipeline``: thin Typer commands over the services."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import inspect, text

from ops_pipeline import cli_config
from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.market_data.calendar import from_exchange
from ops_pipeline.bootstrap import ExchangeAccount, build_live_account, build_paper_exchange
from ops_pipeline.config.loader import ConfigSource, load_all
from ops_pipeline.config.secrets import mask
from ops_pipeline.errors import BrokerError, ConfigError, DataError
from ops_pipeline.replay import DEFAULT_END, DEFAULT_START, DEFAULT_TICKERS, ReplaySettings, run_replay
from ops_pipeline.reports.charts import write_equity_chart
from ops_pipeline.reports.render import render, write_files
from ops_pipeline.reports.summary import build_report

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run several Alpaca paper accounts side by side.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
accounts_app = typer.Typer(no_args_is_help=True, help="Configured accounts.")
app.add_typer(db_app, name="db")
app.add_typer(accounts_app, name="accounts")
app.add_typer(cli_config.app, name="config")
console = Console()

DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="OPS_PIPELINE_DATABASE_URL",
                                                 help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: a local SQLite file).")]
ConfigDir = Annotated[Path | None, typer.Option("--config-dir", envvar="OPS_PIPELINE_CONFIG_DIR",
                                                help="Folder with accounts.toml and parameters/ (default: the shipped configuration).")]


def default_data_dir() -> Path:
    """``$OPS_PIPELINE_DATA_DIR``, else ``../shared/data`` beside the working directory or the checkout."""
    if env := os.environ.get("OPS_PIPELINE_DATA_DIR"):
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def _setup_logging(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_file, mode="w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    console_handler = RichHandler(console=console, level=logging.ERROR, show_path=False)
    root.addHandler(file_handler)
    root.addHandler(console_handler)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(2)


def _prepare_database(url: str | None, out_dir: Path, reset: bool) -> Database:
    """A migrated, empty database: a fresh SQLite file by default; a given URL must be empty or reset."""
    if url is None:
        path = out_dir / "replay.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        db = Database(sqlite_url(path))
        db.upgrade()
        return db
    db = Database(url)
    if "recommendations" in inspect(db.engine).get_table_names():
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT COUNT(*) FROM recommendations")).scalar_one()
        if rows and not reset:
            raise _fail(f"{db.redacted_url()} already holds {rows} recommendations; pass --reset to wipe it for a replay")
        if reset:
            db.downgrade_to_base()
    db.upgrade()
    return db


@app.command()
def replay(
    data: Annotated[Path | None, typer.Option("--data", help="Data folder (bars_1min/, bars_5min/, option_chains/).")] = None,
    bars: Annotated[str, typer.Option("--bars", help="1min or 5min.")] = "1min",
    tickers: Annotated[str, typer.Option("--tickers", help="Comma-separated underlyings.")] = ",".join(DEFAULT_TICKERS),
    start: Annotated[str, typer.Option("--start", help="First exchange date, YYYY-MM-DD.")] = DEFAULT_START.isoformat(),
    end: Annotated[str, typer.Option("--end", help="Last exchange date, YYYY-MM-DD.")] = DEFAULT_END.isoformat(),
    database_url: DatabaseUrl = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write report.json, CSV files and equity.html here.")] = None,
    config_dir: ConfigDir = None,
    reset: Annotated[bool, typer.Option("--reset", help="Wipe a non-empty --database-url first.")] = False,
    max_quote_age: Annotated[int, typer.Option("--max-quote-age", help="Minutes a real option quote stays usable.")] = 30,
) -> None:
    """Replay every account over historical data on a simulated clock, then print the report."""
    if bars not in {"1min", "5min"}:
        raise _fail(f"--bars must be 1min or 5min, not {bars!r}")
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as exc:
        raise _fail(f"--start/--end must be YYYY-MM-DD ({exc})") from None
    if last < first:
        raise _fail(f"--end {last} is before --start {first}")
    work_dir = out or Path(".ops-pipeline")
    _setup_logging(work_dir / "replay.log")
    settings = ReplaySettings(
        data_dir=data or default_data_dir(), interval_minutes=int(bars[0]),
        tickers=tuple(t.strip().upper() for t in tickers.split(",") if t.strip()), start=first, end=last,
        config_dir=config_dir, max_quote_age=dt.timedelta(minutes=max_quote_age),
    )
    db = _prepare_database(database_url, work_dir, reset)
    started = time.perf_counter()
    try:
        with Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), TextColumn("minutes"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("replay", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            rig, stats = run_replay(db, settings, advance)
    except (ConfigError, DataError) as exc:
        raise _fail(str(exc)) from None
    elapsed = time.perf_counter() - started
    notes = [
        f"{q.path}: {q.bars_kept} bars kept; {q.lot_bars_scaled} bars' volume converted from 100-share lots "
        f"({', '.join(f'{a}→{b}' for a, b in q.lot_segments) or 'none'}); {q.outside_hours_dropped} outside regular hours "
        f"dropped; {q.invalid_dropped + q.duplicates_dropped} invalid/duplicate dropped"
        + (f"; partial days in file: {len(q.partial_days)}" if q.partial_days else "")
        for q in rig.bar_quality
    ]
    notes.append(f"{rig.market.chains.snapshot_count} in-hours option-chain snapshots available; "
                 f"real quotes used up to {max_quote_age} min old, modelled otherwise")
    meta = {
        "window": f"{first} → {last}", "tickers": list(settings.tickers), "bars": bars,
        "database": db.redacted_url(), "sessions": stats.sessions, "minutes": stats.minutes, "bars_replayed": stats.bars,
        "recommendations": stats.recommendations, "dispatcher_runs": stats.dispatcher_runs,
        "position_manager_runs": stats.position_manager_runs, "elapsed_secs": round(elapsed, 1), "data_notes": notes,
    }
    report = build_report(db, [a.config for a in rig.accounts], meta)
    render(report, console)
    console.print(f"[dim]{stats.sessions} sessions, {stats.bars} bars, {stats.recommendations} recommendations, "
                  f"{stats.dispatcher_runs} dispatcher and {stats.position_manager_runs} position-manager runs in {elapsed:.1f}s; "
                  f"log: {work_dir / 'replay.log'}[/]")
    if out is not None:
        for path in [*write_files(report, out), write_equity_chart(db, [a.config for a in rig.accounts], out)]:
            console.print(f"[dim]wrote {path}[/]")


@app.command()
def report(
    database_url: DatabaseUrl = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write report.json, CSV files and equity.html here.")] = None,
    config_dir: ConfigDir = None,
) -> None:
    """Print the multi-account report of an existing database (default: the last replay's)."""
    try:
        configs = load_all(ConfigSource.from_settings(config_dir=config_dir))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    db = Database(database_url or sqlite_url(Path(".ops-pipeline") / "replay.db"))
    result = build_report(db, configs, {"database": db.redacted_url()})
    render(result, console)
    if out is not None:
        write_files(result, out)
        write_equity_chart(db, configs, out)


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply every migration (``alembic upgrade head``)."""
    db = Database(database_url or sqlite_url(Path("ops_pipeline.db")))
    db.upgrade()
    console.print(f"migrated {db.redacted_url()}")


@accounts_app.command("list")
def accounts_list(config_dir: ConfigDir = None) -> None:
    """The configured accounts and their effective limits."""
    try:
        configs = load_all(ConfigSource.from_settings(config_dir=config_dir))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    table = Table()
    for col in ("account", "tier", "balance", "schedule", "state", "max exposure", "max positions", "contract cap",
                "daily loss", "risk day/swing", "parameters from"):
        table.add_column(col)
    for c in configs:
        r, s = c.risk, c.account.schedule
        table.add_row(c.name, r.account_tier.value, f"${c.account.initial_balance:,.0f}",
                      f"every {s.every_minutes} min +{s.offset_minutes}", c.account.state, f"${r.max_notional_exposure:,.0f}",
                      str(r.max_open_positions), str(r.contract_cap), f"${r.max_daily_loss:,.0f}",
                      f"{r.risk_pct_day:.0%}/{r.risk_pct_swing:.0%}", c.parameter_source)
    console.print(table)


@app.command("run")
def run_account(
    account: Annotated[str, typer.Option("--account", help="The account to run (accounts.toml).")],
    once: Annotated[bool, typer.Option("--once", help="One position-manager and dispatcher run, then exit.")] = False,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
) -> None:
    """Run one account on Alpaca paper (EXECUTION_MODE=ALPACA_PAPER; OPS_PIPELINE_ALPACA_BASE_URL and
    OPS_PIPELINE_ALPACA_DATA_URL point it at a paper exchange): the position manager then the
    dispatcher, once or on the account's schedule (LOOP: parameters and credentials re-read each run).
    The loop waits in real seconds; against a paper exchange faster than real time, call --once from
    a scheduler instead."""
    _setup_logging(Path(".ops-pipeline") / f"run-{account}.log")
    db = Database(database_url or sqlite_url(Path("ops_pipeline.db")))
    db.upgrade()
    try:
        runtime = build_live_account(db=db, account_name=account,
                                     source=ConfigSource.from_settings(config_dir=config_dir))
    except (ConfigError, BrokerError) as exc:
        raise _fail(str(exc)) from None
    schedule = runtime.config.account.schedule
    while True:
        now = runtime.dispatcher.clock.now()
        try:
            runtime.before_run(now)
            managed = runtime.position_manager.run()
            dispatched = runtime.dispatcher.run()
        except ConfigError as exc:
            console.print(f"[red]run skipped:[/] {exc}", soft_wrap=True)
        else:
            console.print(f"{now:%Y-%m-%d %H:%M:%S} UTC {account}: positions {managed.as_dict()}; "
                          f"dispatch {dispatched.as_dict()}", soft_wrap=True, markup=False)
        if once:
            return
        wait = schedule.seconds_until_next(runtime.dispatcher.clock.now())
        time.sleep(wait)


exchange_app = typer.Typer(no_args_is_help=True, help="The paper exchange: the simulated broker over Alpaca's HTTP API.")
app.add_typer(exchange_app, name="paper-exchange")


@exchange_app.command("serve")
def paper_exchange_serve(
    start: Annotated[str, typer.Option("--start", help='Market time to start at, US/Eastern: "YYYY-MM-DD HH:MM".')],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    data: Annotated[Path | None, typer.Option("--data", help="Data folder (bars_1min/, option_chains/).")] = None,
    speed: Annotated[float, typer.Option("--speed", help="Market seconds per real second.")] = 1.0,
    account: Annotated[list[str] | None, typer.Option("--account", help="NAME:KEY:SECRET:BALANCE (repeatable); "
                                                      "default: the configured accounts and their secrets.")] = None,
) -> None:
    """Serve the simulated broker on 127.0.0.1 with Alpaca's Trading API v2 paths, one account per key."""
    try:
        begin = from_exchange(dt.datetime.strptime(start, "%Y-%m-%d %H:%M"))
    except ValueError:
        raise _fail(f'--start must be "YYYY-MM-DD HH:MM" (US/Eastern), not {start!r}') from None
    try:
        accounts = [ExchangeAccount.parse(a) for a in account or []]
        exchange, _, served = build_paper_exchange(data_dir=data or default_data_dir(), start=begin, speed=speed,
                                                   accounts=accounts)
    except (ConfigError, DataError) as exc:
        raise _fail(str(exc)) from None
    running = serve_in_thread(exchange, port=port)
    console.print(f"paper exchange listening on {running.url} (market time from {start} ET at {speed}×)", soft_wrap=True)
    for a in served:
        console.print(f"  {a.name}: key {mask(a.key)}, ${a.balance:,.2f}", soft_wrap=True)
    console.file.flush()
    try:
        running.thread.join()
    except KeyboardInterrupt:
        running.stop()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
