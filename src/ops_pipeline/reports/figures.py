"""The dashboard's charts (plotly figures) built from the read side: no I/O here, only frames in,
figures out. Money in dollars; times in US/Eastern on the axes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ
from ops_pipeline.reports.views import AccountActivity, Activity

TEMPLATE = "plotly_white"


def _et(series: pd.Series) -> pd.Series:
    return series.dt.tz_convert(EXCHANGE_TZ).dt.strftime("%Y-%m-%d %H:%M")


def _empty(title: str, why: str) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title=title, template=TEMPLATE, height=260, xaxis={"visible": False}, yaxis={"visible": False})
    return figure


def returns_figure(activity: Activity) -> go.Figure:
    """% return on the initial balance per account at every equity snapshot, one line each; the x
    axis is the sequence of snapshot times (nights and weekends do not flatten the curves)."""
    figure = go.Figure()
    times: set[str] = set()
    for a in activity.accounts:
        e = a.equity
        if not len(e):
            continue
        x = _et(e["taken_at"])
        times.update(x)
        figure.add_scatter(x=x, y=(e["equity"] / a.initial_balance - 1) * 100, mode="lines",
                           name=f"{a.name} (${a.initial_balance:,.0f})")
    # one time axis for every account (accounts run at different minutes), in time order
    figure.update_layout(title="Return by account (% of the initial balance)", yaxis_title="return %",
                         xaxis={"type": "category", "categoryorder": "array", "categoryarray": sorted(times), "nticks": 10,
                                "title": "exchange time"},
                         hovermode="x unified", template=TEMPLATE, height=420)
    return figure


def equity_drawdown_figure(a: AccountActivity) -> go.Figure:
    """Equity (dollars) above, drawdown from the running peak (percent) below."""
    e = a.equity
    if not len(e):
        return _empty(f"{a.name}: equity", "no equity snapshots yet")
    x = _et(e["taken_at"])
    peak = e["equity"].cummax().clip(lower=a.initial_balance)
    drawdown = (e["equity"] / peak - 1) * 100
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06)
    figure.add_scatter(x=x, y=e["equity"], mode="lines", name="equity $", row=1, col=1)
    figure.add_scatter(x=x, y=drawdown, mode="lines", fill="tozeroy", name="drawdown %", line={"color": "#c0392b"}, row=2, col=1)
    figure.update_xaxes(type="category", nticks=10)
    figure.update_yaxes(title_text="equity $", row=1, col=1)
    figure.update_yaxes(title_text="drawdown %", row=2, col=1)
    figure.update_layout(title=f"{a.name}: equity and drawdown", template=TEMPLATE, height=460, hovermode="x unified")
    return figure


def daily_pnl_figure(a: AccountActivity) -> go.Figure:
    """Equity change per exchange day (dollars; the first day against the initial balance), bars
    green for a gain, red for a loss, with the daily loss limit as a line."""
    e = a.equity
    if not len(e):
        return _empty(f"{a.name}: daily P&L", "no equity snapshots yet")
    closes = e.groupby("day")["equity"].last()
    change = closes - closes.shift(1).fillna(a.initial_balance)
    figure = go.Figure(go.Bar(x=[d.isoformat() for d in change.index], y=change,
                              marker_color=["#27ae60" if v >= 0 else "#c0392b" for v in change], name="day P&L $"))
    limit = float(a.config.risk.max_daily_loss)
    figure.add_hline(y=-limit, line_dash="dash", line_color="#7f8c8d", annotation_text=f"loss limit −${limit:,.0f}")
    figure.update_layout(title=f"{a.name}: P&L per day (equity change)", yaxis_title="dollars", xaxis={"type": "category"},
                         template=TEMPLATE, height=340)
    return figure


def rejections_figure(a: AccountActivity) -> go.Figure:
    """Rejected recommendations per day, stacked by reason code."""
    d = a.decisions
    d = d[d["status"].isin(["rejected", "error"])] if len(d) else d
    if not len(d):
        return _empty(f"{a.name}: rejections", "no rejections")
    counts = d.groupby(["day", "reason_code"]).size().unstack(fill_value=0)
    figure = go.Figure([go.Bar(x=[x.isoformat() for x in counts.index], y=counts[code], name=str(code)) for code in counts.columns])
    figure.update_layout(barmode="stack", title=f"{a.name}: rejections by reason per day", yaxis_title="recommendations",
                         xaxis={"type": "category"}, template=TEMPLATE, height=340)
    return figure


def contracts_figure(a: AccountActivity) -> go.Figure:
    """Contracts per order, in order, against the account's cap."""
    e = a.executions
    if not len(e):
        return _empty(f"{a.name}: contracts", "no orders yet")
    figure = go.Figure(go.Bar(x=_et(e["simulated_ts"]), y=e["contracts"], name="contracts", text=e["ticker"]))
    cap = a.config.risk.contract_cap
    figure.add_hline(y=cap, line_dash="dash", line_color="#c0392b", annotation_text=f"cap {cap}")
    figure.update_layout(title=f"{a.name}: contracts per order against the cap", yaxis_title="contracts",
                         xaxis={"type": "category"}, template=TEMPLATE, height=320)
    return figure


def quality_figure(outcomes: pd.DataFrame, title: str) -> go.Figure:
    """Closed trades' quality score (x) against P&L % of premium (y), with a least-squares trend line."""
    o = outcomes[outcomes["quality_score"].notna()] if len(outcomes) else outcomes
    if not len(o):
        return _empty(title, "no closed trades with a quality score")
    x, y = o["quality_score"].astype(float), o["pnl_pct"].astype(float)
    figure = go.Figure(go.Scatter(x=x, y=y, mode="markers", name="closed trade", text=o["option_symbol"],
                                  marker={"color": np.where(y > 0, "#27ae60", "#c0392b"), "size": 9, "opacity": 0.75}))
    if x.nunique() > 1:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.array([x.min(), x.max()])
        figure.add_scatter(x=xs, y=slope * xs + intercept, mode="lines", name=f"trend ({slope:+.2f} %/point)",
                           line={"dash": "dash", "color": "#34495e"})
    figure.update_layout(title=title, xaxis_title="quality score", yaxis_title="P&L % of premium", template=TEMPLATE, height=380)
    return figure


def timeline_figure(a: AccountActivity) -> go.Figure:
    """Every closed and open position as a bar from open to close (now for open ones), coloured by P&L."""
    p = a.positions
    if not len(p):
        return _empty(f"{a.name}: trade timeline", "no positions yet")
    end = p["closed_at"].fillna(a.equity["taken_at"].max() if len(a.equity) else p["opened_at"].max())
    frame = pd.DataFrame({"start": p["opened_at"].dt.tz_convert(EXCHANGE_TZ).dt.tz_localize(None),
                          "end": end.dt.tz_convert(EXCHANGE_TZ).dt.tz_localize(None),
                          "label": p["option_symbol"] + " ×" + p["contracts"].astype(str),
                          "pnl": p["realized_pnl"].fillna(p["unrealized_pnl"]).fillna(0.0).astype(float)})
    figure = go.Figure()
    for _, r in frame.iterrows():
        figure.add_scatter(x=[r["start"], r["end"]], y=[r["label"], r["label"]], mode="lines+markers", showlegend=False,
                           line={"width": 6, "color": "#27ae60" if r["pnl"] > 0 else "#c0392b"},
                           hovertext=f"{r['label']}: {r['pnl']:+,.2f} $", hoverinfo="text")
    figure.update_layout(title=f"{a.name}: trade timeline (green gain, red loss)", template=TEMPLATE,
                         height=max(300, 22 * len(frame) + 120), xaxis_title="exchange time")
    return figure


def tiers_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Return %, win rate % and max drawdown % per account, grouped bars (learnings rows)."""
    names = [r["account_name"] for r in rows]
    figure = go.Figure([
        go.Bar(x=names, y=[r["total_return_pct"] for r in rows], name="return %"),
        go.Bar(x=names, y=[r["win_rate_pct"] or 0 for r in rows], name="win rate %"),
        go.Bar(x=names, y=[r["max_drawdown_pct"] for r in rows], name="max drawdown %"),
    ])
    figure.update_layout(barmode="group", title="Tiers side by side", yaxis_title="percent", template=TEMPLATE, height=380)
    return figure


def risk_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Actual against expected risk % per account (``report risk`` rows)."""
    names = [r["account_name"] for r in rows]
    figure = go.Figure([go.Bar(x=names, y=[r["expected_risk_pct"] for r in rows], name="expected risk %"),
                        go.Bar(x=names, y=[r["actual_risk_pct"] for r in rows], name="actual risk %")])
    figure.update_layout(barmode="group", title="Risk % used against the tier's expectation", yaxis_title="% of balance",
                         template=TEMPLATE, height=360)
    return figure


def quality_buckets_figure(buckets: list[dict[str, Any]]) -> go.Figure:
    """Win rate (bars) and mean P&L % (line) per quality-score bucket."""
    if not buckets:
        return _empty("Quality score buckets", "no closed trades with a quality score")
    x = [b["bucket"] for b in buckets]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_bar(x=x, y=[b["win_rate_pct"] for b in buckets], name="win rate %",
                   text=[f"n={b['trades']}" for b in buckets], secondary_y=False)
    figure.add_scatter(x=x, y=[b["mean_pnl_pct"] for b in buckets], name="mean P&L %", mode="lines+markers", secondary_y=True)
    figure.update_layout(title="Quality score buckets: win rate and mean P&L %", template=TEMPLATE, height=380,
                         xaxis={"type": "category", "title": "quality score"})
    return figure


def sweep_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """A sweep's combinations: return % (y) against max drawdown % (x), one colour per account,
    each point labelled with its settings (``ops-pipeline sweep`` rows)."""
    figure = go.Figure()
    for account in dict.fromkeys(r["account"] for r in rows):
        mine = [r for r in rows if r["account"] == account]
        figure.add_scatter(x=[r["max_drawdown_pct"] for r in mine], y=[r["return_pct"] for r in mine], mode="markers+text",
                           name=account, text=[str(r["combination"]) for r in mine], textposition="top center",
                           hovertext=[f"#{r['combination']} {r['settings']}: return {r['return_pct']:+.2f} %, "
                                      f"max DD {r['max_drawdown_pct']:.2f} %, {r['trades']} trades" for r in mine],
                           hoverinfo="text", marker={"size": 10})
    figure.update_layout(title="Sweep: return against max drawdown per combination (labels: combination #)",
                         xaxis_title="max drawdown %", yaxis_title="return %", template=TEMPLATE, height=520)
    return figure
