"""Replay cost against replay length: 1, 2 and 4 months of the same tickers (default: every ticker of
bars_1min from 2025-09-15), each into a fresh SQLite file in its own process; prints replay seconds,
bars, account runs, seconds per 100,000 bars and per 1,000 account runs, and each window's cost per
bar against the 1-month window's (linear: 1.00).

Run by hand: ``.venv/bin/python benchmarks/replay_scaling.py [--start D] [--months 1,2,4] [--chain-cache DIR]``.
Record the figures in docs/performance.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_throughput import _child  # noqa: E402 - the same child run as the throughput benchmark


def add_months(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 + months
    return dt.date(day.year + month // 12, month % 12 + 1, 1) + dt.timedelta(days=day.day - 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--tickers", default=None)
    parser.add_argument("--start", default="2025-09-15")
    parser.add_argument("--months", default="1,2,4")
    parser.add_argument("--chain-cache", default=None)
    args = parser.parse_args()
    console = Console(width=160)
    console.print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"{platform.platform()}; {dt.date.today()}")
    start = dt.date.fromisoformat(args.start)
    table = Table("months", "window", "replay s", "bars", "account runs", "decisions", "s / 100k bars",
                  "s / 1k runs", "cost per bar vs 1 month")
    first = None
    for months in (int(m) for m in args.months.split(",")):
        end = add_months(start, months)
        run = argparse.Namespace(**{**vars(args), "end": end.isoformat(), "database_url": None})
        r = _child("sqlite", run)
        per_bar = r["replay_secs"] / r["bars"]
        first = first or per_bar
        table.add_row(str(months), f"{start} → {end}", f"{r['replay_secs']:.1f}", f"{r['bars']:,}",
                      f"{r['account_runs']:,}", f"{r['decisions']:,}", f"{1e5 * per_bar:.1f}",
                      f"{1e3 * r['replay_secs'] / r['account_runs']:.2f}", f"{per_bar / first:.2f}")
        console.print(f"{months} month(s): {r['replay_secs']:.1f} s")
    console.print(table)


if __name__ == "__main__":
    main()
