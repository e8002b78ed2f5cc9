"""The replay's ``equity.html``: each account's % return on its initial balance, one self-contained page."""

from __future__ import annotations

from pathlib import Path

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.reports.figures import returns_figure
from ops_pipeline.reports.views import load_activity


def write_equity_chart(db: Database, configs: list[AccountConfig], out_dir: Path) -> Path:
    """``equity.html`` in ``out_dir``: the dashboard's return chart as a self-contained page (works offline)."""
    path = out_dir / "equity.html"
    returns_figure(load_activity(db, configs)).write_html(path, include_plotlyjs=True, full_html=True)
    return path
