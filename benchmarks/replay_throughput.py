"""Replay throughput: all of ../shared/data/bars_1min (10 tickers, about 490,000 bars) with the four
accounts into a fresh SQLite file; prints bars per second and peak memory.

Run by hand: ``.venv/bin/python benchmarks/replay_throughput.py [--start D --end D --tickers A,B]``.
Record the figures in docs/performance.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.cli.common import default_data_dir
from ops_pipeline.replay import ReplaySettings, run_replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--tickers", default=None, help="default: every ticker in bars_1min")
    parser.add_argument("--start", default="2025-09-15")
    parser.add_argument("--end", default="2026-03-19")
    args = parser.parse_args()
    data = args.data or default_data_dir()
    tickers = args.tickers.split(",") if args.tickers else sorted(p.name.split("_")[0] for p in (data / "bars_1min").glob("*_1min.csv"))
    settings = ReplaySettings(data_dir=data, tickers=tuple(tickers), start=dt.date.fromisoformat(args.start),
                              end=dt.date.fromisoformat(args.end))
    console = Console()
    logging.basicConfig(filename=Path(tempfile.gettempdir()) / "replay_throughput.log", filemode="w", level=logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(sqlite_url(Path(tmp) / "bench.db"))
        db.upgrade()
        started = time.perf_counter()
        with Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), TextColumn("minutes"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("replay", total=None)
            _, stats = run_replay(db, settings, lambda done, total: progress.update(task, completed=done, total=total))
        elapsed = time.perf_counter() - started
        db_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = stats.dispatcher_runs + stats.position_manager_runs
    console.print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    console.print(f"window: {settings.start} → {settings.end}, {len(tickers)} tickers ({','.join(tickers)}), 4 accounts")
    console.print(f"bars: {stats.bars:,}  sessions: {stats.sessions}  recommendations: {stats.recommendations:,}  "
                  f"account runs: {runs:,}")
    console.print(f"elapsed: {elapsed:,.1f} s  throughput: {stats.bars / elapsed:,.0f} bars/s  "
                  f"{runs / elapsed:,.0f} account runs/s")
    console.print(f"peak memory (max RSS): {peak_mb:,.0f} MB  database: {db_mb:,.0f} MB")


if __name__ == "__main__":
    main()
