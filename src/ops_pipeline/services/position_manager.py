"""The position manager: one run for one account (seed 004; SPEC "The position manager").

1. Create one ``active_positions`` row per filled execution of this account that has none (the
   unique ``execution_id`` makes the seed's duplicate-every-5-minutes bug impossible).
2. Reconcile with the broker, contract by contract: a database position the broker no longer
   holds is closed — ``expired`` at intrinsic value if its contract has expired, else
   ``not_at_broker`` — without sending an order; a broker position unknown to the database is
   adopted once (flagged ``adopted``); quantities that disagree are corrected and flagged
   (``qty_corrected:…``, or the surplus adopted as ``adopted:qty_mismatch``).
3. Mark to market and apply the exit rules; close only what the broker reports held, never more.
4. A close the broker refuses keeps the position ``closing`` with the error recorded and is tried
   again next run; "position does not exist" closes the record as ``not_at_broker``.

Each run ends with an equity snapshot of the account.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import AccountRepository
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.exits import ExitReason, exit_reason, stop_and_target
from ops_pipeline.domain.values import CONTRACT_MULTIPLIER, ZERO, OccSymbol, OptionType, StrategyType, money
from ops_pipeline.errors import BrokerError, BrokerTemporaryError, OrderRejected, PositionNotFound
from ops_pipeline.ports import Broker, BrokerPosition, Clock, MarketData
from ops_pipeline.services.runs import account_log, day_start, run_id_for


@dataclass
class ManageSummary:
    run_id: str
    created: int = 0
    adopted: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    close_failures: int = 0
    open: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "adopted": self.adopted, "closed": self.closed,
                "close_failures": self.close_failures, "open": self.open}


def _add_flag(flags: str | None, flag: str) -> str:
    return flag if not flags else f"{flags},{flag}"


def intrinsic_value(symbol: OccSymbol, spot: Decimal) -> Decimal:
    """Value per share of an option at expiry against the underlying price ``spot``."""
    diff = spot - symbol.strike if symbol.option_type is OptionType.CALL else symbol.strike - spot
    return money(max(diff, ZERO))


def realized_pnl(entry: Decimal, exit_price: Decimal, contracts: int) -> Decimal:
    """Dollars made by a long option position closed at ``exit_price``."""
    return money((exit_price - entry) * CONTRACT_MULTIPLIER * contracts)


class PositionManager:
    """Runs the position manager for one account; wired by ``bootstrap``."""

    def __init__(self, db: Database, config: AccountConfig, broker: Broker, market: MarketData, clock: Clock,
                 calendar: TradingCalendar) -> None:
        self.db = db
        self.config = config
        self.broker = broker
        self.market = market
        self.clock = clock
        self.calendar = calendar
        self.log = account_log("position_manager", config.name)

    def run(self) -> ManageSummary:
        now = self.clock.now()
        name = self.config.name
        summary = ManageSummary(run_id_for("position_manager", name, now))
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, name)
            summary.run_id = repo.start_run(summary.run_id, "position_manager", now)
            summary.created = self._create_positions(repo)
            positions = repo.open_positions()
        status = "ok"
        try:
            held = {str(p.symbol): p for p in self.broker.get_positions()}
            positions = self._reconcile(positions, held, now, summary)
            for row in positions:
                self._manage(row, held[row.option_symbol], now, summary)
            self._snapshot(now)
        except BrokerError as exc:
            summary.error, status = f"{type(exc).__name__}: {exc}", "error"
            self.log.error("run stopped by a broker failure: %s", exc)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, name)
            summary.open = len(repo.open_positions())
            repo.finish_run(summary.run_id, self.clock.now(), status, summary.as_dict(), summary.error)
        return summary

    # --- step 1 -------------------------------------------------------------------------------
    def _create_positions(self, repo: AccountRepository) -> int:
        created = 0
        risk = self.config.risk
        for e in repo.filled_without_position():
            stop, target = stop_and_target(e.premium, risk.stop_loss_pct, risk.take_profit_pct)
            created += repo.create_position({
                "execution_id": e.id, "ticker": e.ticker, "option_symbol": e.option_symbol,
                "strategy_type": e.strategy_type, "contracts": e.contracts, "entry_price": e.premium,
                "notional_value": e.notional, "stop_price": stop, "target_price": target,
                "expiration_date": OccSymbol.parse(e.option_symbol).expiration, "status": "open",
                "opened_at": e.filled_at or e.simulated_ts, "quality_score": e.quality_score,
                "confidence": e.confidence,
            })
        return created

    # --- step 2 -------------------------------------------------------------------------------
    def _reconcile(self, positions: list[Any], held: dict[str, BrokerPosition], now: dt.datetime,
                   summary: ManageSummary) -> list[Any]:
        """Make the open rows agree with what the broker holds, symbol by symbol; returns the rows
        to manage. Broker positions are aggregated per contract; the database may hold several
        rows of one contract (one per execution)."""
        rows_by_symbol: dict[str, list[Any]] = {}
        for row in positions:
            rows_by_symbol.setdefault(row.option_symbol, []).append(row)
        for symbol in sorted(set(rows_by_symbol) | set(held)):
            rows = rows_by_symbol.get(symbol, [])
            broker = held.get(symbol)
            broker_qty = broker.qty if broker else 0
            db_qty = sum(r.contracts for r in rows)
            if broker_qty == db_qty:
                continue
            if broker_qty > db_qty:
                assert broker is not None
                self._adopt(broker, broker_qty - db_qty, now, summary, partial=bool(rows))
                continue
            missing = db_qty - broker_qty
            for row in sorted(rows, key=lambda r: r.id, reverse=True):  # newest first
                if missing <= 0:
                    break
                if row.contracts <= missing:
                    missing -= row.contracts
                    self._close_missing(row, now, summary)
                else:
                    self._correct(row, row.contracts - missing, broker_qty)
                    missing = 0
        with self.db.transaction() as conn:
            return AccountRepository(conn, self.config.name).open_positions()

    def _close_missing(self, row: Any, now: dt.datetime, summary: ManageSummary) -> None:
        symbol = OccSymbol.parse(row.option_symbol)
        if self._expired(symbol, now):
            spot = self.market.underlying_price(symbol.underlying, now) or ZERO
            self._close_record(row, intrinsic_value(symbol, spot), ExitReason.EXPIRED, now, summary)
        else:
            self.log.warning("position %s %s is not at the broker: closed without an order", row.id, row.option_symbol)
            self._close_record(row, None, ExitReason.NOT_AT_BROKER, now, summary)

    def _correct(self, row: Any, contracts: int, broker_qty: int) -> None:
        flag = f"qty_corrected:{row.contracts}->{contracts}"
        self.log.warning("position %s %s: %s contracts recorded, broker holds %s in all; corrected to %s",
                         row.id, row.option_symbol, row.contracts, broker_qty, contracts)
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).update_position(
                row.id, contracts=contracts, flags=_add_flag(row.flags, flag),
                notional_value=money(row.entry_price * CONTRACT_MULTIPLIER * contracts))

    def _adopt(self, broker: BrokerPosition, qty: int, now: dt.datetime, summary: ManageSummary, *, partial: bool) -> None:
        """Record a broker position (or the part of it) the database does not know, once."""
        symbol = broker.symbol
        dte = (symbol.expiration - exchange_date(now)).days
        stop, target = stop_and_target(broker.avg_entry_price, self.config.risk.stop_loss_pct, self.config.risk.take_profit_pct)
        flag = "adopted:qty_mismatch" if partial else "adopted"
        self.log.warning("broker holds %s × %s unknown to the database: adopted (%s)", qty, symbol, flag)
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).create_position({
                "execution_id": None, "ticker": symbol.underlying, "option_symbol": str(symbol),
                "strategy_type": (StrategyType.DAY_TRADE if dte <= 1 else StrategyType.SWING_TRADE).value,
                "contracts": qty, "entry_price": broker.avg_entry_price,
                "notional_value": money(broker.avg_entry_price * CONTRACT_MULTIPLIER * qty),
                "stop_price": stop, "target_price": target, "expiration_date": symbol.expiration,
                "status": "open", "opened_at": now, "flags": flag,
            })
        summary.adopted += 1

    def _expired(self, symbol: OccSymbol, now: dt.datetime) -> bool:
        today = exchange_date(now)
        if symbol.expiration < today:
            return True
        session = self.calendar.session(today)
        return symbol.expiration == today and (session is None or now >= session.close)

    # --- steps 3 and 4 ------------------------------------------------------------------------
    def _manage(self, row: Any, held: BrokerPosition, now: dt.datetime, summary: ManageSummary) -> None:
        symbol = OccSymbol.parse(row.option_symbol)
        quote = self.market.option_quote(symbol, now)
        bid = quote.bid if quote else None
        session = self.calendar.session(exchange_date(now))
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            if quote is not None:
                repo.update_position(row.id, current_price=quote.mid, marked_at=now,
                                     unrealized_pnl=realized_pnl(row.entry_price, quote.mid, row.contracts))
        if session is None or not session.open <= now < session.close:
            return
        reason = ExitReason(row.exit_reason) if row.status == "closing" and row.exit_reason else exit_reason(
            strategy=StrategyType(row.strategy_type), bid_usd=bid, stop_usd=row.stop_price,
            target_usd=row.target_price, minutes_to_close=(session.close - now).total_seconds() / 60,
            today=exchange_date(now), expiration=row.expiration_date,
        )
        if reason is not None:
            self._close(row, held, reason, now, summary)

    def _close(self, row: Any, held: BrokerPosition, reason: ExitReason, now: dt.datetime, summary: ManageSummary) -> None:
        attempt = row.close_attempts + 1
        client_order_id = f"ops-{self.config.name}-close{row.id}-{attempt}"
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).update_position(
                row.id, status="closing", exit_reason=reason.value, close_attempts=attempt,
                close_client_order_id=client_order_id)
        qty = min(row.contracts, held.qty)
        try:
            result = self.broker.close_position(held.symbol, qty, client_order_id)
        except PositionNotFound:
            self._close_record(row, None, ExitReason.NOT_AT_BROKER, now, summary)
            return
        except (OrderRejected, BrokerTemporaryError) as exc:
            summary.close_failures += 1
            self.log.warning("close of position %s (%s) refused, retried next run: %s", row.id, reason.value, exc)
            with self.db.transaction() as conn:
                AccountRepository(conn, self.config.name).update_position(row.id, last_error=str(exc))
            return
        self._close_record(row, result.filled_avg_price, reason, now, summary, contracts=result.filled_qty,
                           quote_source=result.quote_source.value if result.quote_source else None)

    def _close_record(self, row: Any, exit_price: Decimal | None, reason: ExitReason, now: dt.datetime,
                      summary: ManageSummary, contracts: int | None = None, quote_source: str | None = None) -> None:
        qty = contracts or row.contracts
        pnl = realized_pnl(row.entry_price, exit_price, qty) if exit_price is not None else None
        summary.closed[reason.value] = summary.closed.get(reason.value, 0) + 1
        self.log.info("closed position %s %s: %s exit=%s pnl=%s", row.id, row.option_symbol, reason.value, exit_price, pnl)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            repo.update_position(row.id, status="closed", closed_at=now, exit_price=exit_price, exit_reason=reason.value,
                                 realized_pnl=pnl, unrealized_pnl=None, exit_quote_source=quote_source)
            repo.record_outcome({
                "position_id": row.id, "ticker": row.ticker, "option_symbol": row.option_symbol,
                "strategy_type": row.strategy_type, "quality_score": row.quality_score, "confidence": row.confidence,
                "contracts": qty, "entry_price": row.entry_price, "exit_price": exit_price, "realized_pnl": pnl,
                "pnl_pct": None if exit_price is None else round((exit_price / row.entry_price - 1) * 100, 4),
                "opened_at": row.opened_at, "closed_at": now, "exit_reason": reason.value,
                "hold_minutes": round((now - row.opened_at).total_seconds() / 60, 1),
            })

    def _snapshot(self, now: dt.datetime) -> None:
        account = self.broker.get_account()
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            exposure = repo.exposure()
            unrealized = sum((p.unrealized_pnl or ZERO for p in repo.open_positions()), ZERO)
            repo.snapshot_equity({
                "taken_at": now, "equity": account.equity, "cash": account.cash, "buying_power": account.buying_power,
                "open_positions": exposure.open_positions, "open_exposure": exposure.open_exposure,
                "unrealized_pnl": money(unrealized), "realized_pnl_today": repo.realized_pnl_since(day_start(now)),
            })
