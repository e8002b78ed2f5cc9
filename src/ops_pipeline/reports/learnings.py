"""What the four accounts teach (seed 003 "Expected Learnings"): the standard performance metrics
per account and tier, quality score against outcome, and each of the seed's questions answered
in one sentence from those numbers with the sample size beside it.

Sources of each figure (docs/learnings.md gives the formulas):

- daily returns: the account's equity at its last snapshot of each exchange day, against the
  previous day's (the first day against the initial balance);
- Sharpe and Sortino (annualised, 252 days, risk-free 0) and the daily max drawdown:
  empyrical-reloaded on those daily returns; the drawdown's dates from the same series;
- win rate, average win / loss, profit factor, expectancy, day versus swing: the closed trades
  (``ai_option_trades``), dollars;
- exposure time: the share of position-manager runs (equity snapshots) that found a position open;
- time to double: ln 2 / ln(1 + g) trading days at the geometric mean daily return g, with the
  range a 95 % interval on the mean daily return implies; below :data:`MIN_DAYS_FOR_DOUBLING`
  days it says "not enough data";
- quality score against outcome: buckets of :data:`QUALITY_EDGES`, and Spearman's rank correlation
  of score with P&L % (scipy), with its p-value.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import empyrical
import numpy as np
import pandas as pd
from scipy import stats

from ops_pipeline.reports.views import AccountActivity, Activity, Column, ReportTable

MIN_DAYS_FOR_DOUBLING = 20
"""Fewer exchange days than this and time to double is "not enough data"."""
MIN_TRADES_TO_CONCLUDE = 30
"""Fewer closed trades than this and an answer says the sample is too small to conclude."""
QUALITY_EDGES = (0.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
"""Quality score buckets (points of 100): [0, 50), [50, 60), … [90, 100]."""
TRADING_DAYS_PER_YEAR = 252
Z95 = 1.96


def daily_returns(a: AccountActivity) -> pd.Series:
    """Fractional return per exchange day (0.01 = 1 %), indexed by date, from the last equity
    snapshot of each day; the first day is measured against the initial balance. Empty without snapshots."""
    if not len(a.equity):
        return pd.Series(dtype=float)
    closes = a.equity.groupby("day")["equity"].last().astype(float)
    previous = closes.shift(1).fillna(a.initial_balance)
    returns = closes / previous - 1
    returns.index = pd.DatetimeIndex(pd.to_datetime(returns.index))
    return returns


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    """An empyrical figure, None where it is undefined (too few days, no downside)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = float(fn(*args, **kwargs))
    return value if math.isfinite(value) else None


def _drawdown_dates(returns: pd.Series) -> tuple[str | None, str | None]:
    if returns.empty:
        return None, None
    wealth = (1 + returns).cumprod()
    wealth = pd.concat([pd.Series([1.0], index=[wealth.index[0] - pd.Timedelta(days=1)]), wealth])
    trough = (wealth / wealth.cummax() - 1).idxmin()
    peak = wealth[:trough].idxmax()
    if wealth[trough] >= wealth[peak]:
        return None, None
    return peak.date().isoformat() if peak in returns.index else "start", trough.date().isoformat()


def time_to_double(returns: pd.Series) -> dict[str, Any]:
    """Trading days to double at the observed geometric mean daily return, with the range a 95 %
    interval on the mean daily return gives (None where that rate does not grow)."""
    n = len(returns)
    if n < MIN_DAYS_FOR_DOUBLING:
        return {"days": None, "low": None, "high": None, "n_days": n,
                "text": f"not enough data ({n} days; needs {MIN_DAYS_FOR_DOUBLING})"}
    growth = float(np.prod(1 + returns.to_numpy())) ** (1 / n) - 1
    half = Z95 * float(returns.std(ddof=1)) / math.sqrt(n)
    mean = float(returns.mean())

    def days(rate: float) -> float | None:
        return math.log(2) / math.log1p(rate) if rate > 0 else None

    best, worst = days(mean + half), days(mean - half)
    central = days(growth)
    if central is None:
        text = f"never at {growth * 100:+.3f} %/day ({n} days)"
    else:
        text = f"{central:,.0f} trading days at {growth * 100:+.3f} %/day (95 %: {best:,.0f} to " \
               f"{'never' if worst is None else f'{worst:,.0f}'}; {n} days)"
    return {"days": _r(central, 0), "low": _r(best, 0), "high": _r(worst, 0), "n_days": n, "text": text}


def _r(value: float | None, places: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), places)


def trade_metrics(pnl: pd.Series) -> dict[str, Any]:
    """Win rate (percent), average win and loss, profit factor (gross wins / gross losses),
    expectancy (mean P&L per trade), dollars, of the closed trades' realized P&L ``pnl``."""
    n = len(pnl)
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    gross_loss = -losses.sum()
    return {
        "closed_trades": n,
        "win_rate_pct": _r(100 * len(wins) / n, 1) if n else None,
        "avg_win": _r(wins.mean()) if len(wins) else None,
        "avg_loss": _r(losses.mean()) if len(losses) else None,
        "profit_factor": _r(wins.sum() / gross_loss) if gross_loss > 0 else None,
        "expectancy": _r(pnl.mean()) if n else None,
    }


def account_metrics(a: AccountActivity) -> dict[str, Any]:
    """The metric set of the module docstring for one account (dollars, percent)."""
    returns = daily_returns(a)
    final = float(a.equity["equity"].iloc[-1]) if len(a.equity) else a.initial_balance
    o = a.outcomes
    pnl = o["realized_pnl"].astype(float) if len(o) else pd.Series(dtype=float)
    peak, trough = _drawdown_dates(returns)
    by_strategy = {}
    for strategy in ("day_trade", "swing_trade"):
        part = o[o["strategy_type"] == strategy] if len(o) else o
        p = part["realized_pnl"].astype(float) if len(part) else pd.Series(dtype=float)
        by_strategy[strategy] = trade_metrics(p) | {
            "total_pnl": _r(p.sum()) if len(p) else 0.0,
            "mean_pnl_pct": _r(part["pnl_pct"].astype(float).mean()) if len(part) else None}
    exposure = float((a.equity["open_positions"] > 0).mean() * 100) if len(a.equity) else 0.0
    return {
        "account_name": a.name, "tier": a.config.risk.account_tier.value, "initial_balance": a.initial_balance,
        "final_equity": _r(final), "total_return": _r(final - a.initial_balance),
        "total_return_pct": _r((final / a.initial_balance - 1) * 100),
        **trade_metrics(pnl),
        "max_drawdown_pct": _r(-100 * (_quiet(empyrical.max_drawdown, returns) or 0.0)) if len(returns) else 0.0,
        "drawdown_peak": peak, "drawdown_trough": trough,
        "sharpe": _r(_quiet(empyrical.sharpe_ratio, returns, period="daily")) if len(returns) > 1 else None,
        "sortino": _r(_quiet(empyrical.sortino_ratio, returns, period="daily")) if len(returns) > 1 else None,
        "days": len(returns), "exposure_pct": _r(exposure, 1),
        "day_trades": by_strategy["day_trade"], "swing_trades": by_strategy["swing_trade"],
        "time_to_double": time_to_double(returns),
        "risk_pct_day": a.config.risk.risk_pct_day, "risk_pct_swing": a.config.risk.risk_pct_swing,
        "min_quality_score": a.config.risk.min_quality_score,
        "expected_tier": a.config.expected_tier_for(Decimal(str(final))).value,
    }


def quality_buckets(outcomes: pd.DataFrame) -> list[dict[str, Any]]:
    """Closed trades per quality-score bucket: trades, win rate (percent), mean P&L (dollars) and
    mean P&L % of premium."""
    if not len(outcomes) or outcomes["quality_score"].isna().all():
        return []
    scored = outcomes[outcomes["quality_score"].notna()]
    edges = [*QUALITY_EDGES[:-1], math.inf]  # the top bucket includes a perfect 100
    bins = pd.cut(scored["quality_score"].astype(float), edges, right=False)
    rows = []
    for interval, g in scored.groupby(bins, observed=True):
        pnl = g["realized_pnl"].astype(float)
        top = QUALITY_EDGES[-1] if math.isinf(interval.right) else interval.right
        rows.append({"bucket": f"{interval.left:g}-{top:g}", "trades": len(g),
                     "win_rate_pct": _r(100 * (pnl > 0).mean(), 1), "mean_pnl": _r(pnl.mean()),
                     "mean_pnl_pct": _r(g["pnl_pct"].astype(float).mean())})
    return rows


def quality_correlation(outcomes: pd.DataFrame) -> dict[str, Any]:
    """Spearman's rank correlation of quality score with P&L % of the closed trades: ``rho``,
    ``p_value`` (two-sided), ``n``; None figures below 3 trades or with a constant score."""
    scored = outcomes[outcomes["quality_score"].notna()] if len(outcomes) else outcomes
    n = len(scored)
    if n < 3 or scored["quality_score"].nunique() < 2:
        return {"rho": None, "p_value": None, "n": n}
    result = stats.spearmanr(scored["quality_score"].astype(float), scored["pnl_pct"].astype(float))
    return {"rho": _r(float(result.statistic), 3), "p_value": _r(float(result.pvalue), 4), "n": n}


@dataclass(frozen=True)
class Learnings:
    """Per-account metrics (smallest first), pooled and per-account quality analysis, and the
    answers to seed 003's questions."""

    accounts: list[dict[str, Any]]
    tiers: list[dict[str, Any]]
    quality_buckets: list[dict[str, Any]]
    quality_correlation: dict[str, Any]
    quality_by_account: dict[str, dict[str, Any]]
    answers: list[dict[str, str]]


def _pooled_outcomes(accounts: list[AccountActivity]) -> pd.DataFrame:
    frames = [a.outcomes for a in accounts if len(a.outcomes)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tier_metrics(activity: Activity) -> list[dict[str, Any]]:
    """Per tier (accounts of one tier pooled; smallest tier first): accounts, combined return %
    (summed equity on summed initial balances), and the trade metrics of their pooled closed trades."""
    by_tier: dict[str, list[AccountActivity]] = {}
    for a in activity.accounts:
        by_tier.setdefault(a.config.risk.account_tier.value, []).append(a)
    rows = []
    for tier, members in by_tier.items():
        initial = sum(a.initial_balance for a in members)
        final = sum(float(a.equity["equity"].iloc[-1]) if len(a.equity) else a.initial_balance for a in members)
        outcomes = _pooled_outcomes(members)
        pnl = outcomes["realized_pnl"].astype(float) if len(outcomes) else pd.Series(dtype=float)
        rows.append({"tier": tier, "accounts": ", ".join(a.name for a in members), "initial_balance": _r(initial),
                     "total_return_pct": _r((final / initial - 1) * 100), **trade_metrics(pnl)})
    return rows


def build_learnings(activity: Activity) -> Learnings:
    """Everything ``report learnings`` and the learnings page show."""
    accounts = [account_metrics(a) for a in activity.accounts]
    pooled = _pooled_outcomes(activity.accounts)
    by_account = {a.name: quality_correlation(a.outcomes) for a in activity.accounts}
    correlation = quality_correlation(pooled)
    buckets = quality_buckets(pooled)
    return Learnings(accounts, tier_metrics(activity), buckets, correlation, by_account,
                     _answers(accounts, buckets, correlation))


def _sample(n: int) -> str:
    return f"n = {n} closed trades" + ("" if n >= MIN_TRADES_TO_CONCLUDE else f", under {MIN_TRADES_TO_CONCLUDE}: too few to conclude")


def _answers(accounts: list[dict[str, Any]], buckets: list[dict[str, Any]], corr: dict[str, Any]) -> list[dict[str, str]]:
    """One sentence per seed 003 question, from the numbers (never assumed)."""
    if not accounts:
        return []
    small, large = accounts[0], accounts[-1]
    n_all = sum(a["closed_trades"] for a in accounts)
    if small is large:
        return [{"question": "Seed 003's questions", "answer": "Each compares accounts of different sizes: select more "
                 "than one account.", "sample": _sample(n_all)}]

    dd_ratio = small["max_drawdown_pct"] / large["max_drawdown_pct"] if large["max_drawdown_pct"] else None
    worse = small["total_return_pct"] <= large["total_return_pct"]
    q1 = (f"{small['account_name']} (risk {small['risk_pct_day'] * 100:g} % a day trade, {small['risk_pct_swing'] * 100:g} % a swing) "
          f"returned {small['total_return_pct']:+.2f} % with a {small['max_drawdown_pct']:.1f} % max daily drawdown and won "
          f"{_pct(small['win_rate_pct'])} of {small['closed_trades']} trades, against {large['account_name']}'s "
          f"{large['total_return_pct']:+.2f} %, {large['max_drawdown_pct']:.1f} % and {_pct(large['win_rate_pct'])} of "
          f"{large['closed_trades']}; "
          + (f"{dd_ratio:.1f}× the drawdown for a {'lower' if worse else 'higher'} return" if dd_ratio else "no drawdown to compare")
          + f"; time to grow $1K to $2K: {small['time_to_double']['text']}.")

    parts, day_better = [], 0
    for a in accounts:
        d, s = a["day_trades"], a["swing_trades"]
        if d["closed_trades"] and s["closed_trades"]:
            day_better += d["expectancy"] > s["expectancy"]
        parts.append(f"{a['tier']} day {_money(d['expectancy'])}/trade (n {d['closed_trades']}) vs swing "
                     f"{_money(s['expectancy'])} (n {s['closed_trades']})")
    compared = sum(1 for a in accounts if a["day_trades"]["closed_trades"] and a["swing_trades"]["closed_trades"])
    q2 = (f"Expectancy per closed trade — {'; '.join(parts)}: day trades did better in {day_better} of {compared} tiers "
          f"with both kinds" + (" (the same answer in every tier, so no sign that tiers need different strategies)"
                                if day_better in (0, compared) and compared else " (the tiers disagree)") + ".")

    if corr["rho"] is None:
        q3 = f"Not measurable: {corr['n']} scored closed trades."
    else:
        significant = corr["p_value"] < 0.05
        q3 = (f"Spearman ρ of quality score with P&L % is {corr['rho']:+.3f} (p = {corr['p_value']:.3f}, n = {corr['n']}): "
              + ("higher scores went with " + ("better" if corr["rho"] > 0 else "worse") + " outcomes"
                 if significant else "no evidence that higher scores meant better outcomes")
              + ("; by bucket, win rate " + ", ".join(f"{b['bucket']}: {_pct(b['win_rate_pct'])} of {b['trades']}" for b in buckets)
                 if buckets else "")
              + f"; every trade passed the threshold ({accounts[0]['min_quality_score']:g}), so trades below it are not observed.")

    crossed = [a for a in accounts if a["expected_tier"] != a["tier"]]
    q4 = ("Return by size: " + ", ".join(f"${a['initial_balance']:,.0f} {a['total_return_pct']:+.2f} % (drawdown "
                                         f"{a['max_drawdown_pct']:.1f} %)" for a in accounts)
          + ("; " + ", ".join(f"{a['account_name']} ended in the {a['expected_tier']} tier's range" for a in crossed)
             if crossed else "; no account's equity left its tier's range, so the breakpoints were not tested")
          + " — a replay with accounts at other balances (accounts.toml) measures them.")
    return [
        {"question": "Is 25% too aggressive for tiny accounts?", "answer": q1, "sample": _sample(small["closed_trades"] + large["closed_trades"])},
        {"question": "Do different tiers need different strategies?", "answer": q2, "sample": _sample(n_all)},
        {"question": "Do higher quality scores mean better outcomes? Is the score threshold appropriate?", "answer": q3,
         "sample": _sample(corr["n"])},
        {"question": "Where should the tier breakpoints be?", "answer": q4, "sample": _sample(n_all)},
    ]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} %"


def _money(value: float | None) -> str:
    return "—" if value is None else f"{'−' if value < 0 else '+'}${abs(value):,.2f}"


def learnings_tables(result: Learnings) -> list[ReportTable]:
    """The learnings as report tables: metrics per account, per tier, day versus swing, quality
    buckets, and the answers."""
    metrics = [{k: v for k, v in a.items() if not isinstance(v, dict)} | {"time_to_double": a["time_to_double"]["text"],
               "quality_rho": result.quality_by_account[a["account_name"]]["rho"],
               "quality_p_value": result.quality_by_account[a["account_name"]]["p_value"]} for a in result.accounts]
    strategies = [{"account_name": a["account_name"], "tier": a["tier"], "strategy": kind.replace("_trades", ""), **a[kind]}
                  for a in result.accounts for kind in ("day_trades", "swing_trades")]
    return [
        ReportTable("learnings", "Learnings per account (seed 003)", (
            Column("account_name", "account"), Column("tier", "tier", terminal=False),
            Column("total_return", "return $", "signed", terminal=False), Column("total_return_pct", "return %", "pct"),
            Column("closed_trades", "closed", "int"), Column("win_rate_pct", "win %", "pct"),
            Column("avg_win", "avg win", "signed"), Column("avg_loss", "avg loss", "signed"),
            Column("profit_factor", "PF", "float"), Column("expectancy", "expectancy", "signed"),
            Column("max_drawdown_pct", "max DD %", "pct"), Column("drawdown_peak", "DD from", terminal=False),
            Column("drawdown_trough", "DD to", terminal=False), Column("sharpe", "Sharpe", "float"),
            Column("sortino", "Sortino", "float"), Column("exposure_pct", "exposure %", "pct"),
            Column("days", "days", "int", terminal=False), Column("time_to_double", "time to double"),
            Column("quality_rho", "quality ρ", "float"), Column("quality_p_value", "p", "float", terminal=False)), metrics,
            notes=["PF profit factor; DD drawdown of daily equity; Sharpe and Sortino annualised on daily returns "
                   "(empyrical-reloaded); quality ρ: Spearman of score with P&L % (its p-value, DD dates and tier in CSV/JSON)"]),
        ReportTable("learnings-tiers", "Learnings per tier (its accounts' closed trades pooled)", (
            Column("tier", "tier"), Column("accounts", "accounts"), Column("initial_balance", "initial balance", "money"),
            Column("total_return_pct", "return %", "pct"), Column("closed_trades", "closed", "int"),
            Column("win_rate_pct", "win %", "pct"), Column("avg_win", "avg win", "signed"),
            Column("avg_loss", "avg loss", "signed"), Column("profit_factor", "PF", "float"),
            Column("expectancy", "expectancy", "signed")), result.tiers),
        ReportTable("learnings-strategies", "Day versus swing trades", (
            Column("account_name", "account"), Column("strategy", "kind"), Column("closed_trades", "closed", "int"),
            Column("win_rate_pct", "win rate %", "pct"), Column("expectancy", "expectancy", "signed"),
            Column("total_pnl", "total P&L", "signed"), Column("mean_pnl_pct", "mean P&L %", "pct")), strategies),
        ReportTable("learnings-quality", "Quality score against outcome (all accounts' closed trades)", (
            Column("bucket", "score"), Column("trades", "trades", "int"), Column("win_rate_pct", "win rate %", "pct"),
            Column("mean_pnl", "mean P&L", "signed"), Column("mean_pnl_pct", "mean P&L %", "pct")), result.quality_buckets,
            notes=[f"Spearman ρ {result.quality_correlation['rho']}, p {result.quality_correlation['p_value']}, "
                   f"n {result.quality_correlation['n']}"]),
        ReportTable("learnings-answers", "Seed 003's questions, answered from these numbers", (
            Column("question", "question"), Column("answer", "answer"), Column("sample", "sample")), result.answers),
    ]
