"""``ops-pipeline``: thin Typer commands over the services, one module per area.

- :mod:`.replay`: ``replay``;
- :mod:`.report`: ``report`` (the whole-run report) and ``report daily|compare|over-time|risk|contracts|health|
  tier-validation|over-trading|account|learnings``;
- :mod:`.dashboard`: ``dashboard`` (the web pages);
- :mod:`.sweep`: ``sweep GRID.toml`` (a replay per parameter combination, in parallel or on Dask);
- :mod:`.run`: ``run`` (one account live, once or on its schedule);
- :mod:`.exchange`: ``paper-exchange serve``;
- :mod:`.config`: ``config show|check|validate|diff|set|push|history``;
- :mod:`.admin`: ``db upgrade``, ``accounts list``;
- :mod:`.start`: ``start`` (every account on its schedule, supervised), ``worker`` (its processes);
- :mod:`.operations`: ``accounts enable|disable|pause|resume|pause-all|resume-all``, ``kill``,
  ``status``, ``health``, ``logs`` (``--target aws``: the EventBridge schedules and CloudWatch log groups);
- :mod:`.deploy`: ``deploy plan|apply|status|rollback|destroy`` (ECS tasks, schedules, logs, metrics on AWS);
- :mod:`.recommendations`: ``recommendations import``;
- :mod:`.data`: ``data check-quotes``, ``data lags``.

Help text is printed literally (no Rich markup: ``NAME:KEY:BALANCE`` is not an emoji code).
"""

from __future__ import annotations

import typer

from ops_pipeline.cli import (
    admin,
    config,
    dashboard,
    data,
    exchange,
    operations,
    recommendations,
    start,
    sweep,
)
from ops_pipeline.cli import deploy as deploy_cli
from ops_pipeline.cli import replay as replay_cli
from ops_pipeline.cli import report as report_cli
from ops_pipeline.cli import run as run_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Run several Alpaca paper accounts side by side.")
app.command("replay")(replay_cli.replay)
app.add_typer(report_cli.app, name="report")
app.command("dashboard")(dashboard.dashboard)
app.command("sweep")(sweep.sweep)
app.command("run")(run_cli.run_account)
app.command("start")(start.start)
app.command("worker", hidden=True)(start.worker)
app.command("status")(operations.status)
app.command("health")(operations.health)
app.command("logs")(operations.show_logs)
app.command("kill")(operations.kill)
app.add_typer(recommendations.app, name="recommendations")
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.accounts_app, name="accounts")
app.add_typer(config.app, name="config")
app.add_typer(exchange.app, name="paper-exchange")
app.add_typer(data.app, name="data")
app.add_typer(deploy_cli.app, name="deploy")


def main() -> None:
    app()
