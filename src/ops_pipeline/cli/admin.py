"""``ops-pipeline db …`` and ``ops-pipeline accounts …``: the schema and the configured accounts."""

from __future__ import annotations

import typer

from ops_pipeline.cli.common import ConfigDir, DatabaseUrl, console, default_database, fail, open_database, table
from ops_pipeline.config.loader import ConfigSource, load_all
from ops_pipeline.errors import ConfigError

db_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Database schema.")
accounts_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Configured accounts.")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply every migration (alembic upgrade head); safe to run from two processes at once."""
    db = open_database(database_url, default=default_database(), migrate=True)
    console.print(f"migrated {db.redacted_url()}", markup=False)


@accounts_app.command("list")
def accounts_list(config_dir: ConfigDir = None) -> None:
    """The configured accounts and their effective limits."""
    try:
        configs = load_all(ConfigSource.from_settings(config_dir=config_dir))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    t = table(None, "account", "tier", "balance", "schedule", "state", ("max exposure", True), ("max positions", True),
              ("contract cap", True), ("daily loss", True), "on daily loss", "risk day/swing", "parameters from")
    for c in configs:
        r, s = c.risk, c.account.schedule
        t.add_row(c.name, r.account_tier.value, f"${c.account.initial_balance:,.0f}",
                  f"every {s.every_minutes} min +{s.offset_minutes}", c.account.state, f"${r.max_notional_exposure:,.0f}",
                  str(r.max_open_positions), str(r.contract_cap), f"${r.max_daily_loss:,.0f}", r.daily_loss_action.value,
                  f"{r.risk_pct_day:.0%}/{r.risk_pct_swing:.0%}", c.parameter_source)
    console.print(t)
