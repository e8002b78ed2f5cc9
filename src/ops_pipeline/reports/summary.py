"""The multi-account report (read side): one dict, rendered as tables, JSON or CSV.

Money is rounded to cents here, so the same rows give the same report on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import FILLED, AccountRepository
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.adapters.market_data.quotes import DTE_BUCKETS, dte_bucket
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.values import OccSymbol, money
from ops_pipeline.reports.invariants import check_account, check_consistency, daily_loss_days


MODEL_MID_ERROR_PCT = {"0-1": 16.0, "2-6": 22.1, "7-30": 10.5, "31+": 8.5}
"""The quote model's median mid error against the real chains per DTE bucket, percent, for |delta|
0.30-0.60 with volatility from chains at least a day old: ``ops-pipeline data check-quotes`` on
``../shared/data`` (docs/quotes.md, 2026-11-21). Printed beside every modelled fill count."""
MOSTLY = 0.5


def modelled_fills_by_dte(executions: list[Any], closed: list[Any]) -> dict[str, int]:
    """Filled entries and exits priced on modelled quotes, per DTE bucket at the fill (exchange date)."""
    counts: Counter[str] = Counter()
    for e in executions:
        if e.quote_source == "modelled":
            days = (OccSymbol.parse(e.option_symbol).expiration - exchange_date(e.filled_at or e.simulated_ts)).days
            counts[DTE_BUCKETS[int(dte_bucket(days))]] += 1
    for p in closed:
        if p.exit_quote_source == "modelled" and p.closed_at is not None:
            counts[DTE_BUCKETS[int(dte_bucket((p.expiration_date - exchange_date(p.closed_at)).days))]] += 1
    return {bucket: counts[bucket] for bucket in DTE_BUCKETS if counts[bucket]}


def _dollars(value: Decimal | int | float | None) -> float | None:
    return None if value is None else float(money(value))


def max_drawdown(equity: list[Decimal]) -> tuple[Decimal, float]:
    """Largest peak-to-trough fall of an equity series: (dollars, percent of the peak)."""
    peak, worst, worst_pct = None, Decimal(0), 0.0
    for value in equity:
        peak = value if peak is None or value > peak else peak
        if peak - value > worst:
            worst, worst_pct = peak - value, float((peak - value) / peak * 100)
    return worst, worst_pct


def account_report(db: Database, config: AccountConfig) -> dict[str, Any]:
    """One account's figures over everything stored."""
    with db.read() as conn:
        repo = AccountRepository(conn, config.name)
        executions = [e for e in repo.executions() if e.status == FILLED]
        positions = repo.positions()
        rejections = repo.decisions_by_reason()
        curve = repo.equity_curve()
        problems = check_account(conn, config)
        inconsistencies = check_consistency(conn, config)
        days = daily_loss_days(conn, config)
    risk, spec = config.risk, config.account
    contracts = [e.contracts for e in executions]
    closed = [p for p in positions if p.status == "closed"]
    known = [p.realized_pnl for p in closed if p.realized_pnl is not None]
    open_positions = [p for p in positions if p.status != "closed"]
    equity = [s.equity for s in curve]
    drawdown, drawdown_pct = max_drawdown(equity)
    final_equity = equity[-1] if equity else spec.initial_balance
    fills = Counter(e.quote_source or "unknown" for e in executions)
    fills.update(p.exit_quote_source for p in closed if p.exit_quote_source)
    avg_notional = sum((e.notional for e in executions), Decimal(0)) / len(executions) if executions else Decimal(0)
    return {
        "account_name": config.name,
        "tier": risk.account_tier.value,
        "initial_balance": _dollars(spec.initial_balance),
        "final_equity": _dollars(final_equity),
        "return_pct": round(float((final_equity / spec.initial_balance - 1) * 100), 2),
        "expected_tier": config.expected_tier_for(final_equity).value,
        "trades": len(executions),
        "contracts_min": min(contracts, default=0),
        "contracts_avg": round(sum(contracts) / len(contracts), 2) if contracts else 0.0,
        "contracts_max": max(contracts, default=0),
        "contract_cap": risk.contract_cap,
        "capital_deployed": _dollars(sum((e.notional for e in executions), Decimal(0))),
        "avg_position_size": _dollars(avg_notional),
        "realized_pnl": _dollars(sum(known, Decimal(0))),
        "unrealized_pnl": _dollars(sum((p.unrealized_pnl or 0 for p in open_positions), Decimal(0))),
        "closed_positions": len(closed),
        "wins": sum(1 for v in known if v > 0),
        "win_rate_pct": round(100 * sum(1 for v in known if v > 0) / len(known), 1) if known else None,
        "open_positions": len(open_positions),
        "open_exposure": _dollars(sum((p.notional_value for p in open_positions), Decimal(0))),
        "max_drawdown": _dollars(drawdown),
        "max_drawdown_pct": round(drawdown_pct, 2),
        "exits": dict(sorted(Counter(p.exit_reason for p in closed).items())),
        "rejections": dict(sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0]))),
        "fills_by_quote": dict(sorted(fills.items())),
        "real_fill_snapshots": sorted({e.quote_snapshot for e in executions if e.quote_snapshot}),
        "modelled_fills_by_dte": (modelled := modelled_fills_by_dte(executions, closed)),
        "mostly_modelled_same_day": sum(fills.values()) > 0 and modelled.get("0-1", 0) > MOSTLY * sum(fills.values()),
        "risk_pct_day": risk.risk_pct_day,
        "risk_pct_swing": risk.risk_pct_swing,
        "limit_violations": problems,
        "inconsistencies": inconsistencies,
        "max_daily_loss": float(risk.max_daily_loss),
        "worst_day": min(days, key=lambda d: d["worst_pnl"]) if days else None,
        "halted_days": [d for d in days if d["halted_at"]],
    }


def tier_validation(accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed 002 "Tier Validation Report", over the whole run, with the configured expectations."""
    rows = []
    for a in accounts:
        balance = a["initial_balance"]
        rows.append({
            "account_name": a["account_name"],
            "expected_balance": balance,
            "expected_risk_pct": round(a["risk_pct_day"] * 100, 1),
            "tier_cap": a["contract_cap"],
            "avg_position_size": a["avg_position_size"],
            "actual_risk_pct": round(a["avg_position_size"] / balance * 100, 1) if balance else 0.0,
            "max_contracts_used": a["contracts_max"],
            "trades": a["trades"],
            "cap_respected": a["contracts_max"] <= a["contract_cap"],
        })
    return sorted(rows, key=lambda r: r["expected_balance"])


def build_report(db: Database, configs: list[AccountConfig], meta: dict[str, Any]) -> dict[str, Any]:
    accounts = [account_report(db, c) for c in configs]
    fills = Counter()
    for a in accounts:
        fills.update(a["fills_by_quote"])
    return {
        "meta": meta,
        "accounts": accounts,
        "tier_validation": tier_validation(accounts),
        "fills_by_quote": dict(sorted(fills.items())),
        "model_mid_error_pct": MODEL_MID_ERROR_PCT,
    }
