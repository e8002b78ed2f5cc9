"""Charts of a run: each account's equity curve as percent return on its initial balance."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import AccountRepository
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ
from ops_pipeline.config.models import AccountConfig


def equity_figure(db: Database, configs: list[AccountConfig]) -> go.Figure:
    """One line per account: equity at each position-manager run, as % of the initial balance.

    The x axis is the sequence of trading minutes (exchange time in the hover), so nights and
    weekends do not flatten the curves.
    """
    figure = go.Figure()
    for config in configs:
        with db.read() as conn:
            curve = AccountRepository(conn, config.name).equity_curve()
        base = float(config.account.initial_balance)
        labels = [s.taken_at.astimezone(EXCHANGE_TZ).strftime("%Y-%m-%d %H:%M") for s in curve]
        figure.add_scatter(x=labels, y=[(float(s.equity) / base - 1) * 100 for s in curve], mode="lines",
                           name=f"{config.name} (${base:,.0f})")
    figure.update_layout(title="Equity by account (% return on the initial balance)", xaxis_title="exchange time",
                         yaxis_title="return %", xaxis={"type": "category", "nticks": 12}, hovermode="x unified",
                         template="plotly_white")
    return figure


def write_equity_chart(db: Database, configs: list[AccountConfig], out_dir: Path) -> Path:
    """``equity.html`` in ``out_dir``: a self-contained page (works offline)."""
    path = out_dir / "equity.html"
    equity_figure(db, configs).write_html(path, include_plotlyjs=True, full_html=True)
    return path
