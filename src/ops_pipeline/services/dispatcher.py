"""The dispatcher: one run for one account (SPEC "The dispatcher, one run for one account").

1. Settle this account's orders whose outcome is unknown (:mod:`~ops_pipeline.services.settlement`):
   record what the broker says; an order never received by the broker is sent again with the same
   ``client_order_id`` while its recommendation is fresh (younger than ``lookback_window_minutes``)
   and the account may still open positions, otherwise recorded ``expired`` with the reason.
2. Decide stale recommendations in bulk; claim up to ``max_signals_per_run`` fresh ones. Every
   claimed row is validated: a bad one becomes this account's ``invalid_recommendation`` decision
   naming the field and value, and the others go on.
3. Read the account once (broker: equity, buying power, unrealized P&L; database: exposure, trades,
   realized P&L today, today's daily-loss latch). A day's loss at the limit sets the latch (stored).
   Judge each claim with the pure :func:`~ops_pipeline.domain.entry.decide_entry`.
4. Submit idempotently: the execution row with its deterministic ``client_order_id`` is committed
   *before* the order is sent; an ambiguous failure leaves it ``pending_submit`` for step 1.

A broker or market-data failure ends the run cleanly: the error is recorded on the run, claims that
did not become an order are released at once, and the next run starts over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import (
    EXPIRED,
    PENDING_SUBMIT,
    REJECTED,
    AccountRepository,
    SharedRepository,
)
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.contracts import DTE_WINDOWS
from ops_pipeline.domain.entry import Entry, decide_entry
from ops_pipeline.domain.gates import AccountSnapshot, DailyLossHalt, Denied, ReasonCode, pre_contract_gates
from ops_pipeline.domain.market import Recommendation
from ops_pipeline.domain.recommendations import InvalidRecommendation
from ops_pipeline.domain.values import ZERO, AccountState, ExecutionMode, OccSymbol, money, option_type_for
from ops_pipeline.errors import BrokerError, BrokerTemporaryError, MarketDataError, OrderRejected
from ops_pipeline.failpoints import failpoint
from ops_pipeline.ports import Broker, Clock, MarketData, OrderRequest, OrderResult, OrderSide
from ops_pipeline.services.daily_loss import latch_daily_loss, loss_reached
from ops_pipeline.services.runs import account_log, day_start, run_context, run_id_for
from ops_pipeline.services.settlement import Outcome, record_entry_result, settle_entries


@dataclass
class DispatchSummary:
    run_id: str
    claimed: int = 0
    stale: int = 0
    executed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    resolved: int = 0
    resent: int = 0
    released: int = 0
    unknown: int = 0
    """Orders whose answer was lost: settled by client_order_id next run."""
    error: str | None = None

    credentials: str | None = None

    def as_dict(self) -> dict[str, Any]:
        summary = {"claimed": self.claimed, "stale": self.stale, "executed": self.executed,
                   "rejected": dict(sorted(self.rejected.items())), "resolved": self.resolved}
        summary |= {k: v for k, v in (("resent", self.resent), ("released", self.released), ("unknown", self.unknown)) if v}
        return summary | ({"credentials": self.credentials} if self.credentials else {})


@dataclass(frozen=True, slots=True)
class Sent:
    """An order that reached the broker (``result``) or whose answer was lost (``result is None``)."""

    result: OrderResult | None

    @property
    def filled_avg_price(self) -> Decimal | None:
        return self.result.filled_avg_price if self.result else None


def client_order_id_for(account_name: str, recommendation_id: int) -> str:
    """Deterministic order id for (account, recommendation): a retry can never be a second order."""
    return f"ops-{account_name}-rec{recommendation_id}"


class Dispatcher:
    """Runs the dispatcher for one account; wired by ``bootstrap``."""

    def __init__(self, db: Database, config: AccountConfig, broker: Broker, market: MarketData, clock: Clock,
                 execution_mode: ExecutionMode) -> None:
        self.db = db
        self.config = config
        self.broker = broker
        self.market = market
        self.clock = clock
        self.execution_mode = execution_mode
        self.log = account_log("dispatcher", config.name)
        self._tier_warned = False
        self.credentials_label: str | None = None
        """Which credentials this run uses (masked), set per run when credentials are read."""

    def run(self, now: dt.datetime | None = None) -> DispatchSummary:
        """One run at ``now`` (default: the clock's time). Never raises on broker or market-data
        failures: they end the run with ``summary.error`` set."""
        now = now or self.clock.now()
        started = time.monotonic()
        name, cfg = self.config.name, self.config.risk
        summary = DispatchSummary(run_id_for("dispatcher", name, now), credentials=self.credentials_label)
        with self.db.transaction() as conn:
            summary.run_id = AccountRepository(conn, name).start_run(summary.run_id, "dispatcher", now, os.getpid())
        with run_context(summary.run_id):
            status = "ok"
            try:
                with self.db.read() as conn:
                    registered = SharedRepository(conn).registration(name)
                    state = AccountState(registered.state if registered is not None else "enabled")
                    halt = AccountRepository(conn, name).daily_loss_halt(exchange_date(now))
                self._settle(now, state, halt, summary)
                with self.db.transaction() as conn:
                    repo = AccountRepository(conn, name)
                    ttl = dt.timedelta(minutes=cfg.processing_ttl_minutes)
                    claims = []
                    cutoff = now - dt.timedelta(minutes=cfg.lookback_window_minutes)
                    outlook = repo.may_have_claims(now=now, ttl=ttl, cutoff=cutoff)
                    if outlook.stale:
                        summary.stale = repo.reject_stale(
                            run_id=summary.run_id, now=now, cutoff=cutoff, detail=f"max={cfg.lookback_window_minutes}min"
                        )
                    if outlook.fresh or outlook.stuck:
                        claims = repo.claim(run_id=summary.run_id, now=now, limit=cfg.max_signals_per_run, ttl=ttl,
                                            stuck=outlook.stuck)
                summary.claimed = len(claims)
                valid = [c for c in claims if isinstance(c, Recommendation)]
                for bad in (c for c in claims if isinstance(c, InvalidRecommendation)):
                    self._reject_invalid(bad, now, summary)
                if valid:
                    account = self._snapshot(state, halt, now, summary.run_id)
                    for rec in valid:
                        account = self._handle(rec, account, now, summary)
            except (BrokerError, MarketDataError) as exc:
                summary.error, status = f"{type(exc).__name__}: {exc}", "error"
                with self.db.transaction() as conn:
                    summary.released = AccountRepository(conn, name).release_claims([summary.run_id])
                self.log.error("run stopped (%s claim(s) released for the next run): %s", summary.released, exc)
            with self.db.transaction() as conn:
                AccountRepository(conn, name).finish_run(summary.run_id, self._finished_at(now), status,
                                                         summary.as_dict(), summary.error, time.monotonic() - started)
        return summary

    def _finished_at(self, started: dt.datetime) -> dt.datetime:
        try:
            return max(started, self.clock.now())
        except (BrokerError, MarketDataError):
            return started

    # --- step 1: orders whose outcome is unknown -----------------------------------------------
    def _settle(self, now: dt.datetime, state: AccountState, halt: DailyLossHalt | None,
                summary: DispatchSummary) -> None:
        settlement = settle_entries(self.db, self.config.name, self.broker, now, self.log)
        summary.resolved = sum(1 for o in settlement.outcomes.values() if o in (Outcome.FILLED, Outcome.UNFILLED))
        if settlement.error is not None:
            raise BrokerTemporaryError(f"unsettled orders could not be looked up: {settlement.error}")
        for row in settlement.with_outcome(Outcome.NOT_FOUND):
            if row.status != PENDING_SUBMIT:
                self._expire(row, now, "the broker no longer knows this order")
                continue
            created = None
            if row.recommendation_id is not None:
                with self.db.read() as conn:
                    created = AccountRepository(conn, self.config.name).recommendation_created_at(row.recommendation_id)
            age_min = (now - created).total_seconds() / 60 if created else float("inf")
            window = self.config.risk.lookback_window_minutes
            if age_min > window:
                self._expire(row, now, f"the order never reached the broker (not found by client_order_id); "
                                       f"recommendation age {age_min:.1f}min > {window}min, not sent again")
            elif state is not AccountState.ENABLED or halt is not None:
                why = f"account {state.value}" if state is not AccountState.ENABLED else halt.describe()  # type: ignore[union-attr]
                self._expire(row, now, f"the order never reached the broker; not sent again: {why}")
            else:
                self._resend(row, now, summary)

    def _expire(self, row: Any, now: dt.datetime, reason: str) -> None:
        self.log.warning("order %s: %s", row.client_order_id, reason)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            repo.update_execution(row.id, status=EXPIRED, error=reason)
            if row.recommendation_id is not None:
                repo.decide(row.recommendation_id, now=now, status=REJECTED,
                            reason_code=ReasonCode.ORDER_EXPIRED.value, detail=reason)

    def _resend(self, row: Any, now: dt.datetime, summary: DispatchSummary) -> None:
        """Send again, with the same client_order_id, an order found never to have reached the broker."""
        request = OrderRequest(row.client_order_id, OccSymbol.parse(row.option_symbol), OrderSide.BUY, row.contracts)
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).update_execution(row.id, submit_attempts=row.submit_attempts + 1)
        self.log.warning("order %s never reached the broker: sending it again (attempt %s)",
                         row.client_order_id, row.submit_attempts + 1)
        summary.resent += 1
        sent = self._send(row.id, row.recommendation_id, request, now, summary)
        if sent is not None and sent.result is not None:
            with self.db.transaction() as conn:
                record_entry_result(AccountRepository(conn, self.config.name), row, sent.result, now,
                                    float(row.quality_score) if row.quality_score is not None else None)
            summary.executed += 1

    # --- account state ------------------------------------------------------------------------
    def _snapshot(self, state: AccountState, halt: DailyLossHalt | None, now: dt.datetime,
                  run_id: str) -> AccountSnapshot:
        broker_account = self.broker.get_account()
        unrealized = sum((p.unrealized_pl or ZERO for p in self.broker.get_positions()), ZERO)
        since = day_start(now)
        with self.db.read() as conn:
            repo = AccountRepository(conn, self.config.name)
            exposure = repo.exposure()
            today, last = repo.trades_by_ticker(since)
            realized = repo.realized_pnl_since(since)
        if halt is None:
            halt = self._latch(realized, unrealized, now, run_id)
        equity = broker_account.equity
        r = self.config.risk
        self.log.info("Tier: %s; Account state: Positions %s/%s, Exposure $%s/$%s; Buying power $%s",
                      r.account_tier.value, exposure.open_positions, r.max_open_positions,
                      f"{exposure.open_exposure:,.0f}", f"{r.max_notional_exposure:,.0f}",
                      f"{broker_account.options_buying_power:,.2f}")
        expected = self.config.expected_tier_for(equity)
        if expected is not self.config.risk.account_tier and not self._tier_warned:
            self._tier_warned = True
            self.log.warning("equity %.2f says tier %s, configured tier is %s (configured tier used)",
                             equity, expected.value, self.config.risk.account_tier.value)
        return AccountSnapshot(
            state=state, equity_usd=equity, buying_power_usd=broker_account.options_buying_power,
            open_positions=exposure.open_positions, open_exposure_usd=exposure.open_exposure,
            realized_pnl_today_usd=realized, unrealized_pnl_usd=unrealized,
            trades_today_by_ticker=today, last_trade_at_by_ticker=last, daily_loss_halt=halt,
        )

    def _latch(self, realized: Decimal, unrealized: Decimal, now: dt.datetime, run_id: str) -> DailyLossHalt | None:
        """Set today's daily-loss latch if the day's loss reached the limit now (no write otherwise)."""
        if not loss_reached(self.config, realized, unrealized):
            return None
        with self.db.transaction() as conn:
            return latch_daily_loss(AccountRepository(conn, self.config.name), self.config, realized, unrealized,
                                    now, run_id, self.log)

    # --- one recommendation -------------------------------------------------------------------
    def _reject_invalid(self, bad: InvalidRecommendation, now: dt.datetime, summary: DispatchSummary) -> None:
        summary.rejected[ReasonCode.INVALID_RECOMMENDATION.value] += 1
        self.log.warning("recommendation %s is invalid, not traded: %s", bad.id, bad.detail)
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).decide(
                bad.id, now=now, status=REJECTED, reason_code=ReasonCode.INVALID_RECOMMENDATION.value, detail=bad.detail)

    def _handle(self, rec: Recommendation, account: AccountSnapshot, now: dt.datetime,
                summary: DispatchSummary) -> AccountSnapshot:
        # The cheap gates first: the option chain (modelled chains especially) costs far more.
        verdict: Entry | Denied | None = pre_contract_gates(rec, account, self.config.risk, now)
        if verdict is None:
            low, high = DTE_WINDOWS[rec.strategy_type]
            quotes = self.market.option_chain(rec.ticker, now, option_type=option_type_for(rec.action),
                                              min_dte=low, max_dte=high)
            verdict = decide_entry(rec, account, self.config.risk, quotes, now=now, today=exchange_date(now))
        if isinstance(verdict, Denied):
            self._reject(rec, verdict, now, summary)
            return account
        self.log.info("rec %s %s %s: %s %s", rec.id, rec.ticker, rec.action.value, verdict.contract.quote.symbol,
                      verdict.contract.score.describe())
        sent = self._submit(rec, verdict, now, summary)
        if sent is None:
            return account
        # An order counts against the limits from the moment it may exist, as the next run reads it
        # from the database: filled, working, or with its answer lost.
        qty = (sent.result.filled_qty or sent.result.qty) if sent.result else verdict.sizing.contracts
        cost = money(sent.filled_avg_price or verdict.contract.quote.ask) * 100 * qty
        return dataclasses.replace(
            account,
            open_positions=account.open_positions + 1,
            open_exposure_usd=account.open_exposure_usd + cost,
            buying_power_usd=account.buying_power_usd - cost,
            trades_today_by_ticker={**account.trades_today_by_ticker,
                                    rec.ticker: account.trades_today_by_ticker.get(rec.ticker, 0) + 1},
            last_trade_at_by_ticker={**account.last_trade_at_by_ticker, rec.ticker: now},
        )

    def _reject(self, rec: Recommendation, denial: Denied, now: dt.datetime, summary: DispatchSummary) -> None:
        summary.rejected[denial.code.value] += 1
        self.log.info("rec %s %s %s rejected: %s", rec.id, rec.ticker, rec.action.value, denial)
        with self.db.transaction() as conn:
            AccountRepository(conn, self.config.name).decide(
                rec.id, now=now, status=REJECTED, reason_code=denial.code.value, detail=denial.detail)

    def _submit(self, rec: Recommendation, entry: Entry, now: dt.datetime, summary: DispatchSummary) -> Sent | None:
        """Store the execution, then send its order. ``None`` when the broker refused it (recorded)."""
        quote = entry.contract.quote
        client_order_id = client_order_id_for(self.config.name, rec.id)
        request = OrderRequest(client_order_id, quote.symbol, OrderSide.BUY, entry.sizing.contracts)
        with self.db.transaction() as conn:
            execution_id = AccountRepository(conn, self.config.name).create_execution({
                "run_id": summary.run_id, "recommendation_id": rec.id, "ticker": rec.ticker,
                "action": rec.action.value, "strategy_type": rec.strategy_type.value,
                "option_symbol": str(quote.symbol), "contracts": entry.sizing.contracts,
                "premium": quote.ask, "notional": money(entry.notional_usd),
                "client_order_id": client_order_id, "status": PENDING_SUBMIT, "simulated_ts": now,
                "execution_mode": self.execution_mode.value, "quality_score": entry.contract.score.total,
                "confidence": rec.confidence, "quote_source": quote.source.value, "quote_ts": quote.quote_time,
                "quote_age_secs": round(quote.age_secs(now), 1), "quote_snapshot": quote.snapshot,
            })
        sent = self._send(execution_id, rec.id, request, now, summary)
        if sent is not None and sent.result is not None:
            with self.db.transaction() as conn:
                repo = AccountRepository(conn, self.config.name)
                record_entry_result(repo, repo.execution(execution_id), sent.result, now, entry.contract.score.total)
            summary.executed += 1
        return sent

    def _send(self, execution_id: int, recommendation_id: int | None, request: OrderRequest, now: dt.datetime,
              summary: DispatchSummary) -> Sent | None:
        """Send an entry order whose execution row is stored. ``None`` when refused (recorded);
        ``Sent(None)`` when the outcome is unknown (the row stays ``pending_submit``, settled next run)."""
        failpoint("dispatcher.before_submit")
        try:
            result = self.broker.submit_order(request)
        except OrderRejected as exc:
            result = self.broker.get_order_by_client_id(request.client_order_id) \
                if exc.code == "duplicate_client_order_id" else None
            if result is None:
                self._record_refusal(execution_id, recommendation_id, exc, now, summary)
                return None
        except BrokerTemporaryError as exc:
            self.log.warning("order %s outcome unknown (%s); settled by client_order_id next run",
                             request.client_order_id, exc)
            with self.db.transaction() as conn:
                AccountRepository(conn, self.config.name).update_execution(execution_id, error=str(exc))
            summary.unknown += 1
            return Sent(None)
        failpoint("dispatcher.after_submit")
        return Sent(result)

    def _record_refusal(self, execution_id: int, recommendation_id: int | None, exc: OrderRejected, now: dt.datetime,
                        summary: DispatchSummary) -> None:
        code = ReasonCode.INSUFFICIENT_BUYING_POWER if exc.code == "insufficient_buying_power" else ReasonCode.ORDER_REJECTED
        summary.rejected[code.value] += 1
        self.log.warning("rec %s order refused by the broker: %s", recommendation_id, exc)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            repo.update_execution(execution_id, status=REJECTED, error=str(exc))
            if recommendation_id is not None:
                repo.decide(recommendation_id, now=now, status=REJECTED, reason_code=code.value, detail=f"broker: {exc}")
