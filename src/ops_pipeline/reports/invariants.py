"""Checks that an account's stored rows respect its own limits and are consistent, at every instant.

Read from the database only, so they hold for any run (replay or live) and any backend.

Limits (:func:`check_account`), over every order placed (filled or still unsettled):

- contracts per execution ≤ the contract cap;
- open positions ≤ ``max_open_positions`` and open notional ≤ ``max_notional_exposure`` just after
  every entry (positions open from their order until they close);
- no two trades of one ticker inside ``ticker_cooldown_minutes``;
- at most ``max_trades_per_ticker_per_day`` trades per ticker per exchange day;
- the daily loss latch: no entry on an exchange day at or after the first moment the day's loss
  reached ``max_daily_loss`` — by the stored latch, or by any equity snapshot whose realized + unrealized
  P&L (or realized P&L alone) was at or below the limit — whatever the P&L did after.

Consistency (:func:`check_consistency`): one position per filled execution; no position without a
filled execution unless adopted from the broker; no closed position without an exit price unless the
broker no longer held it; no order left unsettled. :func:`compare_holdings` compares the broker's
holdings with the database's open contracts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from ops_pipeline.adapters.db.repositories import FILLED, LIVE_EXECUTION_STATUSES, AccountRepository
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.gates import daily_loss_reached


def latch_times(conn: Connection, config: AccountConfig) -> dict[dt.date, dt.datetime]:
    """Per exchange date, the first moment the day's loss reached the limit by any stored record."""
    repo = AccountRepository(conn, config.name)
    limit = Decimal(str(config.risk.max_daily_loss))
    first: dict[dt.date, dt.datetime] = {}
    for halt in repo.daily_loss_halts():
        first[halt.trading_date] = halt.halted_at
    for s in repo.equity_curve():
        if daily_loss_reached(s.realized_pnl_today, s.unrealized_pnl, limit):
            day = exchange_date(s.taken_at)
            first[day] = min(first.get(day, s.taken_at), s.taken_at)
    return first


def check_account(conn: Connection, config: AccountConfig) -> list[str]:
    """Every limit breach in one account's rows, as readable lines (empty = all respected)."""
    cfg = config.risk
    repo = AccountRepository(conn, config.name)
    placed = [e for e in repo.executions() if e.status in LIVE_EXECUTION_STATUSES]
    positions = repo.positions()
    problems = [f"execution {e.id}: {e.contracts} contracts > cap {cfg.contract_cap}" for e in placed
                if e.contracts > cfg.contract_cap]

    closes = {p.execution_id: p.closed_at for p in positions}
    for e in placed:
        live = [o for o in placed if o.simulated_ts <= e.simulated_ts
                and (closes.get(o.id) is None or closes[o.id] > e.simulated_ts)]
        exposure = sum((o.notional for o in live), Decimal(0))
        if len(live) > cfg.max_open_positions:
            problems.append(f"{_et(e.simulated_ts)}: {len(live)} open positions > {cfg.max_open_positions}")
        if exposure > Decimal(str(cfg.max_notional_exposure)):
            problems.append(f"{_et(e.simulated_ts)}: exposure {exposure} > {cfg.max_notional_exposure}")

    last: dict[str, dt.datetime] = {}
    per_day: Counter[tuple[str, dt.date]] = Counter()
    for e in placed:
        previous = last.get(e.ticker)
        if previous is not None and (e.simulated_ts - previous).total_seconds() < cfg.ticker_cooldown_minutes * 60:
            problems.append(f"{e.ticker} traded at {_et(previous)} and {_et(e.simulated_ts)}, inside the cooldown")
        last[e.ticker] = e.simulated_ts
        per_day[(e.ticker, exchange_date(e.simulated_ts))] += 1
    problems += [f"{t} traded {n} times on {d}" for (t, d), n in per_day.items() if n > cfg.max_trades_per_ticker_per_day]

    latched = latch_times(conn, config)
    for e in placed:
        at = latched.get(exchange_date(e.simulated_ts))
        if at is not None and e.simulated_ts >= at:
            problems.append(f"{_et(e.simulated_ts)}: {e.ticker} entered after the day's loss reached "
                            f"{cfg.max_daily_loss:.2f} at {_et(at)}")
    return problems


def check_consistency(conn: Connection, config: AccountConfig) -> list[str]:
    """Rows that cannot all be true at once, as readable lines (empty = consistent)."""
    repo = AccountRepository(conn, config.name)
    executions = repo.executions()
    filled = {e.id for e in executions if e.status == FILLED}
    positions = repo.positions()
    per_execution = Counter(p.execution_id for p in positions if p.execution_id is not None)
    problems = [f"execution {e}: {per_execution[e]} positions (expected 1)" for e in sorted(filled) if per_execution[e] != 1]
    for p in positions:
        if p.execution_id is None and not (p.flags or "").startswith("adopted"):
            problems.append(f"position {p.id} {p.option_symbol}: no execution and not adopted from the broker")
        if p.execution_id is not None and p.execution_id not in filled:
            problems.append(f"position {p.id}: its execution {p.execution_id} is not filled")
        if p.status == "closed" and p.realized_pnl is None and p.exit_reason != "not_at_broker":
            problems.append(f"position {p.id} closed ({p.exit_reason}) without a P&L")
    problems += [f"execution {e.id} ({e.client_order_id}) still {e.status}" for e in executions
                 if e.status not in (FILLED, "rejected", "expired")]
    return problems


def open_contracts(conn: Connection, account_name: str) -> dict[str, int]:
    """Contracts per option symbol the database holds open (``open`` or ``closing``)."""
    held: Counter[str] = Counter()
    for p in AccountRepository(conn, account_name).open_positions():
        held[p.option_symbol] += p.contracts
    return dict(held)


def compare_holdings(database: dict[str, int], broker: dict[str, int]) -> list[str]:
    """Symbols whose contract counts differ between the database and the broker."""
    return [f"{symbol}: database {database.get(symbol, 0)}, broker {broker.get(symbol, 0)}"
            for symbol in sorted(set(database) | set(broker)) if database.get(symbol, 0) != broker.get(symbol, 0)]


def daily_loss_days(conn: Connection, config: AccountConfig) -> list[dict[str, Any]]:
    """Per exchange day with any P&L: the worst day P&L seen at a run, the limit, the latch.

    ``past_limit_after_halt``: the day ended up worse than when it was halted, i.e. positions
    already open took it past the limit (no new entry did: that would be a breach).
    """
    repo = AccountRepository(conn, config.name)
    limit = float(config.risk.max_daily_loss)
    worst: dict[dt.date, tuple[Decimal, dt.datetime]] = {}
    for s in repo.equity_curve():
        day, pnl = exchange_date(s.taken_at), s.realized_pnl_today + s.unrealized_pnl
        if day not in worst or pnl < worst[day][0]:
            worst[day] = (pnl, s.taken_at)
    halts = {h.trading_date: h for h in repo.daily_loss_halts()}
    days = []
    for day in sorted(set(worst) | set(halts)):
        pnl, at = worst.get(day, (Decimal(0), None))
        halt = halts.get(day)
        days.append({
            "date": day.isoformat(), "worst_pnl": float(pnl), "worst_at": _et(at, "%H:%M") if at else None,
            "max_daily_loss": limit, "halted_at": _et(halt.halted_at, "%H:%M") if halt else None,
            "halt_pnl": float(halt.day_pnl) if halt else None, "action": halt.action if halt else None,
            "halt_realized": float(halt.realized_pnl) if halt else None,
            "past_limit_after_halt": bool(halt and float(pnl) < -limit and pnl < halt.day_pnl),
        })
    return days


def _et(ts: dt.datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return f"{ts.astimezone(EXCHANGE_TZ):{fmt}} ET"
