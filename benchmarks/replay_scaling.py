"""Replay cost against replay length: 1, 2 and 4 months of the same tickers (default: every ticker of
bars_1min from 2025-09-15), each into a fresh SQLite file in its own process; prints replay seconds,
bars, account runs, seconds per 100,000 bars and per 1,000 account runs, and each window's cost per
bar against the 1-month window's (linear: 1.00).

The machine's speed may drift within the hour (cloud machines do, by 15–25 %): a drift between the
windows' runs would read as non-linear cost. So the windows run in turns, ``--repeat`` rounds (default
2) after one unmeasured warm-up run of the shortest window (the chain cache and the page cache
filled), and each window's figure is its fastest run; every run's time is printed.

Run by hand: ``.venv/bin/python benchmarks/replay_scaling.py [--start D] [--months 1,2,4] [--repeat N]
[--chain-cache DIR]``.
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
    parser.add_argument("--repeat", type=int, default=2, help="rounds of runs; each window's fastest is kept")
    args = parser.parse_args()
    console = Console(width=160)
    console.print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"{platform.platform()}; {dt.date.today()}")
    start = dt.date.fromisoformat(args.start)
    table = Table("months", "window", "replay s", "bars", "account runs", "decisions", "s / 100k bars",
                  "s / 1k runs", "cost per bar vs 1 month")
    windows = [int(m) for m in args.months.split(",")]

    def run(months: int) -> dict:
        end = add_months(start, months)
        return _child("sqlite", argparse.Namespace(**{**vars(args), "end": end.isoformat(), "database_url": None}))

    run(min(windows))  # warm-up, not measured
    runs: dict[int, list[dict]] = {m: [] for m in windows}
    for round_ in range(1, args.repeat + 1):
        for months in windows:
            runs[months].append(run(months))
            console.print(f"round {round_}: {months} month(s): {runs[months][-1]['replay_secs']:.1f} s")
    first = None
    for months in windows:
        end = add_months(start, months)
        r = min(runs[months], key=lambda x: x["replay_secs"])
        per_bar = r["replay_secs"] / r["bars"]
        first = first or per_bar
        table.add_row(str(months), f"{start} → {end}", f"{r['replay_secs']:.1f}", f"{r['bars']:,}",
                      f"{r['account_runs']:,}", f"{r['decisions']:,}", f"{1e5 * per_bar:.1f}",
                      f"{1e3 * r['replay_secs'] / r['account_runs']:.2f}", f"{per_bar / first:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
