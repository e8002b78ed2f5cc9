"""``ops-pipeline paper-exchange serve``: the simulated broker on 127.0.0.1 with Alpaca's HTTP API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.market_data.calendar import from_exchange
from ops_pipeline.bootstrap import ExchangeAccount, build_paper_exchange
from ops_pipeline.cli.common import console, default_data_dir, fail, setup_logging, work_dir
from ops_pipeline.config.secrets import mask
from ops_pipeline.errors import ConfigError, DatabaseError, DataError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="The paper exchange: the simulated broker over Alpaca's HTTP API.")


@app.command("serve")
def serve(
    start: Annotated[str, typer.Option("--start", help='Market time to start at, US/Eastern: "YYYY-MM-DD HH:MM" '
                                                       "(a resumed state continues from its own time).")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    data: Annotated[Path | None, typer.Option("--data", help="Data folder (bars_1min/, option_chains/).")] = None,
    speed: Annotated[float, typer.Option("--speed", min=0, help="Market seconds per real second (0: frozen).")] = 1.0,
    account: Annotated[list[str] | None, typer.Option(
        "--account", help="NAME:KEY:BALANCE, repeatable; the secret is read from OPS_PIPELINE_EXCHANGE_SECRET_<NAME> "
                          "(never from the command line, which every user can read).")] = None,
    accounts_file: Annotated[Path | None, typer.Option(
        "--accounts-file", help="A chmod-600 JSON or TOML file listing accounts {name, key, secret, balance}.")] = None,
    state: Annotated[Path | None, typer.Option(
        "--state", help="SQLite file keeping books, orders, ids and market time across restarts "
                        "(default: .ops-pipeline/paper-exchange.db).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start the state over instead of resuming it.")] = False,
) -> None:
    """Serve the simulated broker on 127.0.0.1 with Alpaca's Trading API v2 paths, one account per key.
    Without --account or --accounts-file: the configured accounts with their secrets from the secret store.
    A restart resumes the state file: books, orders, order ids and market time."""
    try:
        begin = from_exchange(dt.datetime.strptime(start, "%Y-%m-%d %H:%M"))
    except ValueError:
        raise fail(f'--start must be "YYYY-MM-DD HH:MM" (US/Eastern), not {start!r}') from None
    state_path = state or work_dir() / "paper-exchange.db"
    try:
        accounts = [ExchangeAccount.parse(a) for a in account or []]
        if accounts_file is not None:
            accounts += ExchangeAccount.from_file(accounts_file)
        setup_logging(state_path.parent / "paper-exchange.log")
        exchange, _, served, resumed = build_paper_exchange(
            data_dir=data or default_data_dir(), start=begin, speed=speed, accounts=accounts, state_path=state_path,
            fresh=fresh)
    except (ConfigError, DataError, DatabaseError) as exc:
        raise fail(str(exc)) from None
    try:
        running = serve_in_thread(exchange, port=port)
    except (OSError, RuntimeError) as exc:
        raise fail(f"cannot listen on 127.0.0.1:{port}: {exc}") from None
    since = f"resumed at market time {resumed:%Y-%m-%d %H:%M} UTC from {state_path}" if resumed else \
        f"market time from {start} ET, state in {state_path}"
    console.print(f"paper exchange listening on {running.url} ({since}, {speed}×)", soft_wrap=True, markup=False)
    for a in served:
        console.print(f"  {a.name}: key {mask(a.key)}, ${a.balance:,.2f}", soft_wrap=True, markup=False)
    console.file.flush()
    try:
        running.thread.join()
    except KeyboardInterrupt:
        running.stop()
