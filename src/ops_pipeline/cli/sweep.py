"""``ops-pipeline sweep GRID.toml``: replay one window for every combination of the grid's values,
in parallel, and compare them (see :mod:`ops_pipeline.services.sweep`)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ops_pipeline.cli.common import ConfigDir, console, default_data_dir, fail, work_dir
from ops_pipeline.cli.report import Format, emit
from ops_pipeline.config.loader import ConfigSource
from ops_pipeline.errors import ConfigError, DataError
from ops_pipeline.reports.views import Column, ReportTable
from ops_pipeline.services import sweep as sweeps

COLUMNS = (Column("combination", "#", "int"), Column("settings", "settings"), Column("account", "account"),
           Column("tier", "tier", terminal=False), Column("initial_balance", "balance", "money", terminal=False),
           Column("final_equity", "equity", "money", terminal=False), Column("return_pct", "return %", "pct"),
           Column("max_drawdown_pct", "max DD %", "pct"), Column("win_rate_pct", "win %", "pct"),
           Column("trades", "trades", "int"), Column("closed", "closed", "int", terminal=False),
           Column("realized_pnl", "realized P&L", "signed"), Column("rejections", "rejections by reason"),
           Column("limits_respected", "limits"))


def sweep(
    grid_file: Annotated[Path, typer.Argument(help="The grid (TOML): [replay] window and [grid] ACCOUNT.PARAMETER = [values].")],
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes (default: the core count).")] = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="A Dask distributed scheduler (tcp://host:8786) to run the combinations on instead.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where each combination's database and the results go.")] = Path("sweep-out"),
    data: Annotated[Path | None, typer.Option("--data", help="Folder with bars_1min/, bars_5min/, option_chains/.")] = None,
    config_dir: ConfigDir = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json (printed).")] = Format.table,
) -> None:
    """Replay one window once per combination of the grid's parameter values (any tier parameter, per
    account; initial balances), each into its own database, in parallel; print one row per
    combination and account (return, max drawdown, win rate, trades, rejections by reason) and write
    sweep.csv, sweep.json and sweep.html (chart) to --out."""
    try:
        grid = sweeps.load_grid(grid_file)
        data_dir = data or default_data_dir()
        if not data_dir.is_dir():
            raise DataError(f"no data folder at {data_dir}")
        tasks = sweeps.prepare(grid, ConfigSource.from_settings(config_dir=config_dir), out, data_dir,
                               chain_cache=work_dir() / "cache" / "chains")
        sweeps.check_data(tasks[0])
    except (ConfigError, DataError) as exc:
        raise fail(str(exc)) from None
    where = f"Dask cluster {cluster}" if cluster else f"{workers or os.cpu_count() or 1} processes"
    status = console if fmt is Format.table else Console(stderr=True)  # csv/json output stays parseable
    status.print(f"{len(tasks)} combinations × {len(tasks[0].accounts)} accounts on {where}", markup=False)
    with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=status, transient=True) as progress:
        bar = progress.add_task("sweep", total=len(tasks))

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        try:
            rows = (sweeps.run_dask(tasks, cluster, advance) if cluster
                    else sweeps.run_local(tasks, workers or os.cpu_count() or 1, advance))
        except (ConfigError, DataError) as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"cannot reach the Dask scheduler at {cluster}: {exc}") from None
    result = ReportTable("sweep", f"Sweep of {grid_file.name}: {len(tasks)} combinations, {grid.start} to {grid.end}",
                         COLUMNS, rows)
    _write(out, grid_file, tasks, rows)
    emit([result], fmt)
    if fmt is Format.table:
        console.print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.html'}", style="dim", markup=False)


def _write(out: Path, grid_file: Path, tasks: list[sweeps.SweepTask], rows: list[dict[str, Any]]) -> None:
    from ops_pipeline.reports.figures import sweep_figure  # noqa: PLC0415 - plotly only here

    out.mkdir(parents=True, exist_ok=True)
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c.key for c in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    (out / "sweep.json").write_text(json.dumps({"grid": str(grid_file), "combinations": sweeps.task_summary(tasks),
                                                "rows": rows}, indent=2, default=str) + "\n", encoding="utf-8")
    sweep_figure(rows).write_html(out / "sweep.html", include_plotlyjs=True, full_html=True)
