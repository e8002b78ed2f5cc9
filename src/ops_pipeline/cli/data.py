"""``ops-pipeline data check-quotes`` and ``ops-pipeline data lags``: how close the replay's
option quotes are to the real chains, and when each snapshot's quotes were really taken."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ops_pipeline.adapters.market_data.calendar import TradingCalendar, to_exchange
from ops_pipeline.cli.common import console, default_data_dir, fail, table
from ops_pipeline.errors import DataError
from ops_pipeline.services import quote_check

app = typer.Typer(no_args_is_help=True, help="Check the market data the replay reads.")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder with option_chains/ and bars_1min/ "
                                              "(default: ../shared/data).")]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise fail(f"--horizon must be a number with m, h or d (30m, 2h, 1d), not {text!r}")
    value, unit = float(match[1]), match[2]
    return dt.timedelta(minutes=value) if unit == "m" else dt.timedelta(hours=value) if unit == "h" else dt.timedelta(days=value)


def _market(data_dir: Path | None):
    try:
        return quote_check.load_check_market(data_dir or default_data_dir(), TradingCalendar())
    except DataError as exc:
        raise fail(str(exc)) from None


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


@app.command("check-quotes")
def check_quotes(
    data_dir: DataDir = None,
    horizon: Annotated[list[str] | None, typer.Option(
        "--horizon", help="Model each snapshot from chains at least this much older (repeat; default 1d and 5d).")] = None,
    output: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
    spreads: Annotated[bool, typer.Option("--spreads", help="Also print the real chains' median spreads by "
                                          "ticker, DTE and |delta| (the rule spread's measurement).")] = False,
) -> None:
    """Score the modelled option quotes against every real snapshot, the way the replay uses them.

    For each horizon H, every contract with a bid in every snapshot is modelled from chains quoted at
    least H earlier (no later chain) and compared with its real bid, ask and mid: median and 90th
    percentile mid error, bias, share of real mids inside the modelled bid-ask, spread and round-trip
    P&L error in dollars per contract, by DTE bucket and |delta| band. Method: docs/quotes.md.
    """
    horizons = [(_text, _duration(_text)) for _text in (horizon or ["1d", "5d"])]
    market = _market(data_dir)
    lags = quote_check.lag_summary(market.chains.timings())
    results: dict[str, Any] = {}
    tables: list[pd.DataFrame] = []
    for text, delta in horizons:
        with Progress(TextColumn(f"H = {text}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True, disable=output is not Format.table) as progress:
            task = progress.add_task("snapshots", total=None)
            obs = quote_check.observations(market, delta, lambda done, total, task=task: progress.update(task, completed=done, total=total))
        summary = quote_check.summarize(obs)
        tables.append(summary.assign(horizon=text))
        results[text] = {
            "target_band": {k: _clean(v) for k, v in quote_check.target_band(obs).items()},
            "target_band_by_vol_source": quote_check.by_vol_source(obs),
            "table": [{k: _clean(v) for k, v in row.items()} for row in summary.to_dict("records")],
        }
    if output is Format.json:
        payload = {"lags": lags.__dict__, "horizons": results}
        if spreads:
            payload["measured_spreads_pct"] = quote_check.measured_spreads(market).round(2).reset_index().to_dict("records")
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    if output is Format.csv:
        pd.concat(tables).to_csv(sys.stdout, index=False, float_format="%.4g")
        return
    console.print(f"Quote lag of {lags.snapshots} snapshots (file time minus quote time): median {lags.median:.0f} min, "
                  f"10th-90th percentile {lags.p10:.0f}-{lags.p90:.0f} min; {lags.by_parity} matched by put-call "
                  "parity against the bars (ops-pipeline data lags lists each)")
    for (text, _), summary in zip(horizons, tables, strict=True):
        _print_horizon(text, results[text], summary)
    if spreads:
        measured = quote_check.measured_spreads(market).round(1)
        t = table("Real median spread, % of mid (ticker, DTE bucket x |delta| band)", "ticker", "DTE",
                  *[(band, True) for band in measured.columns])
        for (ticker, bucket), row in measured.iterrows():
            t.add_row(ticker, bucket, *["" if math.isnan(v) else f"{v:.1f}" for v in row])
        console.print(t)


def _print_horizon(text: str, result: dict[str, Any], summary: pd.DataFrame) -> None:
    target = result["target_band"]
    if target:
        console.print(
            f"\nH = {text}, |delta| 0.30-0.60, 7-30 DTE ({target['n']} quotes): median mid error "
            f"{target['median_error_pct']:.1f} %, 90th percentile {target['p90_error_pct']:.1f} %, bias "
            f"{target['bias_pct']:+.1f} %, real mids inside the modelled bid-ask {target['inside_pct']:.0f} %; spread "
            f"${target['real_spread']:.2f} real against ${target['model_spread']:.2f} modelled per contract "
            f"(round-trip bias from the spread {target['spread_bias']:+.2f} $/contract)")
        for source, figures in result["target_band_by_vol_source"].items():
            console.print(f"  volatility from {source:<9} {figures['n']:>6} quotes, median mid error "
                          f"{figures['median_error_pct']:.1f} %, bias {figures['bias_pct']:+.1f} %")
    t = table(f"H = {text}: modelled against real, by DTE bucket and |delta| band", "DTE", "|delta|", ("quotes", True),
              ("median err %", True), ("p90 err %", True), ("bias %", True), ("mid inside %", True),
              ("real spread $", True), ("model spread $", True), ("spread bias $", True),
              ("round trips", True), ("RT |err| med $", True), ("RT bias $", True))
    for row in summary.to_dict("records"):
        t.add_row(row["dte_bucket"], row["delta_band"], f"{row['n']:,}", f"{row['median_error_pct']:.1f}",
                  f"{row['p90_error_pct']:.1f}", f"{row['bias_pct']:+.1f}", f"{row['inside_pct']:.0f}",
                  f"{row['real_spread']:.2f}", f"{row['model_spread']:.2f}", f"{row['spread_bias']:+.2f}",
                  f"{row['round_trips']:,}", _money(row["round_trip_median_abs"]), _money(row["round_trip_bias"], signed=True))
    console.print(t)


def _money(value: float, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


@app.command("lags")
def lags(
    data_dir: DataDir = None,
    output: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
) -> None:
    """Each snapshot's quote time: the file's time, the time its quotes were taken (put-call parity
    of near-the-money pairs matched against the 1-minute bars), the lag and how it was found."""
    market = _market(data_dir)
    rows = [{
        "snapshot": t.name, "file_time_et": to_exchange(t.taken_at).strftime("%Y-%m-%d %H:%M:%S"),
        "quote_time_et": to_exchange(t.quote_time).strftime("%Y-%m-%d %H:%M:%S"),
        "lag_min": round(t.lag.total_seconds() / 60, 1), "source": t.source,
        "error_bp": None if t.error_bp is None else round(t.error_bp, 2), "matched": " ".join(t.tickers),
    } for t in market.chains.timings()]
    if output is Format.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if output is Format.csv:
        pd.DataFrame(rows).to_csv(sys.stdout, index=False)
        return
    t = table("Snapshot quote times (US/Eastern)", "snapshot", "file time", "quote time", ("lag min", True), "found by",
              ("parity vs bar, bp", True), "matched on")
    for r in rows:
        t.add_row(r["snapshot"], r["file_time_et"], r["quote_time_et"], f"{r['lag_min']:g}", r["source"],
                  "" if r["error_bp"] is None else f"{r['error_bp']:.2f}", r["matched"])
    console.print(t)
