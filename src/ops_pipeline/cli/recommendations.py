"""``ops-pipeline recommendations import FILE``: recommendations from a CSV or JSON file
(columns: :mod:`ops_pipeline.services.imports`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ops_pipeline.cli.common import DatabaseUrl, console, default_database, fail, open_database
from ops_pipeline.errors import DataError
from ops_pipeline.services.imports import REQUIRED, import_recommendations

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Recommendations from outside.")
EXIT_ROWS_REFUSED = 1


@app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(help="A .csv or .json file.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Store the recommendations of FILE for every account's next run. Columns: ticker, action
    (BUY_CALL|BUY_PUT), strategy_type (day_trade|swing_trade), confidence (0-1), volume_ratio, bar_ts
    (RFC 3339, UTC when no offset); optional feature_ts, created_at, underlying_price, source.

    A bad row is named by its line and field and not stored; the good rows are. Exits 1 when any
    row was refused, 2 when the file cannot be used at all. Importing the same file again adds nothing.
    """
    db = open_database(database_url, default=default_database(), migrate=True)
    try:
        result = import_recommendations(db, path)
    except DataError as exc:
        raise fail(f"{exc} (required columns: {', '.join(REQUIRED)})") from None
    for problem in result.refused:
        console.print(f"refused {problem}", markup=False, soft_wrap=True, style="red")
    console.print(f"{path}: {result.read} row(s): {result.stored} stored, {result.duplicates} already present, "
                  f"{len(result.refused)} refused", markup=False, soft_wrap=True)
    if result.refused:
        raise typer.Exit(EXIT_ROWS_REFUSED)
