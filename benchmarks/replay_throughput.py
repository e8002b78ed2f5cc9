"""Replay throughput: the four accounts over ../shared/data bars (default: every ticker of bars_1min,
2025-09-15 → 2026-03-19) into a fresh database, on SQLite and PostgreSQL.

Prints, per database: bars/s, account runs/s, decisions/s, peak memory (max RSS of the process that
ran it), and the time spent in the database (cursor execute + commit) per decision; and the floor:
the time to merely read and clean the same bars (``load_replay_inputs``), so the ratio shows. With
``--backtrader`` it also times backtrader's SMA cross over the same cleaned bars, side by side:
once before the replays and once after, so a machine whose speed drifts within the hour (cloud
machines do, by 15–25 %) shows it, and the replay is compared with both runs that bracket it.

Each database runs in its own process (its own peak memory). PostgreSQL: ``--database-url`` or, by
default, a throwaway server started here (initdb + pg_ctl; fsync off, as in the tests).

Run by hand: ``.venv/bin/python benchmarks/replay_throughput.py [--start D --end D --tickers A,B]
[--databases sqlite,postgresql] [--backtrader]`` (``pip install -e '.[bench]'`` for backtrader).
Record the figures in docs/performance.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.pgserver: the throwaway PostgreSQL server the tests use


def _settings(args: argparse.Namespace):  # noqa: ANN202 - ReplaySettings
    from ops_pipeline.cli.common import default_data_dir
    from ops_pipeline.replay import ReplaySettings

    data = Path(args.data) if args.data else default_data_dir()
    tickers = args.tickers.split(",") if args.tickers else sorted(
        p.name.split("_")[0] for p in (data / "bars_1min").glob("*_1min.csv"))
    return ReplaySettings(data_dir=data, tickers=tuple(tickers), start=dt.date.fromisoformat(args.start),
                          end=dt.date.fromisoformat(args.end),
                          chain_cache=Path(args.chain_cache) if getattr(args, "chain_cache", None) else None)


def run_one(args: argparse.Namespace) -> dict:
    """Replay into one database in this process; returns the figures."""
    from sqlalchemy import event, func, select

    from ops_pipeline.adapters.db.database import Database, sqlite_url
    from ops_pipeline.adapters.db.tables import dispatch_decisions, dispatch_executions
    from ops_pipeline.replay import load_inputs, run_replay

    settings = _settings(args)
    logging.basicConfig(filename=Path(tempfile.gettempdir()) / f"replay_throughput_{args.one}.log", filemode="w",
                        level=logging.INFO)
    tmp = tempfile.mkdtemp(prefix="ops-bench-")
    if args.one == "sqlite":
        db = Database(sqlite_url(Path(tmp) / "bench.db"))
    else:
        from tests.pgserver import new_pg_database

        db = new_pg_database(args.database_url)
    db.upgrade()
    in_db = {"secs": 0.0, "statements": 0, "commits": 0}

    def before(conn, *_):  # noqa: ANN001
        conn.info["bench_t0"] = time.perf_counter()

    def after(conn, *_):  # noqa: ANN001
        in_db["secs"] += time.perf_counter() - conn.info.pop("bench_t0")
        in_db["statements"] += 1

    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine, "after_cursor_execute", after)
    original_commit = db.engine.dialect.do_commit

    def timed_commit(dbapi_conn):  # noqa: ANN001
        t0 = time.perf_counter()
        original_commit(dbapi_conn)
        in_db["secs"] += time.perf_counter() - t0
        in_db["commits"] += 1

    db.engine.dialect.do_commit = timed_commit  # type: ignore[method-assign]
    started = time.perf_counter()
    inputs = load_inputs(settings)
    loaded = time.perf_counter()
    _, stats = run_replay(db, settings, inputs=inputs)
    elapsed = time.perf_counter() - loaded
    with db.read() as conn:
        decisions = conn.execute(select(func.count()).select_from(dispatch_decisions)).scalar_one()
        executions = conn.execute(select(func.count()).select_from(dispatch_executions)).scalar_one()
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)  # the replay's SQLite file (tens to hundreds of MB)
    return {"database": args.one, "bars": stats.bars, "sessions": stats.sessions, "minutes": stats.minutes,
            "recommendations": stats.recommendations, "account_runs": stats.dispatcher_runs + stats.position_manager_runs,
            "decisions": decisions, "executions": executions, "load_secs": loaded - started, "replay_secs": elapsed,
            "db_secs": in_db["secs"], "statements": in_db["statements"], "commits": in_db["commits"],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def floor(args: argparse.Namespace) -> dict:
    """Read and clean the same bars, nothing else."""
    from ops_pipeline.replay import load_inputs

    settings = _settings(args)
    started = time.perf_counter()
    inputs = load_inputs(settings)
    return {"bars": inputs.bars_in_window, "secs": time.perf_counter() - started,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def backtrader_sma(args: argparse.Namespace) -> dict:
    """backtrader's SMA cross (10/30, one share, every ticker as its own data feed) over the same
    cleaned bars, event-driven (``runonce=False``, as a per-bar simulator)."""
    import backtrader as bt
    import pandas as pd

    from ops_pipeline.replay import load_inputs

    settings = _settings(args)
    inputs = load_inputs(settings)
    start = dt.datetime.combine(settings.start, dt.time(0), dt.UTC).timestamp()
    end = dt.datetime.combine(settings.end + dt.timedelta(days=1), dt.time(0), dt.UTC).timestamp()

    class SmaCross(bt.Strategy):
        def __init__(self) -> None:
            self.crosses = [bt.ind.CrossOver(bt.ind.SMA(d, period=10), bt.ind.SMA(d, period=30)) for d in self.datas]

        def next(self) -> None:
            for d, cross in zip(self.datas, self.crosses, strict=True):
                if not self.getposition(d).size and cross > 0:
                    self.buy(data=d)
                elif self.getposition(d).size and cross < 0:
                    self.close(data=d)

    cerebro = bt.Cerebro(runonce=False, stdstats=False)
    bars = 0
    for ticker in settings.tickers:
        series = inputs.market.bars[ticker]
        keep = (series.start >= start) & (series.start < end)
        frame = pd.DataFrame({"open": series.open[keep], "high": series.high[keep], "low": series.low[keep],
                              "close": series.close[keep], "volume": series.volume[keep]},
                             index=pd.to_datetime(series.start[keep], unit="s"))
        bars += len(frame)
        cerebro.adddata(bt.feeds.PandasData(dataname=frame), name=ticker)
    cerebro.addstrategy(SmaCross)
    started = time.perf_counter()
    cerebro.run()
    return {"bars": bars, "secs": time.perf_counter() - started}


def _child(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--start", args.start, "--end", args.end]
    cmd += ["--tickers", args.tickers] if args.tickers else []
    cmd += ["--data", args.data] if args.data else []
    cmd += ["--database-url", args.database_url] if args.database_url else []
    cmd += ["--chain-cache", args.chain_cache] if args.chain_cache else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--tickers", default=None, help="default: every ticker in bars_1min")
    parser.add_argument("--start", default="2025-09-15")
    parser.add_argument("--end", default="2026-03-19")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server admin URL (default: a throwaway one)")
    parser.add_argument("--backtrader", action="store_true")
    parser.add_argument("--chain-cache", default=None,
                        help="folder of parsed option-chain days (default: none, every run parses the chains)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = {"floor": floor, "backtrader": backtrader_sma}.get(args.one, run_one)(args)
        print(json.dumps(result))
        return
    console = Console(width=160)
    console.print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"{platform.platform()}; {dt.date.today()}")
    console.print(f"window: {args.start} → {args.end}, tickers {args.tickers or 'all of bars_1min'}, 4 accounts; "
                  f"chain cache: {args.chain_cache or 'none'}")
    base = _child("floor", args)
    console.print(f"floor (read + clean {base['bars']:,} bars): {base['secs']:.1f} s, {base['bars'] / base['secs']:,.0f} bars/s")
    bracket = []
    if args.backtrader:
        bracket.append(_child("backtrader", args))
        console.print(f"backtrader SMA cross, event-driven, before the replays: {bracket[0]['secs']:.1f} s, "
                      f"{bracket[0]['bars'] / bracket[0]['secs']:,.0f} bars/s")
    table = Table("database", "replay s", "bars/s", "account runs/s", "decisions/s", "× floor", "DB s",
                  "DB ms/decision", "statements", "commits", "peak MB")
    replayed: dict[str, float] = {}
    for kind in args.databases.split(","):
        if kind == "postgresql" and not args.database_url:
            from tests.pgserver import throwaway_server

            with throwaway_server() as url:
                args.database_url = url
                r = _child(kind, args)
                args.database_url = None
        else:
            r = _child(kind, args)
        secs = replayed[kind] = r["replay_secs"]
        table.add_row(kind, f"{secs:.1f}", f"{r['bars'] / secs:,.0f}", f"{r['account_runs'] / secs:,.0f}",
                      f"{r['decisions'] / secs:,.0f}", f"{(secs + r['load_secs']) / base['secs']:.1f}",
                      f"{r['db_secs']:.1f}", f"{1e3 * r['db_secs'] / max(r['decisions'], 1):.2f}",
                      f"{r['statements']:,}", f"{r['commits']:,}", f"{r['peak_mb']:,.0f}")
        console.print(f"{kind}: {r['bars']:,} bars, {r['sessions']} sessions, {r['recommendations']:,} recommendations, "
                      f"{r['account_runs']:,} account runs, {r['decisions']:,} decisions, {r['executions']:,} executions; "
                      f"inputs loaded in {r['load_secs']:.1f} s")
    console.print(table)
    if args.backtrader:
        bracket.append(_child("backtrader", args))
        console.print(f"backtrader SMA cross, event-driven, after the replays: {bracket[1]['secs']:.1f} s, "
                      f"{bracket[1]['bars'] / bracket[1]['secs']:,.0f} bars/s")
        for kind, secs in replayed.items():
            console.print(f"{kind} replay ÷ backtrader: {secs / bracket[0]['secs']:.2f} (before), "
                          f"{secs / bracket[1]['secs']:.2f} (after)")


if __name__ == "__main__":
    main()
