"""``ops-pipeline dashboard``: the accounts in a browser, read-only, over the same database the
runs write (SQLite or PostgreSQL). FastAPI serves four kinds of page rendered with Jinja2, each
with plotly charts; plotly.js is served from the installed plotly package, so nothing is fetched
from the internet and there is no build step. The same pages are written as static HTML by
:func:`write_site` (``replay --out``).

Pages: overview (``/``), one per account (``/accounts/{name}``), comparison (``/compare``) and
learnings (``/learnings``). Every number comes from :mod:`ops_pipeline.reports.views` and
:mod:`ops_pipeline.reports.learnings`, the read side the ``report`` commands print.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly
import plotly.graph_objects as go
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, TradingCalendar
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.errors import DatabaseError
from ops_pipeline.reports import figures, views
from ops_pipeline.reports.learnings import build_learnings, learnings_tables
from ops_pipeline.services.operations import account_statuses

logger = logging.getLogger(__name__)
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
"""plotly.js from the installed plotly package (no CDN)."""


@dataclass(frozen=True)
class Links:
    """Where each page is: server routes, or file names for a static site."""

    overview: str
    compare: str
    learnings: str
    plotly: str
    account: Callable[[str], str]


SERVER_LINKS = Links("/", "/compare", "/learnings", "/static/plotly.min.js", lambda name: f"/accounts/{name}")
STATIC_LINKS = Links("index.html", "compare.html", "learnings.html", "plotly.min.js", lambda name: f"account-{name}.html")


def _cell_class(value: Any, kind: str, key: str = "") -> str:
    """Red for a loss, green for a gain: signed dollars, and percentages of return or P&L (not a
    drawdown or a risk %)."""
    signed = kind == "signed" or (kind == "pct" and ("return" in key or "pnl" in key))
    if signed and isinstance(value, int | float) and not isinstance(value, bool):
        return "neg" if value < 0 else "pos" if value > 0 else ""
    return ""


def _chart(figure: go.Figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


class Site:
    """Renders the pages from the database on every call (so a page shows what the runs wrote).

    ``at``: when health is judged (aware; default: now). ``refresh``: seconds between reloads
    of a page in the browser, 0 for none.
    """

    def __init__(self, db: Database, configs: list[AccountConfig], *, links: Links = SERVER_LINKS, refresh: int = 0,
                 at: dt.datetime | None = None) -> None:
        self.db, self.configs, self.links, self.refresh, self.at = db, configs, links, refresh, at
        self.env = Environment(loader=PackageLoader("ops_pipeline.web", "templates"), autoescape=select_autoescape(["html"]))
        self.env.globals.update(fmt=views.format_value, cell_class=_cell_class)

    @property
    def account_names(self) -> list[str]:
        return [c.name for c in sorted(self.configs, key=lambda c: (c.account.initial_balance, c.name))]

    def _render(self, template: str, page: str, title: str, activity: views.Activity, **context: Any) -> str:
        days = activity.days()
        meta = (f"{self.db.redacted_url()} · {len(days)} exchange day(s) "
                f"{days[0] if days else ''}{' to ' + str(days[-1]) if len(days) > 1 else ''}"
                f"{f' · refreshes every {self.refresh} s' if self.refresh else ''}")
        return self.env.get_template(template).render(title=title, page=page, meta=meta, links=self.links,
                                                      refresh=self.refresh, account_names=self.account_names, **context)

    def _activity(self) -> views.Activity:
        return views.load_activity(self.db, self.configs)

    def _period(self, activity: views.Activity) -> views.Period:
        day = activity.latest_day(dt.datetime.now(EXCHANGE_TZ).date())
        return views.Period(day, day)

    def overview(self) -> str:
        """Accounts side by side: state, health, equity, the day's P&L against the loss limit,
        positions and exposure against their limits; % return per account on one chart."""
        activity = self._activity()
        compare = views.compare(activity, self._period(activity))
        at = self.at or dt.datetime.now(dt.UTC)
        health = {s.name: s.health for s in account_statuses(self.db, self.configs, at, TradingCalendar())}
        return self._render("overview.html", "overview", f"Accounts on {compare.period.end}", activity,
                            accounts=[r for r in compare.rows if r["account"] != "TOTAL"], compare=compare, health=health,
                            charts={"returns": _chart(figures.returns_figure(activity))})

    def account(self, name: str) -> str:
        """One account: equity with drawdown, daily P&L, positions, rejections, contracts against the
        cap, quality against outcome, trade timeline. Raises KeyError for an unknown account."""
        activity = self._activity()
        a = activity.account(name)
        return self._render("account.html", name, f"{name} ({a.config.risk.account_tier.value}, "
                            f"${a.initial_balance:,.0f})", activity,
                            open_positions=views.positions(activity, name, open_=True),
                            closed_positions=views.positions(activity, name, open_=False),
                            charts={"equity": _chart(figures.equity_drawdown_figure(a)),
                                    "daily_pnl": _chart(figures.daily_pnl_figure(a)),
                                    "rejections": _chart(figures.rejections_figure(a)),
                                    "contracts": _chart(figures.contracts_figure(a)),
                                    "quality": _chart(figures.quality_figure(a.outcomes, f"{name}: quality score against outcome")),
                                    "timeline": _chart(figures.timeline_figure(a))})

    def compare(self) -> str:
        """Tiers side by side over everything stored, risk used against expected, tier validation."""
        activity = self._activity()
        days = activity.days()
        period = views.Period(days[0], days[-1]) if days else self._period(activity)
        risk = views.risk(activity, period)
        learnings = build_learnings(activity)
        return self._render("compare.html", "compare", f"Tiers compared, {period.label}", activity,
                            compare=views.compare(activity, period), risk=risk,
                            tier_validation=views.tier_validation(activity, period),
                            contracts=views.contracts(activity, period),
                            charts={"tiers": _chart(figures.tiers_figure(learnings.accounts)),
                                    "risk": _chart(figures.risk_figure(risk.rows))})

    def learnings(self) -> str:
        """Seed 003's questions answered, the metric set, day versus swing, quality against outcome."""
        activity = self._activity()
        result = build_learnings(activity)
        metrics, tiers, strategies, quality, answers = learnings_tables(result)
        outcomes = [a.outcomes for a in activity.accounts if len(a.outcomes)]
        pooled = pd.concat(outcomes, ignore_index=True) if outcomes else pd.DataFrame()
        return self._render("learnings.html", "learnings", "Learnings (seed 003)", activity, metrics=metrics, tiers=tiers,
                            strategies=strategies, quality=quality, answers=answers,
                            charts={"buckets": _chart(figures.quality_buckets_figure(result.quality_buckets)),
                                    "quality": _chart(figures.quality_figure(pooled, "All accounts: quality score against outcome"))})


def create_app(site: Site) -> FastAPI:
    """The dashboard's routes over ``site`` (read-only)."""
    app = FastAPI(title="ops-pipeline dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(DatabaseError)
    @app.exception_handler(SQLAlchemyError)
    def unavailable(_request: Request, exc: Exception) -> HTMLResponse:
        """The database could not be read (restarting, locked, …): say so in one line, and keep
        reloading, so an open page comes back by itself."""
        logger.warning("dashboard: the database could not be read: %s", exc)
        refresh = f'<meta http-equiv="refresh" content="{site.refresh}">' if site.refresh else ""
        return HTMLResponse(f"<!doctype html><html><head>{refresh}<title>database unavailable</title></head><body>"
                            f"<p>ops-pipeline: the database could not be read ({html.escape(type(exc).__name__)}); "
                            f"{'retrying' if site.refresh else 'reload to retry'}.</p></body></html>", status_code=503)

    @app.get("/", response_class=HTMLResponse)
    def overview() -> str:
        return site.overview()

    @app.get("/accounts/{name}", response_class=HTMLResponse)
    def account(name: str) -> str:
        if name not in site.account_names:
            raise HTTPException(404, f"no account {name!r}")
        return site.account(name)

    @app.get("/compare", response_class=HTMLResponse)
    def compare() -> str:
        return site.compare()

    @app.get("/learnings", response_class=HTMLResponse)
    def learnings() -> str:
        return site.learnings()

    @app.get("/static/plotly.min.js")
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="application/javascript")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def write_site(db: Database, configs: list[AccountConfig], out_dir: Path, at: dt.datetime | None = None) -> list[Path]:
    """The dashboard's pages as static HTML in ``out_dir`` (``index.html``, ``account-NAME.html``,
    ``compare.html``, ``learnings.html``) with ``plotly.min.js`` beside them; links are relative."""
    out_dir.mkdir(parents=True, exist_ok=True)
    site = Site(db, configs, links=STATIC_LINKS, at=at)
    pages = {"index.html": site.overview, "compare.html": site.compare, "learnings.html": site.learnings}
    pages |= {STATIC_LINKS.account(name): (lambda n=name: site.account(n)) for name in site.account_names}
    written = []
    for file_name, render in pages.items():
        path = out_dir / file_name
        path.write_text(render(), encoding="utf-8")
        written.append(path)
    shutil.copyfile(PLOTLY_JS, out_dir / "plotly.min.js")
    return [*written, out_dir / "plotly.min.js"]
