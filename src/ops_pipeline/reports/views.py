"""The read side behind every ``ops-pipeline report`` command and every dashboard page.

:func:`load_activity` reads each account's rows once, through its
:class:`~ops_pipeline.adapters.db.repositories.AccountRepository` (so every query carries the
account's ``account_name``), into pandas frames. The report functions below are pure: they take an
:class:`Activity` and a :class:`Period` and return a :class:`ReportTable` whose rows are plain
values (dollars as floats rounded to cents, percent as 25.0 for 25 %, times as ISO-8601 strings in
US/Eastern), so the terminal table, ``--format csv|json`` and the dashboard show the same numbers.

Where seed 002 or 003 has a query for a report, the report's seed columns are that query's
figures over the same rows: *every* row of ``dispatch_executions`` of the period counts as a trade
(the seed's ``COUNT(*)``), whatever the broker did with it; the extra columns (``filled``, P&L,
equity) say what became of them. A day is the exchange (US/Eastern) date of ``simulated_ts``; the
seeds' ``simulated_ts::date`` is the same date for every order placed in regular hours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import FILLED, AccountRepository, SharedRepository
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.values import money

ACTIVE_MINUTES = 15
SLOW_MINUTES = 60
"""Seed 002 "Account Health Check": a trade within 15 minutes is active, within an hour slow."""
RISK_TOLERANCE = 0.2
"""Seed 002 "Compare Risk Percentages Used": OK when the actual risk % is within ±20 % of the expected."""
OVER_TRADING_RATIO = 2.0
"""``report over-trading`` flags an account-day with more than this many times the accounts' median
trades that day (seed 003 "Monitoring & Alerts": trades per day should be similar across accounts)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a report: ``key`` in the rows, ``header`` shown, ``kind`` for formatting
    (``text``, ``int``, ``money`` dollars, ``signed`` dollars with a sign, ``pct`` percent, ``float``).
    ``terminal`` False: only in CSV, JSON and the dashboard (keeps the terminal table readable)."""

    key: str
    header: str
    kind: str = "text"
    terminal: bool = True


@dataclass(frozen=True, slots=True)
class ReportTable:
    """A report's rows, in display order, with the period and notes it was computed over."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    period: Period | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``{"report", "title", "period": {"start", "end"} | null, "rows": [...], "notes": [...]}``."""
        period = None if self.period is None else {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()}
        return {"report": self.name, "title": self.title, "period": period, "rows": self.rows, "notes": self.notes}


@dataclass(frozen=True, slots=True)
class Period:
    """Exchange days ``start`` to ``end``, both included (US/Eastern dates)."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"the period starts ({self.start}) after it ends ({self.end})")

    @property
    def label(self) -> str:
        return self.start.isoformat() if self.start == self.end else f"{self.start} to {self.end}"

    def covers(self, days: pd.Series) -> pd.Series:
        return (days >= self.start) & (days <= self.end)


@dataclass(frozen=True)
class AccountActivity:
    """One account's configuration and rows. Frames have a ``day`` column (exchange date) where
    they have a time; times are aware UTC."""

    config: AccountConfig
    state: str
    executions: pd.DataFrame
    positions: pd.DataFrame
    outcomes: pd.DataFrame
    decisions: pd.DataFrame
    equity: pd.DataFrame
    last_run_at: dt.datetime | None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def initial_balance(self) -> float:
        return float(self.config.account.initial_balance)

    def executions_in(self, period: Period) -> pd.DataFrame:
        e = self.executions
        return e[period.covers(e["day"])] if len(e) else e

    def equity_at_end_of(self, day: dt.date) -> pd.Series | None:
        """The last equity snapshot taken on or before ``day``, or None."""
        e = self.equity
        if not len(e):
            return None
        before = e[e["day"] <= day]
        return before.iloc[-1] if len(before) else None


@dataclass(frozen=True)
class Activity:
    """Every selected account's activity, smallest initial balance first."""

    accounts: list[AccountActivity]

    def account(self, name: str) -> AccountActivity:
        """Raises KeyError naming the known accounts."""
        for a in self.accounts:
            if a.name == name:
                return a
        raise KeyError(f"no account {name!r}; known: {', '.join(a.name for a in self.accounts)}")

    def days(self) -> list[dt.date]:
        """Exchange days with any execution, decision or equity snapshot, in order."""
        found: set[dt.date] = set()
        for a in self.accounts:
            for frame in (a.executions, a.decisions, a.equity):
                if len(frame):
                    found.update(d for d in frame["day"].unique() if isinstance(d, dt.date))
        return sorted(found)

    def latest_day(self, default: dt.date) -> dt.date:
        days = self.days()
        return days[-1] if days else default


def _frame(rows: Iterable[Any], times: Iterable[str] = ()) -> pd.DataFrame:
    frame = pd.DataFrame([dict(r._mapping) for r in rows])
    for column in times:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _with_day(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if len(frame):  # None where the time is missing
        frame["day"] = frame[column].dt.tz_convert(EXCHANGE_TZ).dt.date.astype(object).where(frame[column].notna(), None)
    else:
        frame["day"] = pd.Series(dtype=object)
    return frame


def _numeric(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for c in columns:
        if c in frame:
            frame[c] = pd.to_numeric(frame[c].map(lambda v: float(v) if isinstance(v, Decimal) else v), errors="coerce")
    return frame


def load_activity(db: Database, configs: list[AccountConfig]) -> Activity:
    """Read each account of ``configs`` through its own repository (one read transaction).

    Raises:
        DatabaseError: the database cannot be read.
    """
    accounts = []
    with db.read() as conn:
        states = SharedRepository(conn).account_states()
        for config in configs:
            repo = AccountRepository(conn, config.name)
            executions = _numeric(_with_day(_frame(repo.executions(), ("simulated_ts", "filled_at")), "simulated_ts"),
                                  "premium", "notional", "quality_score", "confidence")
            positions = _numeric(_frame(repo.positions(), ("opened_at", "closed_at")),
                                 "entry_price", "exit_price", "notional_value", "realized_pnl", "unrealized_pnl", "quality_score")
            outcomes = _numeric(_with_day(_frame(repo.outcomes(), ("opened_at", "closed_at")), "closed_at"),
                                "entry_price", "exit_price", "realized_pnl", "pnl_pct", "quality_score", "confidence", "hold_minutes")
            decisions = _frame(repo.decisions(), ("decided_at", "claimed_at"))
            if len(decisions):  # a claim in progress has no decision time yet: its day is the claim's
                decisions["at"] = decisions["decided_at"].fillna(decisions["claimed_at"])
            decisions = _with_day(decisions, "at")
            equity = _numeric(_with_day(_frame(repo.equity_curve(), ("taken_at",)), "taken_at"),
                              "equity", "cash", "open_exposure", "unrealized_pnl", "realized_pnl_today")
            last = repo.latest_run()
            known = states.get(config.name)
            accounts.append(AccountActivity(
                config=config, state=known.state if known is not None else config.account.state,
                executions=executions, positions=positions, outcomes=outcomes, decisions=decisions, equity=equity,
                last_run_at=last.started_at if last is not None else None,
            ))
    accounts.sort(key=lambda a: (a.initial_balance, a.name))
    return Activity(accounts)


# --- helpers --------------------------------------------------------------------------------------

def format_value(value: Any, kind: str, yes_no: tuple[str, str] = ("yes", "no")) -> str:
    """A cell as people read it: ``money`` $1,234.50, ``signed`` +$12.00 / −$12.00, ``pct`` 12.50,
    ``float`` four significant digits, ``int`` 1,234; None as "—", a bool as ``yes_no``."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return yes_no[0] if value else yes_no[1]
    if kind == "money":
        return f"${value:,.2f}"
    if kind == "signed":
        return f"{'−' if value < 0 else '+'}${abs(value):,.2f}"
    if kind == "pct":
        return f"{value:,.2f}"
    if kind == "float" and isinstance(value, float):
        return f"{value:,.4g}"
    if kind == "int" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _usd(value: Any) -> float:
    return float(money(Decimal(str(value)))) if value is not None and not pd.isna(value) else 0.0


def _round(value: float | None, places: int = 2) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), places)


def _et(ts: Any) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    return pd.Timestamp(ts).tz_convert(EXCHANGE_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _realized_in(a: AccountActivity, period: Period) -> pd.DataFrame:
    o = a.outcomes
    return o[period.covers(o["day"])] if len(o) else o


def _trade_figures(e: pd.DataFrame) -> dict[str, Any]:
    """The seed's aggregate columns over ``e`` (every row counts, as the seed's ``COUNT(*)``)."""
    n = len(e)
    return {
        "trades": n,
        "filled": int((e["status"] == FILLED).sum()) if n else 0,
        "capital": _usd(e["notional"].sum()) if n else 0.0,
        "avg_contracts": _round(e["contracts"].mean(), 4) if n else None,
        "unique_tickers": int(e["ticker"].nunique()) if n else 0,
    }


# --- the reports -----------------------------------------------------------------------------------

def daily(activity: Activity, period: Period) -> ReportTable:
    """Seed 002 "Daily Account Summary" (and seed 002 "Check Account Activity"): per account, trades,
    capital deployed, average contracts, tickers traded, first and last trade (ET), plus what
    filled and the realized P&L of the trades closed in the period (seed 003: "would need to join
    with actual fills for P&L")."""
    rows = []
    for a in activity.accounts:
        e = a.executions_in(period)
        f = _trade_figures(e)
        closed = _realized_in(a, period)
        rows.append({
            "account_name": a.name, "trades": f["trades"], "filled": f["filled"], "capital_deployed": f["capital"],
            "avg_contracts": f["avg_contracts"], "tickers_traded": f["unique_tickers"],
            "first_trade": _et(e["simulated_ts"].min()) if len(e) else None,
            "last_trade": _et(e["simulated_ts"].max()) if len(e) else None,
            "closed": len(closed), "realized_pnl": _usd(closed["realized_pnl"].sum()) if len(closed) else 0.0,
        })
    columns = (Column("account_name", "account"), Column("trades", "trades", "int"), Column("filled", "filled", "int"),
               Column("capital_deployed", "capital deployed", "money"), Column("avg_contracts", "avg contracts", "float"),
               Column("tickers_traded", "tickers", "int"), Column("first_trade", "first trade (ET)"),
               Column("last_trade", "last trade (ET)"), Column("closed", "closed", "int"),
               Column("realized_pnl", "realized P&L", "signed"))
    return ReportTable("daily", f"Daily account summary, {period.label}", columns, rows, period)


def compare(activity: Activity, period: Period) -> ReportTable:
    """Seed 002 "Compare Accounts Side-by-Side" with its ROLLUP ``TOTAL`` row, and beside it each
    account's standing at the end of the period: equity and % return on the initial balance, the
    last day's P&L (realized that day + unrealized, as the daily loss limit counts it) against
    ``max_daily_loss``, open positions and exposure against their limits."""
    rows = []
    for a in activity.accounts:
        e = a.executions_in(period)
        f = _trade_figures(e)
        closed = _realized_in(a, period)
        wins = int((closed["realized_pnl"] > 0).sum()) if len(closed) else 0
        snap = a.equity_at_end_of(period.end)
        equity = _usd(snap["equity"]) if snap is not None else a.initial_balance
        last_day = snap is not None and snap["day"] == period.end
        limits = a.config.risk
        rows.append({
            "account": a.name, "tier": limits.account_tier.value, "state": a.state,
            "trades": f["trades"], "filled": f["filled"], "capital": f["capital"], "avg_contracts": f["avg_contracts"],
            "unique_tickers": f["unique_tickers"],
            "closed": len(closed), "wins": wins, "realized_pnl": _usd(closed["realized_pnl"].sum()) if len(closed) else 0.0,
            "initial_balance": a.initial_balance, "equity": equity,
            "return_pct": _round((equity / a.initial_balance - 1) * 100),
            "day_pnl": _usd(snap["realized_pnl_today"] + snap["unrealized_pnl"]) if last_day else 0.0,
            "max_daily_loss": float(limits.max_daily_loss),
            "open_positions": int(snap["open_positions"]) if snap is not None else 0,
            "max_open_positions": limits.max_open_positions,
            "open_exposure": _usd(snap["open_exposure"]) if snap is not None else 0.0,
            "max_exposure": float(limits.max_notional_exposure),
        })
    in_period = [e for a in activity.accounts if len(e := a.executions_in(period))]
    total = _trade_figures(pd.concat(in_period, ignore_index=True) if in_period else pd.DataFrame())
    initial = sum(r["initial_balance"] for r in rows)
    equity = sum(r["equity"] for r in rows)
    rows.append({
        "account": "TOTAL", "tier": None, "state": None, "trades": total["trades"], "filled": total["filled"],
        "capital": total["capital"], "avg_contracts": total["avg_contracts"], "unique_tickers": total["unique_tickers"],
        "closed": sum(r["closed"] for r in rows), "wins": sum(r["wins"] for r in rows),
        "realized_pnl": _usd(sum(r["realized_pnl"] for r in rows)), "initial_balance": initial, "equity": _usd(equity),
        "return_pct": _round((equity / initial - 1) * 100) if initial else None,
        "day_pnl": _usd(sum(r["day_pnl"] for r in rows)), "max_daily_loss": None,
        "open_positions": sum(r["open_positions"] for r in rows), "max_open_positions": None,
        "open_exposure": _usd(sum(r["open_exposure"] for r in rows)), "max_exposure": None,
    })
    columns = (Column("account", "account"), Column("tier", "tier", terminal=False), Column("state", "state", terminal=False),
               Column("trades", "trades", "int"), Column("capital", "capital", "money"),
               Column("avg_contracts", "avg contracts", "float"), Column("unique_tickers", "tickers", "int"),
               Column("realized_pnl", "realized P&L", "signed"), Column("equity", "equity", "money"),
               Column("return_pct", "return %", "pct"), Column("day_pnl", "day P&L", "signed"),
               Column("max_daily_loss", "loss limit", "money"), Column("open_positions", "open", "int"),
               Column("max_open_positions", "max open", "int", terminal=False), Column("open_exposure", "exposure", "money"),
               Column("max_exposure", "max exposure", "money", terminal=False))
    return ReportTable("compare", f"Accounts side by side, {period.label}", columns, rows, period,
                       [f"equity, day P&L, open positions and exposure as of the last snapshot on or before {period.end}"])


def over_time(activity: Activity, period: Period) -> ReportTable:
    """Seed 002 "Account Performance Over Time": per account per day (newest first), trades and
    capital used, with the day's realized P&L and the equity at the day's last snapshot."""
    rows = []
    for day in reversed([d for d in activity.days() if period.start <= d <= period.end]):
        for a in activity.accounts:
            e = a.executions_in(Period(day, day))
            closed = _realized_in(a, Period(day, day))
            snap = a.equity_at_end_of(day)
            if not len(e) and not len(closed) and (snap is None or snap["day"] != day):
                continue
            equity = _usd(snap["equity"]) if snap is not None else a.initial_balance
            rows.append({"account_name": a.name, "trade_date": day.isoformat(), "trades": len(e),
                         "capital_used": _usd(e["notional"].sum()) if len(e) else 0.0,
                         "realized_pnl": _usd(closed["realized_pnl"].sum()) if len(closed) else 0.0,
                         "equity": equity, "return_pct": _round((equity / a.initial_balance - 1) * 100)})
    columns = (Column("trade_date", "date"), Column("account_name", "account"), Column("trades", "trades", "int"),
               Column("capital_used", "capital used", "money"), Column("realized_pnl", "realized P&L", "signed"),
               Column("equity", "equity at close", "money"), Column("return_pct", "return %", "pct"))
    return ReportTable("over-time", f"Performance over time, {period.label}", columns, rows, period)


def risk(activity: Activity, period: Period) -> ReportTable:
    """Seed 002 "Compare Risk Percentages Used": average position size as a percent of the initial
    balance against the tier's expected risk %, OK within ±20 %. The expectation is the account's
    configured ``risk_pct_day`` / ``risk_pct_swing``, weighted by the period's trades of each kind
    (``risk_pct_day`` when it has none); the seed's hard-coded 25/12/4/1 % were the tiers' defaults."""
    rows = []
    for a in activity.accounts:
        e = a.executions_in(period)
        cfg = a.config.risk
        if len(e):
            expected = float((e["strategy_type"] == "day_trade").map({True: cfg.risk_pct_day, False: cfg.risk_pct_swing}).mean())
        else:
            expected = cfg.risk_pct_day
        avg = float(e["notional"].mean()) if len(e) else 0.0
        actual = avg / a.initial_balance
        ok = len(e) > 0 and expected * (1 - RISK_TOLERANCE) <= actual <= expected * (1 + RISK_TOLERANCE)
        rows.append({"account_name": a.name, "balance": a.initial_balance, "expected_risk_pct": _round(expected * 100),
                     "actual_avg_position": _usd(avg), "actual_risk_pct": _round(actual * 100), "trades": len(e),
                     "status": "OK" if ok else ("no trades" if not len(e) else "off target")})
    columns = (Column("account_name", "account"), Column("balance", "balance", "money"),
               Column("expected_risk_pct", "expected risk %", "pct"), Column("actual_avg_position", "avg position", "money"),
               Column("actual_risk_pct", "actual risk %", "pct"), Column("trades", "trades", "int"), Column("status", "status"))
    return ReportTable("risk", f"Risk % used against the tier's expectation, {period.label}", columns, rows, period,
                       ["OK within ±20 % of the expected risk % (seed 002); a position is sized on equity, capped by "
                        "contracts and buying power, so a small account's cap can keep it under target"])


def contracts(activity: Activity, period: Period) -> ReportTable:
    """Seed 002 "Check Contract Counts by Tier": min, average and max contracts per order against
    the account's cap (``max_contracts_per_trade`` or ``max_contracts``)."""
    rows = []
    for a in activity.accounts:
        e = a.executions_in(period)
        e = e[e["contracts"].notna()] if len(e) else e
        cap = a.config.risk.contract_cap
        most = int(e["contracts"].max()) if len(e) else None
        rows.append({"account_name": a.name, "min_contracts": int(e["contracts"].min()) if len(e) else None,
                     "avg_contracts": _round(e["contracts"].mean(), 4) if len(e) else None, "max_contracts": most,
                     "tier_cap": cap, "orders": len(e), "within_cap": most is None or most <= cap})
    columns = (Column("account_name", "account"), Column("min_contracts", "min", "int"), Column("avg_contracts", "avg", "float"),
               Column("max_contracts", "max", "int"), Column("tier_cap", "cap", "int"), Column("orders", "orders", "int"),
               Column("within_cap", "within cap"))
    return ReportTable("contracts", f"Contracts per order against the tier cap, {period.label}", columns, rows, period)


def tier_validation(activity: Activity, period: Period) -> ReportTable:
    """Seed 002 "Tier Validation Report": per account, smallest first, the expected balance, risk %
    (configured ``risk_pct_day``) and contract cap against the period's average notional, the risk
    % it means, the most contracts used and whether the cap held."""
    rows = []
    for a in activity.accounts:
        e = a.executions_in(period)
        avg = float(e["notional"].mean()) if len(e) else 0.0
        most = int(e["contracts"].max()) if len(e) else 0
        cap = a.config.risk.contract_cap
        rows.append({"account_name": a.name, "expected_balance": a.initial_balance,
                     "expected_risk_pct": _round(a.config.risk.risk_pct_day * 100, 1), "tier_cap": cap,
                     "avg_position_size": _usd(avg), "actual_risk_pct": _round(avg / a.initial_balance * 100, 1),
                     "max_contracts_used": most, "trades": len(e), "cap_respected": most <= cap})
    columns = (Column("account_name", "account"), Column("expected_balance", "expected balance", "money"),
               Column("expected_risk_pct", "expected risk %", "pct"), Column("tier_cap", "tier cap", "int"),
               Column("avg_position_size", "avg position", "money"), Column("actual_risk_pct", "actual risk %", "pct"),
               Column("max_contracts_used", "max contracts", "int"), Column("trades", "trades", "int"),
               Column("cap_respected", "cap respected"))
    return ReportTable("tier-validation", f"Tier validation (seed 002), {period.label}", columns, rows, period)


def over_trading(activity: Activity, period: Period) -> ReportTable:
    """Per account and day: trades, the most on one ticker against ``max_trades_per_ticker_per_day``,
    the ticker-limit and cooldown rejections, and the trades against the accounts' median that day.
    ``over-trading`` when one ticker passed its daily limit or the account traded more than
    :data:`OVER_TRADING_RATIO` × the median (seed 003: trades per day should be similar across accounts)."""
    rows = []
    for day in [d for d in activity.days() if period.start <= d <= period.end]:
        one = Period(day, day)
        counts = {a.name: len(a.executions_in(one)) for a in activity.accounts}
        median = float(pd.Series(list(counts.values())).median()) if counts else 0.0
        for a in activity.accounts:
            e = a.executions_in(one)
            d = a.decisions
            d = d[(d["day"] == day)] if len(d) else d
            per_ticker = e.groupby("ticker").size() if len(e) else pd.Series(dtype=int)
            limit = a.config.risk.max_trades_per_ticker_per_day
            most = int(per_ticker.max()) if len(per_ticker) else 0
            verdict = "over-trading" if most > limit or (median > 0 and counts[a.name] > OVER_TRADING_RATIO * median) else "OK"
            rows.append({"trade_date": day.isoformat(), "account_name": a.name, "trades": counts[a.name],
                         "accounts_median": median, "most_on_one_ticker": most,
                         "ticker": str(per_ticker.idxmax()) if len(per_ticker) else None, "ticker_limit": limit,
                         "ticker_limit_rejections": int((d["reason_code"] == "ticker_daily_limit").sum()) if len(d) else 0,
                         "cooldown_rejections": int((d["reason_code"] == "ticker_cooldown").sum()) if len(d) else 0,
                         "status": verdict})
    columns = (Column("trade_date", "date"), Column("account_name", "account"), Column("trades", "trades", "int"),
               Column("accounts_median", "median of accounts", "float"), Column("most_on_one_ticker", "most on a ticker", "int"),
               Column("ticker", "ticker"), Column("ticker_limit", "ticker limit", "int"),
               Column("ticker_limit_rejections", "ticker-limit rejections", "int"),
               Column("cooldown_rejections", "cooldown rejections", "int"), Column("status", "status"))
    return ReportTable("over-trading", f"Over-trading, {period.label}", columns, rows, period,
                       [f"over-trading: a ticker past its daily limit, or more than {OVER_TRADING_RATIO:g}× the accounts' median trades that day"])


def account_trades(activity: Activity, name: str, period: Period, limit: int = 10) -> ReportTable:
    """Seed 002 "Query Single Account Performance": the account's latest ``limit`` orders in the
    period, newest first, with what became of each (fill, exit, realized P&L).

    Raises:
        KeyError: no such account.
    """
    a = activity.account(name)
    e = a.executions_in(period)
    e = e.sort_values(["simulated_ts", "id"], ascending=False).head(limit) if len(e) else e
    p = a.positions.set_index("execution_id") if len(a.positions) else pd.DataFrame()
    rows = []
    for _, r in e.iterrows():
        pos = p.loc[r["id"]] if len(p) and r["id"] in p.index else None
        rows.append({"simulated_ts": _et(r["simulated_ts"]), "ticker": r["ticker"], "action": r["action"],
                     "option_symbol": r["option_symbol"], "contracts": int(r["contracts"]), "premium": _usd(r["premium"]),
                     "notional": _usd(r["notional"]), "status": r["status"],
                     "quality_score": _round(r.get("quality_score"), 1),
                     "position": None if pos is None else pos["status"],
                     "exit_reason": None if pos is None else pos["exit_reason"],
                     "realized_pnl": None if pos is None or pd.isna(pos["realized_pnl"]) else _usd(pos["realized_pnl"])})
    columns = (Column("simulated_ts", "placed (ET)"), Column("ticker", "ticker"), Column("action", "action"),
               Column("option_symbol", "contract"), Column("contracts", "contracts", "int"), Column("premium", "premium", "money"),
               Column("notional", "notional", "money"), Column("status", "order"), Column("quality_score", "quality", "float"),
               Column("position", "position"), Column("exit_reason", "exit"), Column("realized_pnl", "realized P&L", "signed"))
    return ReportTable("account", f"{name}: latest {limit} orders, {period.label}", columns, rows, period)


def health(activity: Activity, at: dt.datetime) -> ReportTable:
    """Seed 002 "Account Health Check" at ``at`` (aware): the last trade and the wall minutes since
    it, active (≤ 15), slow (≤ 60) or stale, as the seed judges; beside it the last run of any kind,
    which ``ops-pipeline health`` judges in market minutes (a quiet market is not stale there)."""
    rows = []
    for a in activity.accounts:
        e = a.executions[a.executions["simulated_ts"] <= pd.Timestamp(at)] if len(a.executions) else a.executions
        last = e["simulated_ts"].max() if len(e) else None
        minutes = None if last is None else round((pd.Timestamp(at) - last).total_seconds() / 60, 1)
        status = "stale" if minutes is None else "active" if minutes <= ACTIVE_MINUTES else "slow" if minutes <= SLOW_MINUTES else "stale"
        rows.append({"account_name": a.name, "state": a.state, "last_trade": _et(last), "minutes_since_last_trade": minutes,
                     "status": status, "last_run": _et(a.last_run_at)})
    columns = (Column("account_name", "account"), Column("state", "state"), Column("last_trade", "last trade (ET)"),
               Column("minutes_since_last_trade", "minutes since", "float"), Column("status", "status"),
               Column("last_run", "last run (ET)"))
    return ReportTable("health", f"Account health at {_et(pd.Timestamp(at))} ET", columns, rows, None,
                       ["judged from trades as seed 002 does; `ops-pipeline health` judges from runs in market minutes"])


def positions(activity: Activity, name: str, *, open_: bool) -> ReportTable:
    """The account's open (``open``/``closing``) or closed positions, newest first: contract,
    contracts, entry and exit price (dollars per share), notional, stop/target, exit reason, P&L.

    Raises:
        KeyError: no such account.
    """
    a = activity.account(name)
    p = a.positions
    if len(p):
        p = p[p["status"] != "closed"] if open_ else p[p["status"] == "closed"]
        p = p.sort_values(["opened_at", "id"], ascending=False)
    rows = [{"opened_at": _et(r["opened_at"]), "closed_at": _et(r["closed_at"]), "option_symbol": r["option_symbol"],
             "strategy_type": r["strategy_type"], "contracts": int(r["contracts"]), "entry_price": _usd(r["entry_price"]),
             "exit_price": None if pd.isna(r["exit_price"]) else _usd(r["exit_price"]),
             "notional_value": _usd(r["notional_value"]), "status": r["status"], "exit_reason": r["exit_reason"],
             "pnl": _usd(r["unrealized_pnl"] if open_ else r["realized_pnl"]) if not pd.isna(
                 r["unrealized_pnl"] if open_ else r["realized_pnl"]) else None}
            for _, r in (p.iterrows() if len(p) else iter(()))]
    columns = (Column("opened_at", "opened (ET)"), *(() if open_ else (Column("closed_at", "closed (ET)"),)),
               Column("option_symbol", "contract"), Column("strategy_type", "kind"), Column("contracts", "contracts", "int"),
               Column("entry_price", "entry", "money"), *(() if open_ else (Column("exit_price", "exit", "money"),)),
               Column("notional_value", "notional", "money"), Column("status", "status"),
               *(() if open_ else (Column("exit_reason", "exit reason"),)),
               Column("pnl", "unrealized P&L" if open_ else "realized P&L", "signed"))
    return ReportTable("positions", f"{name}: {'open' if open_ else 'closed'} positions", columns, rows)
