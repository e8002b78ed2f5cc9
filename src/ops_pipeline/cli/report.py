"""``ops-pipeline report``: the whole-run report, and every report of seeds 002 and 003 as a command.

Heavy libraries (empyrical, plotly, Jinja2) are imported by the commands that use them, so every
other ``ops-pipeline`` process (a worker started each minute) starts as fast as before.

Each subcommand is a thin call into :mod:`ops_pipeline.reports.views` (or
:mod:`ops_pipeline.reports.learnings`), the read side the dashboard uses too, and prints a
terminal table or ``--format csv|json``. The database is opened read-only: nothing is created or
changed, a missing file is an error.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from enum import Enum
from pathlib import Path
from collections.abc import Callable
from typing import Annotated

import typer

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.cli.common import ConfigDir, DatabaseUrl, console, fail, open_database, table, work_dir
from ops_pipeline.cli.start import selected_configs
from ops_pipeline.config.loader import ConfigSource
from ops_pipeline.errors import DatabaseError
from ops_pipeline.reports import views
from ops_pipeline.reports.render import render, write_files
from ops_pipeline.reports.summary import build_report

app = typer.Typer(add_completion=False, rich_markup_mode=None, invoke_without_command=True,
                  help="The multi-account report of a database (default: the last replay's), and every seed report "
                       "as a subcommand. Read-only.")

OVER_TIME_DAYS = 7
"""``report over-time`` without ``--since`` covers this many calendar days up to ``--date`` (seed 002: 7 days)."""


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


DateOption = Annotated[str | None, typer.Option(
    "--date", help="Exchange day YYYY-MM-DD, or 'today' (default: the latest day with activity in the database).")]
SinceOption = Annotated[str | None, typer.Option(
    "--since", help="First exchange day YYYY-MM-DD: the report covers --since to --date.")]
AccountOption = Annotated[str | None, typer.Option("--account", help="Comma-separated accounts (default: all).")]
FormatOption = Annotated[Format, typer.Option("--format", help="table, csv or json.")]


def _database(url: str | None) -> Database:
    return open_database(url, default=work_dir() / "replay.db", read_only=True)


def _activity(url: str | None, config_dir: Path | None, accounts: str | None) -> views.Activity:
    configs = selected_configs(ConfigSource.from_settings(config_dir=config_dir), accounts)
    try:
        return views.load_activity(_database(url), configs)
    except DatabaseError as exc:
        raise fail(str(exc)) from None


def _day(text: str | None, option: str) -> dt.date | None:
    if text is None:
        return None
    if text.strip().lower() == "today":
        return dt.datetime.now(views.EXCHANGE_TZ).date()
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"{option} must be a date like 2026-03-19 or 'today', not {text!r}") from None


def _period(activity: views.Activity, date: str | None, since: str | None, default_days: int = 1) -> views.Period:
    end = _day(date, "--date") or activity.latest_day(dt.datetime.now(views.EXCHANGE_TZ).date())
    start = _day(since, "--since") or end - dt.timedelta(days=default_days - 1)
    try:
        return views.Period(start, end)
    except ValueError as exc:
        raise fail(str(exc)) from None


def emit(reports: list[views.ReportTable], fmt: Format) -> None:
    """Print ``reports`` as terminal tables, CSV (one header + rows per report, a blank line between)
    or JSON (one object, or a list of them)."""
    if fmt is Format.json:
        payload = [r.as_json() for r in reports]
        sys.stdout.write(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2, default=str) + "\n")
        return
    if fmt is Format.csv:
        for i, r in enumerate(reports):
            if i:
                sys.stdout.write("\n")
            writer = csv.DictWriter(sys.stdout, fieldnames=[c.key for c in r.columns], extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(r.rows)
        return
    for r in reports:
        shown = [c for c in r.columns if c.terminal]
        t = table(r.title, *((c.header, c.kind != "text") for c in shown))
        for row in r.rows:
            t.add_row(*(views.format_value(row.get(c.key), c.kind, ("✅", "❌")) for c in shown))
        console.print(t)
        for note in r.notes:
            console.print(note, style="dim", markup=False)
        if not r.rows:
            console.print("(no rows)", style="dim")


@app.callback()
def report(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Also write report.json, CSV files, equity.html and the dashboard's pages here.")] = None,
    config_dir: ConfigDir = None,
) -> None:
    """Print the multi-account report of an existing database (default: the last replay's), read-only."""
    if ctx.invoked_subcommand is not None:
        return
    configs = selected_configs(ConfigSource.from_settings(config_dir=config_dir), None)
    db = _database(database_url)
    try:
        result = build_report(db, configs, {"database": db.redacted_url()})
    except DatabaseError as exc:
        raise fail(str(exc)) from None
    render(result, console)
    if out is not None:
        from ops_pipeline.reports.charts import write_equity_chart  # noqa: PLC0415 - plotly only when asked
        from ops_pipeline.web.dashboard import write_site  # noqa: PLC0415

        write_files(result, out)
        write_equity_chart(db, configs, out)
        write_site(db, configs, out)


PERIOD_REPORTS: list[tuple[str, Callable[[views.Activity, views.Period], views.ReportTable], int, str]] = [
    ("daily", views.daily, 1,
     'Seed 002 "Daily Account Summary": trades, capital deployed, contracts, tickers, first and last trade, P&L.'),
    ("compare", views.compare, 1,
     'Seed 002 "Compare Accounts Side-by-Side" with the TOTAL row, and each account\'s equity, return and limits.'),
    ("over-time", views.over_time, OVER_TIME_DAYS,
     'Seed 002 "Account Performance Over Time": per account per day (default: the 7 days up to --date).'),
    ("risk", views.risk, 1,
     'Seed 002 "Compare Risk Percentages Used": risk % used against the tier\'s expectation, OK or off target.'),
    ("contracts", views.contracts, 1,
     'Seed 002 "Check Contract Counts by Tier": contracts per order against the tier cap.'),
    ("tier-validation", views.tier_validation, 1,
     'Seed 002 "Tier Validation Report": expected balance, risk % and cap against what the account did.'),
    ("over-trading", views.over_trading, 1,
     'Trades per account per day against the ticker limit and the other accounts (seed 003 "Monitoring & Alerts").'),
]
"""The reports over a period of exchange days: (command, report function, default days, help)."""


def _period_command(build: Callable[[views.Activity, views.Period], views.ReportTable], default_days: int,
                    help_text: str) -> Callable[..., None]:
    def command(date: DateOption = None, since: SinceOption = None, account: AccountOption = None,
                database_url: DatabaseUrl = None, config_dir: ConfigDir = None, fmt: FormatOption = Format.table) -> None:
        activity = _activity(database_url, config_dir, account)
        emit([build(activity, _period(activity, date, since, default_days))], fmt)

    command.__doc__ = help_text
    return command


for _name, _build, _days, _help in PERIOD_REPORTS:
    app.command(_name)(_period_command(_build, _days, _help))


@app.command("health")
def health(date: Annotated[str | None, typer.Option(
               "--date", help="Judge at this exchange day's close (default: now).")] = None,
           account: AccountOption = None, database_url: DatabaseUrl = None, config_dir: ConfigDir = None,
           fmt: FormatOption = Format.table) -> None:
    """Seed 002 "Account Health Check": minutes since each account's last trade, active / slow / stale."""
    activity = _activity(database_url, config_dir, account)
    day = _day(date, "--date")
    at = dt.datetime.now(dt.UTC) if day is None else dt.datetime.combine(day, dt.time(16), views.EXCHANGE_TZ)
    emit([views.health(activity, at)], fmt)


@app.command("account")
def account_report(name: Annotated[str, typer.Argument(help="The account, e.g. tiny-1k.")],
                   date: DateOption = None, since: SinceOption = None,
                   limit: Annotated[int, typer.Option("--limit", min=1, help="How many orders.")] = 10,
                   database_url: DatabaseUrl = None, config_dir: ConfigDir = None, fmt: FormatOption = Format.table) -> None:
    """Seed 002 "Query Single Account Performance": the account's latest orders and what became of them."""
    activity = _activity(database_url, config_dir, name)
    emit([views.account_trades(activity, name, _period(activity, date, since), limit)], fmt)


@app.command("learnings")
def learnings(account: AccountOption = None, database_url: DatabaseUrl = None, config_dir: ConfigDir = None,
              fmt: FormatOption = Format.table) -> None:
    """Seed 003 "Expected Learnings": metrics per account and tier, quality score against outcome, and
    each question answered from the numbers, over everything stored."""
    from ops_pipeline.reports.learnings import build_learnings, learnings_tables  # noqa: PLC0415 - empyrical is slow to import

    activity = _activity(database_url, config_dir, account)
    emit(learnings_tables(build_learnings(activity)), fmt)
