"""``ops-pipeline replay`` (the report commands are in :mod:`.report`).

A replay never destroys the last one's results on bad input: every input (dates, tickers, data,
configuration, database URL) is checked before anything is written; the new replay is built in a
new SQLite file and moved over the old one only when it finished; the log is appended to.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy import inspect, text

from ops_pipeline.adapters.db.database import Database, replace_sqlite_file, sqlite_url
from ops_pipeline.adapters.market_data.calendar import to_exchange
from ops_pipeline.cli.common import (
    ConfigDir,
    DatabaseUrl,
    console,
    default_data_dir,
    fail,
    open_database,
    setup_logging,
    work_dir,
)
from ops_pipeline.errors import ConfigError, DatabaseError, DataError, RunInProgress
from ops_pipeline.replay import DEFAULT_END, DEFAULT_START, DEFAULT_TICKERS, ReplaySettings, load_inputs, run_replay
from ops_pipeline.reports.render import render, write_files
from ops_pipeline.reports.summary import build_report


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} must be a date YYYY-MM-DD, not {value!r}") from None


def _destination(url: str | None, out_dir: Path, reset: bool) -> tuple[Database | None, Path | None]:
    """Where the replay goes, checked and unchanged: ``(None, path)`` for a SQLite file (built beside
    it and moved into place), ``(db, None)`` for a PostgreSQL database (reachable; empty unless ``reset``)."""
    if url is None:
        return None, out_dir / "replay.db"
    try:
        db = Database(url)
        if db.sqlite_path is not None:
            db.dispose()
            return None, db.sqlite_path
        if db.dialect == "sqlite":
            raise fail(f"{url}: an in-memory database cannot hold a replay")
        db.check()
        if "recommendations" in inspect(db.engine).get_table_names():
            with db.read() as conn:
                rows = conn.execute(text("SELECT COUNT(*) FROM recommendations")).scalar_one()
            if rows and not reset:
                raise fail(f"{db.redacted_url()} already holds {rows} recommendations; pass --reset to wipe it for a replay")
    except DatabaseError as exc:
        raise fail(str(exc)) from None
    return db, None


def _prepare_server(db: Database, reset: bool) -> None:
    """Wipe (with ``reset``) and migrate a server database, once every input was checked."""
    try:
        if reset and "recommendations" in inspect(db.engine).get_table_names():
            db.downgrade_to_base()
        db.upgrade()
    except DatabaseError as exc:
        raise fail(str(exc)) from None


def replay(
    data: Annotated[Path | None, typer.Option("--data", help="Data folder (bars_1min/, bars_5min/, option_chains/).")] = None,
    bars: Annotated[str, typer.Option("--bars", help="1min or 5min.")] = "1min",
    tickers: Annotated[str, typer.Option("--tickers", help="Comma-separated underlyings.")] = ",".join(DEFAULT_TICKERS),
    start: Annotated[str, typer.Option("--start", help="First exchange date, YYYY-MM-DD.")] = DEFAULT_START.isoformat(),
    end: Annotated[str, typer.Option("--end", help="Last exchange date, YYYY-MM-DD.")] = DEFAULT_END.isoformat(),
    database_url: DatabaseUrl = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write report.json, CSV files, equity.html and the dashboard pages (index.html …) here.")] = None,
    config_dir: ConfigDir = None,
    reset: Annotated[bool, typer.Option("--reset", help="Wipe a non-empty PostgreSQL --database-url first.")] = False,
    max_quote_age: Annotated[int, typer.Option("--max-quote-age", min=1,
                                               help="Minutes a real option quote stays usable (1 or more).")] = 30,
    chain_cache: Annotated[bool, typer.Option(
        "--chain-cache/--no-chain-cache",
        help="Keep parsed option-chain days in .ops-pipeline/cache/chains for the next replay.")] = True,
) -> None:
    """Replay every account over historical data on a simulated clock, then print the report."""
    if bars not in {"1min", "5min"}:
        raise fail(f"--bars must be 1min or 5min, not {bars!r}")
    first, last = _date(start, "--start"), _date(end, "--end")
    if last < first:
        raise fail(f"--end {last} is before --start {first}")
    settings = ReplaySettings(
        data_dir=data or default_data_dir(), interval_minutes=int(bars[0]),
        tickers=tuple(t.strip().upper() for t in tickers.split(",") if t.strip()), start=first, end=last,
        config_dir=config_dir, max_quote_age=dt.timedelta(minutes=max_quote_age),
        chain_cache=work_dir() / "cache" / "chains" if chain_cache else None,
    )
    out_dir = out or work_dir()
    server_db, final_path = _destination(database_url, out_dir, reset)
    try:
        inputs = load_inputs(settings)
    except (ConfigError, DataError) as exc:
        raise fail(str(exc)) from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    setup_logging(out_dir / "replay.log")
    held = ExitStack()  # a server database's account locks, taken before anything is changed
    if server_db is not None:
        try:
            for config in inputs.configs:
                held.enter_context(server_db.account_lock(config.name, wait_secs=0))
        except RunInProgress as exc:
            held.close()
            raise fail(f"cannot replay into {server_db.redacted_url()}: {exc}; nothing was changed. A replay holds "
                       f"every account's run lock from start to end: stop that account's runs, or replay into "
                       f"another database") from None
        _prepare_server(server_db, reset)
        db = server_db
    else:
        assert final_path is not None
        _remove_abandoned_builds(final_path)
        building = final_path.with_name(f"{final_path.name}.building-{os.getpid()}")
        db = open_database(sqlite_url(building), default=building, migrate=True)
    started = time.perf_counter()
    try:
        with Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), TextColumn("minutes"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("replay", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            rig, stats = run_replay(db, settings, advance, inputs=inputs)
    except BaseException:
        if final_path is not None:
            db.dispose()
            _remove_sqlite(building)
        raise
    finally:
        held.close()
    elapsed = time.perf_counter() - started
    if final_path is not None:
        db.dispose()
        replace_sqlite_file(building, final_path)
        shutil.rmtree(f"{building}-locks", ignore_errors=True)
        db = open_database(sqlite_url(final_path), default=final_path)
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
    configs = [a.config for a in rig.accounts]
    report_data = build_report(db, configs, meta)
    used = {name for a in report_data["accounts"] for name in a["real_fill_snapshots"]}
    lags = [t for t in rig.market.chains.timings(parse_all=False) if t.name in used]
    meta["fill_snapshot_lags"] = [{"snapshot": t.name, "file_time_et": f"{to_exchange(t.taken_at):%Y-%m-%d %H:%M:%S}",
                                   "quote_time_et": f"{to_exchange(t.quote_time):%Y-%m-%d %H:%M:%S}",
                                   "lag_min": round(t.lag.total_seconds() / 60, 1), "found_by": t.source} for t in lags]
    if lags:
        minutes = sorted(t.lag.total_seconds() / 60 for t in lags)
        notes.append(f"real entry fills used {len(lags)} snapshots whose quotes were {minutes[0]:.0f}-{minutes[-1]:.0f} min "
                     f"older than their files (median {minutes[len(minutes) // 2]:.0f}); quotes are stamped with their own "
                     "time (ops-pipeline data lags; report.json meta.fill_snapshot_lags)")
    render(report_data, console)
    console.print(f"{stats.sessions} sessions, {stats.bars} bars, {stats.recommendations} recommendations, "
                  f"{stats.dispatcher_runs} dispatcher and {stats.position_manager_runs} position-manager runs in "
                  f"{elapsed:.1f}s; log: {out_dir / 'replay.log'}", style="dim", markup=False)
    if out is not None:
        from ops_pipeline.reports.charts import write_equity_chart  # noqa: PLC0415 - plotly only when asked
        from ops_pipeline.web.dashboard import write_site  # noqa: PLC0415

        pages = write_site(db, configs, out, at=rig.clock.now())
        for path in [*write_files(report_data, out), write_equity_chart(db, configs, out), *pages]:
            console.print(f"wrote {path}", style="dim", markup=False)


def _remove_abandoned_builds(final_path: Path) -> None:
    """Delete half-built replays left by replay processes that died (their pid is gone)."""
    for leftover in final_path.parent.glob(f"{final_path.name}.building-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove_sqlite(leftover)
        except PermissionError:
            pass  # another user's live process


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{path}-locks", ignore_errors=True)
