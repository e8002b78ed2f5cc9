"""Render a report: Rich tables for the terminal, JSON and CSV files for tools."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def _signed(value: float | None) -> str:
    if value is None:
        return "—"
    color = "green" if value > 0 else "red" if value < 0 else "white"
    return f"[{color}]{value:+,.2f}[/]"


def render(report: dict[str, Any], console: Console) -> None:
    meta = report["meta"]
    parts = [meta.get("window"), meta.get("tickers") and "tickers " + ", ".join(meta["tickers"]),
             meta.get("bars") and f"bars {meta['bars']}", meta.get("database") and f"db {meta['database']}"]
    console.print("\n[bold]ops-pipeline report[/] — " + "  ".join(p for p in parts if p))
    accounts = report["accounts"]

    t = Table(title="Accounts", title_justify="left")
    t.add_column("", overflow="fold")
    for a in accounts:
        t.add_column(a["account_name"], justify="right", overflow="fold")
    rows = {
        "tier": lambda a: a["tier"] if a["expected_tier"] == a["tier"] else f"{a['tier']} [yellow](equity: {a['expected_tier']})[/]",
        "trades": lambda a: str(a["trades"]),
        "contracts min/avg/max": lambda a: f"{a['contracts_min']}/{a['contracts_avg']:.1f}/{a['contracts_max']}",
        "contract cap": lambda a: str(a["contract_cap"]),
        "capital deployed": lambda a: _money(a["capital_deployed"]),
        "realized P&L": lambda a: _signed(a["realized_pnl"]),
        "unrealized P&L": lambda a: _signed(a["unrealized_pnl"]),
        "open positions": lambda a: f"{a['open_positions']} ({_money(a['open_exposure'])})",
        "win rate": lambda a: "—" if a["win_rate_pct"] is None else f"{a['win_rate_pct']:.0f}% of {a['closed_positions']}",
        "max drawdown": lambda a: f"{_money(a['max_drawdown'])} ({a['max_drawdown_pct']:.1f}%)",
        "equity": lambda a: _money(a["final_equity"]),
        "return": lambda a: f"{a['return_pct']:+.2f}%",
        "own limits": lambda a: "[green]respected[/]" if not a["limit_violations"] else f"[red]{len(a['limit_violations'])} breach(es)[/]",
    }
    for label, cell in rows.items():
        t.add_row(label, *(cell(a) for a in accounts))
    console.print(t)

    codes = sorted({code for a in accounts for code in a["rejections"]})
    r = Table(title="Rejections by reason code (per account)", title_justify="left")
    r.add_column("reason code", overflow="fold")
    for a in accounts:
        r.add_column(a["account_name"], justify="right", overflow="fold")
    for code in codes:
        r.add_row(code, *(str(a["rejections"].get(code, 0)) for a in accounts))
    console.print(r)

    v = Table(title="Tier validation (seed 002), whole run", title_justify="left")
    for col in ("account_name", "expected_balance", "expected_risk_pct", "tier_cap", "avg_position_size",
                "actual_risk_pct", "max_contracts_used", "trades", "cap_respected"):
        v.add_column(col, justify="left" if col == "account_name" else "right", overflow="fold")
    for row in report["tier_validation"]:
        v.add_row(row["account_name"], _money(row["expected_balance"]), f"{row['expected_risk_pct']}",
                  str(row["tier_cap"]), _money(row["avg_position_size"]), f"{row['actual_risk_pct']}",
                  str(row["max_contracts_used"]), str(row["trades"]), "✅" if row["cap_respected"] else "❌ Over limit!")
    console.print(v)

    d = Table(title="Daily loss limit: each account's worst day, and the days it halted", title_justify="left")
    for col in ("account", "limit", "worst day", "worst day P&L", "halted", "what happened"):
        d.add_column(col, justify="right" if col in {"limit", "worst day P&L"} else "left", overflow="fold")
    for a in accounts:
        worst = a.get("worst_day")
        halts = a.get("halted_days", [])
        if worst is None:
            d.add_row(a["account_name"], _money(a["max_daily_loss"]), "—", "—", "—", "no trading day")
            continue
        halted = ", ".join(f"{h['date']} {h['halted_at']} ({_halt_pnl(h)})" for h in halts) or "never"
        d.add_row(a["account_name"], _money(a["max_daily_loss"]), worst["date"], _signed(worst["worst_pnl"]), halted,
                  _daily_loss_story(worst, halts))
    console.print(d)

    fills = report["fills_by_quote"]
    errors = report.get("model_mid_error_pct", {})
    console.print(f"Fills (entries and exits) by quote: real {fills.get('real', 0)}, modelled {fills.get('modelled', 0)}"
                  + ("" if not fills.get("modelled") else
                     "  — modelled quotes are Black-Scholes from the underlying with the volatility and spread of the "
                     "nearest real chains (no real quote within the age limit); median mid error against real chains "
                     "in brackets (ops-pipeline data check-quotes)"))
    for a in accounts:
        by_dte = a.get("modelled_fills_by_dte") or {}
        if not by_dte:
            continue
        parts = ", ".join(f"{bucket} DTE {n} (±{errors.get(bucket, float('nan')):.0f} %)" for bucket, n in by_dte.items())
        total = sum(a["fills_by_quote"].values())
        console.print(f"  {a['account_name']}: {sum(by_dte.values())} of {total} fills modelled: {parts}", markup=False)
        if a.get("mostly_modelled_same_day"):
            console.print(f"[yellow]  {a['account_name']}: most of its fills are modelled 0-1 DTE quotes, where the model "
                          f"is off by a median {errors.get('0-1', float('nan')):.0f} %: its P&L rests on the model, "
                          "not on real prices[/]")
    for note in meta.get("data_notes", []):
        console.print(f"[dim]data: {note}[/]")
    for a in accounts:
        for problem in a["limit_violations"]:
            console.print(f"[red]{a['account_name']}: limit breach: {problem}[/]", markup=True)
        for problem in a.get("inconsistencies", []):
            console.print(f"[yellow]{a['account_name']}: inconsistent rows: {problem}[/]")


def _plain(value: float | None) -> str:
    return "—" if value is None else f"{value:+,.2f}"


def _halt_pnl(day: dict[str, Any]) -> str:
    """The day P&L at the halt, and the realized part when that alone reached the limit."""
    text = _plain(day["halt_pnl"])
    if day["halt_pnl"] is not None and day["halt_pnl"] > -day["max_daily_loss"]:
        text += f", realized {_plain(day['halt_realized'])}"
    return text


def _daily_loss_story(worst: dict[str, Any], halts: list[dict[str, Any]]) -> str:
    """One plain sentence on the worst day against the limit."""
    limit = worst["max_daily_loss"]
    if worst["past_limit_after_halt"]:
        return (f"halted at {worst['halted_at']} at {_halt_pnl(worst)}; positions already open then took "
                f"the day to {_plain(worst['worst_pnl'])} (limit {limit:,.2f}); no entry after the halt")
    if worst["halted_at"]:
        return f"halted at {worst['halted_at']} at {_halt_pnl(worst)}: no entry for the rest of the day"
    if halts:
        return f"within the limit that day; halted on {len(halts)} other day(s)"
    return f"within the limit (worst {_plain(worst['worst_pnl'])} at {worst['worst_at']})"


def write_files(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``report.json``, ``accounts.csv``, ``rejections.csv`` and ``tier_validation.csv`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json"]
    written[0].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    flat = [{k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in a.items()} for a in report["accounts"]]
    rejections = [{"account_name": a["account_name"], "reason_code": code, "count": n}
                  for a in report["accounts"] for code, n in a["rejections"].items()]
    for name, rows in (("accounts.csv", flat), ("rejections.csv", rejections), ("tier_validation.csv", report["tier_validation"])):
        path = out_dir / name
        with path.open("w", newline="", encoding="utf-8") as fh:
            if rows:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        written.append(path)
    return written
