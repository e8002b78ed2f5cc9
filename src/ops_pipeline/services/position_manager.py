"""The position manager: one run for one account (seed 004; SPEC "The position manager").

1. Settle first (:mod:`~ops_pipeline.services.settlement`): this account's entry orders whose
   outcome is unknown are looked up by ``client_order_id`` and their fills recorded; closing
   positions' sell orders are looked up by their stored ``close_client_order_id`` and a fill found
   there closes the position with its price and P&L. Only then is the broker compared with the
   database, so a lost answer never becomes a phantom position.
2. Create one ``active_positions`` row per filled execution of this account that has none (the
   unique ``execution_id`` makes the seed's duplicate-every-5-minutes bug impossible).
3. Reconcile with the broker, contract by contract: a database position the broker no longer holds
   is closed — ``expired`` at intrinsic value if its contract has expired, else ``not_at_broker`` —
   without sending an order; a broker position unknown to the database is adopted once (flagged
   ``adopted``); quantities that disagree are corrected and flagged. What an order still open to
   doubt may explain (working, or not answerable this run) is neither adopted nor closed.
4. Mark to market; set the day's loss latch if reached (and with ``daily_loss_action = flatten``
   sell every position at the bid); apply the exit rules; close only what the broker holds.
5. A close the broker refuses keeps the position ``closing`` with the error recorded and is tried
   again next run; "position does not exist" closes the record as ``not_at_broker``.

Each run ends with an equity snapshot of the account (and the latch, if the day's loss is reached).
A broker or market-data failure ends the run cleanly with the error recorded.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import AccountRepository, SharedRepository
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.exits import ExitReason, exit_reason, stop_and_target
from ops_pipeline.domain.market import OptionQuote
from ops_pipeline.domain.values import (
    CONTRACT_MULTIPLIER,
    ZERO,
    AccountState,
    DailyLossAction,
    OccSymbol,
    OptionType,
    StrategyType,
    money,
)
from ops_pipeline.errors import BrokerError, BrokerTemporaryError, MarketDataError, OrderRejected, PositionNotFound
from ops_pipeline.failpoints import failpoint
from ops_pipeline.ports import Broker, BrokerPosition, Clock, MarketData, OrderResult
from ops_pipeline.services.daily_loss import latch_daily_loss, loss_reached
from ops_pipeline.services.runs import account_log, day_start, run_context, run_id_for
from ops_pipeline.services.settlement import Outcome, look_up_closes, outcome_of, settle_entries


@dataclass
class ManageSummary:
    run_id: str
    created: int = 0
    adopted: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    close_failures: int = 0
    open: int = 0
    settled: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "adopted": self.adopted, "closed": self.closed,
                "close_failures": self.close_failures, "open": self.open} | ({"settled": self.settled} if self.settled else {})


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

    def run(self, now: dt.datetime | None = None) -> ManageSummary:
        """One run at ``now`` (default: the clock's time). Never raises on broker or market-data
        failures: they end the run with ``summary.error`` set."""
        now = now or self.clock.now()
        started = time.monotonic()
        name = self.config.name
        summary = ManageSummary(run_id_for("position_manager", name, now))
        with self.db.transaction() as conn:
            summary.run_id = AccountRepository(conn, name).start_run(summary.run_id, "position_manager", now, os.getpid())
        with run_context(summary.run_id):
            status = "ok"
            try:
                settlement = settle_entries(self.db, name, self.broker, now, self.log)
                summary.settled = sum(1 for o in settlement.outcomes.values() if o in (Outcome.FILLED, Outcome.UNFILLED))
                doubtful = self._settle_closes(now, summary)
                summary.created = self._create_positions()
                with self.db.read() as conn:
                    positions = AccountRepository(conn, name).open_positions()
                held = {str(p.symbol): p for p in self.broker.get_positions()}
                positions = self._reconcile(positions, held, now, summary, settlement.explained_contracts(), doubtful)
                quotes = self._mark(positions, now)
                flatten = self._flatten_reason(now, summary.run_id)
                for row in positions:
                    self._manage(row, held.get(row.option_symbol), quotes.get(row.id), now, summary, flatten,
                                 doubtful.get(row.id))
                self._snapshot(now, summary.run_id)
                if settlement.error is not None:
                    summary.error, status = f"unsettled orders could not be looked up: {settlement.error}", "error"
            except (BrokerError, MarketDataError) as exc:
                summary.error, status = f"{type(exc).__name__}: {exc}", "error"
                self.log.error("run stopped: %s", exc)
            with self.db.transaction() as conn:
                repo = AccountRepository(conn, name)
                summary.open = len(repo.open_positions())
                repo.finish_run(summary.run_id, self._finished_at(now), status, summary.as_dict(), summary.error,
                                time.monotonic() - started)
        return summary

    def _finished_at(self, started: dt.datetime) -> dt.datetime:
        try:
            return max(started, self.clock.now())
        except (BrokerError, MarketDataError):
            return started

    # --- step 1: closes whose answer is not recorded ---------------------------------------------
    def _settle_closes(self, now: dt.datetime, summary: ManageSummary) -> dict[int, Outcome]:
        """Record the fills of sells sent earlier; returns position id → outcome for the positions
        whose close is still open to doubt (working, not found, unknown)."""
        with self.db.read() as conn:
            closing = AccountRepository(conn, self.config.name).closing_positions()
        doubtful: dict[int, Outcome] = {}
        lookups = look_up_closes(closing, self.broker, self.log)
        for row in closing:
            lookup = lookups[row.id]
            if lookup.outcome is Outcome.FILLED and lookup.result and lookup.result.filled_avg_price is not None:
                self.log.info("close order %s of position %s found filled: recording it", row.close_client_order_id, row.id)
                self._record_fill(row, lookup.result, ExitReason(row.exit_reason), now, summary)
            elif lookup.outcome is Outcome.UNFILLED:
                status = lookup.result.status.value if lookup.result else "unfilled"
                self._close_failed(row, f"close order {row.close_client_order_id} ended {status}", summary)
            else:
                doubtful[row.id] = lookup.outcome
        return doubtful

    # --- step 2 -------------------------------------------------------------------------------
    def _create_positions(self) -> int:
        created = 0
        risk = self.config.risk
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
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
                failpoint("position_manager.mid_create")
        return created

    # --- step 3 -------------------------------------------------------------------------------
    def _reconcile(self, positions: list[Any], held: dict[str, BrokerPosition], now: dt.datetime,
                   summary: ManageSummary, explained: dict[str, int], doubtful: dict[int, Outcome]) -> list[Any]:
        """Make the open rows agree with what the broker holds, symbol by symbol; returns the rows
        to manage. Broker positions are aggregated per contract; the database may hold several
        rows of one contract (one per execution). ``explained``: contracts per symbol that orders
        still open to doubt may hold (never adopted); a symbol whose close is working or unknown is
        left alone."""
        rows_by_symbol: dict[str, list[Any]] = {}
        for row in positions:
            rows_by_symbol.setdefault(row.option_symbol, []).append(row)
        # A sell that is working, or cannot be asked about, may change the holding: wait for it.
        # One that never reached the broker changed nothing: the broker's holding is the truth.
        untouchable = {row.option_symbol for row in positions
                       if doubtful.get(row.id) in (Outcome.WORKING, Outcome.UNKNOWN)}
        for symbol in sorted(set(rows_by_symbol) | set(held)):
            if symbol in untouchable:
                continue
            rows = rows_by_symbol.get(symbol, [])
            broker = held.get(symbol)
            broker_qty = broker.qty if broker else 0
            db_qty = sum(r.contracts for r in rows)
            if broker_qty == db_qty:
                continue
            if broker_qty > db_qty:
                surplus = broker_qty - db_qty - explained.get(symbol, 0)
                if surplus > 0:
                    assert broker is not None
                    self._adopt(broker, surplus, now, summary, partial=bool(rows))
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
        with self.db.read() as conn:
            return AccountRepository(conn, self.config.name).open_positions()

    def _close_missing(self, row: Any, now: dt.datetime, summary: ManageSummary) -> None:
        symbol = OccSymbol.parse(row.option_symbol)
        if self._expired(symbol, now):
            session = self.calendar.session(symbol.expiration)
            at_close = min(now, session.close) if session is not None else now
            spot = self.market.underlying_price(symbol.underlying, at_close) or ZERO
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

    # --- step 4 -------------------------------------------------------------------------------
    def _mark(self, positions: list[Any], now: dt.datetime) -> dict[int, OptionQuote]:
        """Mark every open position at the quote's mid; returns position id → quote."""
        quotes = {}
        for row in positions:
            quote = self.market.option_quote(OccSymbol.parse(row.option_symbol), now)
            if quote is not None:
                quotes[row.id] = quote
        if quotes:
            with self.db.transaction() as conn:
                AccountRepository(conn, self.config.name).mark_positions({
                    row.id: {"current_price": quote.mid, "marked_at": now,
                             "unrealized_pnl": realized_pnl(row.entry_price, quote.mid, row.contracts)}
                    for row in positions if (quote := quotes.get(row.id)) is not None})
        return quotes

    def _day_pnl(self, now: dt.datetime) -> tuple[Decimal, Decimal]:
        """(realized today, unrealized now) from this account's rows, dollars."""
        with self.db.read() as conn:
            repo = AccountRepository(conn, self.config.name)
            realized = repo.realized_pnl_since(day_start(now))
            unrealized = sum((p.unrealized_pnl or ZERO for p in repo.open_positions()), ZERO)
        return realized, money(unrealized)

    def _flatten_reason(self, now: dt.datetime, run_id: str) -> ExitReason | None:
        """Why every position must be sold now, if it must: the account was killed with flatten
        (``kill --flatten``), or the day's loss latch is set with ``daily_loss_action = flatten``.
        Sets the latch if the loss is reached; writes only then."""
        with self.db.read() as conn:
            halt = AccountRepository(conn, self.config.name).daily_loss_halt(exchange_date(now))
            registered = SharedRepository(conn).registration(self.config.name)
        if halt is None:
            realized, unrealized = self._day_pnl(now)
            if loss_reached(self.config, realized, unrealized):
                with self.db.transaction() as conn:
                    halt = latch_daily_loss(AccountRepository(conn, self.config.name), self.config, realized,
                                            unrealized, now, run_id, self.log)
        if registered is not None and registered.state == AccountState.KILLED.value and registered.flatten:
            return ExitReason.KILL_FLATTEN
        if halt is not None and self.config.risk.daily_loss_action is DailyLossAction.FLATTEN:
            return ExitReason.DAILY_LOSS_FLATTEN
        return None

    def _manage(self, row: Any, held: BrokerPosition | None, quote: OptionQuote | None, now: dt.datetime,
                summary: ManageSummary, flatten: ExitReason | None, doubt: Outcome | None) -> None:
        session = self.calendar.session(exchange_date(now))
        if session is None or not session.open <= now < session.close:
            return
        if doubt in (Outcome.WORKING, Outcome.UNKNOWN):
            return  # the sell is at the broker or may be: nothing more is sent until it is known
        if held is None:
            self.log.warning("position %s %s: the broker's holding is not known this run; not managed",
                             row.id, row.option_symbol)
            return
        if row.status == "closing" and row.exit_reason:
            reason: ExitReason | None = ExitReason(row.exit_reason)
        elif flatten is not None:
            reason = flatten
        else:
            reason = exit_reason(
                strategy=StrategyType(row.strategy_type), bid_usd=quote.bid if quote else None, stop_usd=row.stop_price,
                target_usd=row.target_price, minutes_to_close=(session.close - now).total_seconds() / 60,
                today=exchange_date(now), expiration=row.expiration_date,
            )
        if reason is not None:
            self._close(row, held, reason, now, summary, same_order=doubt is Outcome.NOT_FOUND)

    def _close(self, row: Any, held: BrokerPosition, reason: ExitReason, now: dt.datetime, summary: ManageSummary,
               *, same_order: bool) -> None:
        """Sell ``row`` (at most what the broker holds). Its client_order_id is stored first; a close
        found never to have reached the broker is sent again under the same id (``same_order``)."""
        if same_order and row.close_client_order_id:
            attempt, client_order_id = row.close_attempts, row.close_client_order_id
        else:
            attempt = row.close_attempts + 1
            client_order_id = f"ops-{self.config.name}-close{row.id}-{attempt}"
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).update_position(
                row.id, status="closing", exit_reason=reason.value, close_attempts=attempt,
                close_client_order_id=client_order_id)
        failpoint("position_manager.before_close_submit")
        qty = min(row.contracts, held.qty)
        try:
            result = self.broker.close_position(held.symbol, qty, client_order_id)
        except PositionNotFound:
            self._close_record(row, None, ExitReason.NOT_AT_BROKER, now, summary)
            return
        except OrderRejected as exc:  # refused: that sell never existed; the next one gets a new id
            self._close_failed(row, f"{reason.value} close refused: {exc}", summary)
            return
        except BrokerTemporaryError as exc:  # answer lost: the next run looks the same id up first
            summary.close_failures += 1
            self.log.warning("close of position %s (%s): outcome unknown, looked up next run: %s", row.id, reason.value, exc)
            with self.db.transaction() as conn:
                AccountRepository(conn, self.config.name).update_position(row.id, last_error=str(exc))
            return
        failpoint("position_manager.after_close_submit")
        outcome = outcome_of(result)
        if outcome is Outcome.FILLED and result.filled_avg_price is not None:
            self._record_fill(row, result, reason, now, summary)
        elif outcome is Outcome.UNFILLED:
            self._close_failed(row, f"close order {client_order_id} ended {result.status.value}", summary)
        else:
            self.log.info("close order %s of position %s is working at the broker", client_order_id, row.id)

    def _close_failed(self, row: Any, error: str, summary: ManageSummary) -> None:
        """A sell that ended unfilled: the position stays ``closing``; the next run sends a new one."""
        summary.close_failures += 1
        self.log.warning("position %s: %s; a new close is sent next run", row.id, error)
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).update_position(row.id, last_error=error, close_client_order_id=None)

    def _record_fill(self, row: Any, result: OrderResult, reason: ExitReason, now: dt.datetime,
                     summary: ManageSummary) -> None:
        """Close ``row`` with the broker's fill. A partial fill of a finished order closes that many
        contracts; the rest, still held, is adopted by the next reconciliation."""
        assert result.filled_avg_price is not None
        if 0 < result.filled_qty < row.contracts:
            self.log.warning("close of position %s filled %s of %s contracts", row.id, result.filled_qty, row.contracts)
            with self.db.transaction() as conn:
                AccountRepository(conn, self.config.name).update_position(
                    row.id, contracts=result.filled_qty, flags=_add_flag(row.flags, f"partial_close:{row.contracts}->"
                                                                                    f"{result.filled_qty}"),
                    notional_value=money(row.entry_price * CONTRACT_MULTIPLIER * result.filled_qty))
        self._close_record(row, result.filled_avg_price, reason, result.filled_at or now, summary,
                           contracts=result.filled_qty or row.contracts,
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

    def _snapshot(self, now: dt.datetime, run_id: str) -> None:
        """The run's equity snapshot and, in the same transaction, the latch if the day's loss is reached:
        a stored snapshot at the limit never exists without its latch."""
        account = self.broker.get_account()
        realized, unrealized = self._day_pnl(now)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            exposure = repo.exposure()
            repo.snapshot_equity({
                "taken_at": now, "equity": account.equity, "cash": account.cash, "buying_power": account.buying_power,
                "open_positions": exposure.open_positions, "open_exposure": exposure.open_exposure,
                "unrealized_pnl": unrealized, "realized_pnl_today": realized,
            })
            latch_daily_loss(repo, self.config, realized, unrealized, now, run_id, self.log)
