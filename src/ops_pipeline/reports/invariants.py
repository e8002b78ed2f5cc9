"""Checks that an account's stored rows respect its own limits, at every instant.

Read from the database only, so they hold for any run (replay or live) and any backend:

- contracts per execution ≤ the contract cap;
- open positions ≤ ``max_open_positions`` and open notional ≤ ``max_notional_exposure`` just after
  every entry (positions open from their order until they close);
- no two trades of one ticker inside ``ticker_cooldown_minutes``;
- at most ``max_trades_per_ticker_per_day`` trades per ticker per exchange day;
- no entry after the day's loss reached ``max_daily_loss`` (realized today plus unrealized, as the
  position manager recorded them at the same minute, just before the dispatcher ran);
- exactly one position per filled execution.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal

from sqlalchemy import Connection

from ops_pipeline.adapters.db.repositories import FILLED, AccountRepository
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.config.models import AccountConfig


def check_account(conn: Connection, config: AccountConfig) -> list[str]:
    """Every limit breach in one account's rows, as readable lines (empty = all respected)."""
    cfg = config.risk
    repo = AccountRepository(conn, config.name)
    executions = [e for e in repo.executions() if e.status == FILLED]
    positions = repo.positions()
    by_execution = Counter(p.execution_id for p in positions if p.execution_id is not None)
    problems = [f"execution {e.id}: {by_execution[e.id]} positions" for e in executions if by_execution[e.id] != 1]
    problems += [f"execution {e.id}: {e.contracts} contracts > cap {cfg.contract_cap}" for e in executions
                 if e.contracts > cfg.contract_cap]

    closes = {p.execution_id: p.closed_at for p in positions}
    for e in executions:
        live = [o for o in executions if o.simulated_ts <= e.simulated_ts
                and (closes.get(o.id) is None or closes[o.id] > e.simulated_ts)]
        exposure = sum((o.notional for o in live), Decimal(0))
        if len(live) > cfg.max_open_positions:
            problems.append(f"{e.simulated_ts:%Y-%m-%d %H:%M}: {len(live)} open positions > {cfg.max_open_positions}")
        if exposure > Decimal(str(cfg.max_notional_exposure)):
            problems.append(f"{e.simulated_ts:%Y-%m-%d %H:%M}: exposure {exposure} > {cfg.max_notional_exposure}")

    last: dict[str, object] = {}
    per_day: Counter[tuple[str, object]] = Counter()
    for e in executions:
        previous = last.get(e.ticker)
        if previous is not None and (e.simulated_ts - previous).total_seconds() < cfg.ticker_cooldown_minutes * 60:
            problems.append(f"{e.ticker} traded at {previous:%H:%M} and {e.simulated_ts:%H:%M}, inside the cooldown")
        last[e.ticker] = e.simulated_ts
        per_day[(e.ticker, exchange_date(e.simulated_ts))] += 1
    problems += [f"{t} traded {n} times on {d}" for (t, d), n in per_day.items() if n > cfg.max_trades_per_ticker_per_day]

    snapshots = defaultdict(list)
    for s in repo.equity_curve():
        snapshots[s.taken_at].append(s)
    limit = -Decimal(str(cfg.max_daily_loss))
    for e in executions:
        for s in snapshots.get(e.simulated_ts, []):
            if s.realized_pnl_today + s.unrealized_pnl <= limit:
                problems.append(f"{e.simulated_ts:%Y-%m-%d %H:%M}: traded with pnl today "
                                f"{s.realized_pnl_today + s.unrealized_pnl} at or below {limit}")
    return problems
