"""``ops-pipeline dashboard``: the web pages over a database, read-only (see :mod:`ops_pipeline.web.dashboard`)."""

from __future__ import annotations

from typing import Annotated

import typer

from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.cli.common import ConfigDir, DatabaseUrl, console, fail, open_database, work_dir
from ops_pipeline.cli.start import selected_configs
from ops_pipeline.config.loader import ConfigSource


def dashboard(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one, printed).")] = 8050,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (default: this machine only).")] = "127.0.0.1",
    refresh: Annotated[int, typer.Option("--refresh", min=0, help="Seconds between page reloads in the browser; 0: never.")] = 30,
    accounts: Annotated[str | None, typer.Option("--accounts", help="Comma-separated accounts (default: all).")] = None,
    database_url: DatabaseUrl = None,
    config_dir: ConfigDir = None,
) -> None:
    """Serve the dashboard (overview, one page per account, comparison, learnings) over a database,
    read-only; while `start` runs, every page shows what the runs wrote and reloads itself."""
    from ops_pipeline.web.dashboard import Site, create_app  # noqa: PLC0415 - plotly and Jinja2 only here

    configs = selected_configs(ConfigSource.from_settings(config_dir=config_dir), accounts)
    db = open_database(database_url, default=work_dir() / "replay.db", read_only=True)
    app = create_app(Site(db, configs, refresh=refresh))
    try:
        running = serve_in_thread(app, host=host, port=port)
    except (OSError, RuntimeError) as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc}") from None
    console.print(f"dashboard on {running.url}/ (database {db.redacted_url()}); Ctrl-C stops it",
                  soft_wrap=True, markup=False, highlight=False)
    console.file.flush()
    try:
        running.thread.join()
    except KeyboardInterrupt:
        running.stop()
