"""The dispatcher: one run for one account (SPEC "The dispatcher, one run for one account").

1. Resolve orders whose outcome was left unknown by an earlier run (looked up by ``client_order_id``).
2. Decide stale recommendations (older than ``lookback_window_minutes``) in bulk; claim up to
   ``max_signals_per_run`` fresh ones for this account (the rest wait for the next run).
3. Read the account (broker: equity, buying power, unrealized P&L; database: exposure, trades,
   realized P&L today) once, then judge each claim with the pure
   :func:`~ops_pipeline.domain.entry.decide_entry`, updating the account values in memory after
   each order.
4. Submit idempotently: the execution row with its deterministic ``client_order_id`` is committed
   *before* the order is sent; an ambiguous failure leaves it ``pending_submit`` for step 1.

A broker that cannot be read leaves the claims ``processing``; they are retried once older than
``processing_ttl_minutes``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import (
    FAILED,
    FILLED,
    PENDING_SUBMIT,
    REJECTED,
    AccountRepository,
    SharedRepository,
)
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.contracts import DTE_WINDOWS
from ops_pipeline.domain.entry import Entry, decide_entry
from ops_pipeline.domain.gates import AccountSnapshot, Denied, ReasonCode, pre_contract_gates
from ops_pipeline.domain.market import Recommendation
from ops_pipeline.domain.values import ZERO, AccountState, ExecutionMode, money, option_type_for
from ops_pipeline.errors import BrokerError, BrokerTemporaryError, OrderRejected
from ops_pipeline.ports import Broker, Clock, MarketData, OrderRequest, OrderResult, OrderSide, OrderStatus
from ops_pipeline.services.runs import account_log, day_start, run_id_for


@dataclass
class DispatchSummary:
    run_id: str
    claimed: int = 0
    stale: int = 0
    executed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    resolved: int = 0
    error: str | None = None

    credentials: str | None = None

    def as_dict(self) -> dict[str, Any]:
        summary = {"claimed": self.claimed, "stale": self.stale, "executed": self.executed,
                   "rejected": dict(sorted(self.rejected.items())), "resolved": self.resolved}
        return summary | ({"credentials": self.credentials} if self.credentials else {})


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

    def run(self) -> DispatchSummary:
        now = self.clock.now()
        name, cfg = self.config.name, self.config.risk
        summary = DispatchSummary(run_id_for("dispatcher", name, now), credentials=self.credentials_label)
        with self.db.transaction() as conn:
            summary.run_id = AccountRepository(conn, name).start_run(summary.run_id, "dispatcher", now)
        try:
            summary.resolved = self._resolve_pending(now)
            with self.db.transaction() as conn:
                repo = AccountRepository(conn, name)
                state = AccountState(SharedRepository(conn).account_state(name) or "enabled")
                cutoff = now - dt.timedelta(minutes=cfg.lookback_window_minutes)
                summary.stale = repo.reject_stale(
                    run_id=summary.run_id, now=now, cutoff=cutoff, detail=f"max={cfg.lookback_window_minutes}min"
                )
                claims = repo.claim(run_id=summary.run_id, now=now, limit=cfg.max_signals_per_run,
                                    ttl=dt.timedelta(minutes=cfg.processing_ttl_minutes))
            summary.claimed = len(claims)
            if claims:
                account = self._snapshot(state, now)
                for rec in claims:
                    account = self._handle(rec, account, now, summary)
            status = "ok"
        except BrokerError as exc:
            summary.error, status = f"{type(exc).__name__}: {exc}", "error"
            self.log.error("run stopped by a broker failure (claims are retried after the TTL): %s", exc)
        with self.db.transaction() as conn:
            AccountRepository(conn, name).finish_run(summary.run_id, self.clock.now(), status, summary.as_dict(), summary.error)
        return summary

    # --- account state ------------------------------------------------------------------------
    def _snapshot(self, state: AccountState, now: dt.datetime) -> AccountSnapshot:
        broker_account = self.broker.get_account()
        unrealized = sum((p.unrealized_pl or ZERO for p in self.broker.get_positions()), ZERO)
        since = day_start(now)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            exposure = repo.exposure()
            today, last = repo.trades_by_ticker(since)
            realized = repo.realized_pnl_since(since)
        equity = broker_account.equity
        expected = self.config.expected_tier_for(equity)
        if expected is not self.config.risk.account_tier and not self._tier_warned:
            self._tier_warned = True
            self.log.warning("equity %.2f says tier %s, configured tier is %s (configured tier used)",
                             equity, expected.value, self.config.risk.account_tier.value)
        return AccountSnapshot(
            state=state, equity_usd=equity, buying_power_usd=broker_account.options_buying_power,
            open_positions=exposure.open_positions, open_exposure_usd=exposure.open_exposure,
            realized_pnl_today_usd=realized, unrealized_pnl_usd=unrealized,
            trades_today_by_ticker=today, last_trade_at_by_ticker=last,
        )

    # --- one recommendation -------------------------------------------------------------------
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
        result = self._submit(rec, verdict, now, summary)
        if result is None:
            return account
        cost = money(result.filled_avg_price or verdict.contract.quote.ask) * 100 * result.filled_qty
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

    def _submit(self, rec: Recommendation, entry: Entry, now: dt.datetime, summary: DispatchSummary) -> OrderResult | None:
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
        try:
            result = self.broker.submit_order(request)
        except OrderRejected as exc:
            if exc.code == "duplicate_client_order_id":
                result = self.broker.get_order_by_client_id(client_order_id)
            else:
                result = None
            if result is None:
                self._record_refusal(execution_id, rec, exc, now, summary)
                return None
        except BrokerTemporaryError as exc:
            self.log.warning("order %s outcome unknown (%s); resolved by client_order_id next run", client_order_id, exc)
            with self.db.transaction() as conn:
                AccountRepository(conn, self.config.name).update_execution(execution_id, error=str(exc))
            return None
        self._apply(execution_id, rec.id, result, entry.contract.score.total, now)
        summary.executed += 1
        return result

    def _record_refusal(self, execution_id: int, rec: Recommendation, exc: OrderRejected, now: dt.datetime,
                        summary: DispatchSummary) -> None:
        code = ReasonCode.INSUFFICIENT_BUYING_POWER if exc.code == "insufficient_buying_power" else ReasonCode.ORDER_REJECTED
        summary.rejected[code.value] += 1
        self.log.warning("rec %s order refused by the broker: %s", rec.id, exc)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            repo.update_execution(execution_id, status=REJECTED, error=str(exc))
            repo.decide(rec.id, now=now, status=REJECTED, reason_code=code.value, detail=f"broker: {exc}")

    def _apply(self, execution_id: int, recommendation_id: int | None, result: OrderResult,
               quality_score: float | None, now: dt.datetime) -> None:
        filled = result.status is OrderStatus.FILLED
        values: dict[str, Any] = {"broker_order_id": result.broker_order_id,
                                  "status": FILLED if filled else result.status.value}
        if filled and result.filled_avg_price is not None:
            values.update(premium=result.filled_avg_price, contracts=result.filled_qty, filled_at=result.filled_at,
                          notional=money(result.filled_avg_price * 100 * result.filled_qty))
            if result.quote_source is not None:
                values.update(quote_source=result.quote_source.value, quote_ts=result.quote_time,
                              quote_snapshot=result.quote_snapshot,
                              quote_age_secs=round((now - result.quote_time).total_seconds(), 1) if result.quote_time else None)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.config.name)
            repo.update_execution(execution_id, **values)
            if recommendation_id is not None:
                repo.decide(recommendation_id, now=now, status="executed", option_symbol=str(result.symbol),
                            quality_score=quality_score, contracts=result.filled_qty or result.qty)

    def _resolve_pending(self, now: dt.datetime) -> int:
        """Settle executions left ``pending_submit`` by an ambiguous failure (look up by client id)."""
        with self.db.transaction() as conn:
            pending = AccountRepository(conn, self.config.name).pending_executions()
        for row in pending:
            result = self.broker.get_order_by_client_id(row.client_order_id)
            if result is not None:
                self._apply(row.id, row.recommendation_id, result, float(row.quality_score or 0), now)
                continue
            with self.db.transaction() as conn:
                repo = AccountRepository(conn, self.config.name)
                repo.update_execution(row.id, status=FAILED, error="order not found at the broker after an ambiguous submit")
                if row.recommendation_id is not None:
                    repo.decide(row.recommendation_id, now=now, status="error", reason_code=ReasonCode.BROKER_ERROR.value,
                                detail="order outcome unknown; not found by client_order_id")
        return len(pending)

