"""Settling orders whose outcome is not known yet, by ``client_order_id`` (SPEC "Submission is
idempotent"; issue "Exactly once, under crashes and ambiguity").

An entry's execution row is committed with its deterministic ``client_order_id`` *before* the
order is sent, and a close's ``close_client_order_id`` likewise before the sell. A crash, a lost
answer or a broker that is still working the order leaves that row unsettled; both the position
manager (before it reconciles) and the dispatcher (before it claims) settle them here:

- found at the broker → the broker's answer is recorded (a fill with its price and quantity; an
  order cancelled, expired or rejected unfilled as such);
- not found → the order never reached the broker: the caller decides (the dispatcher sends it
  again with the same id while the recommendation is fresh; the position manager sends the close
  again with the same id);
- the broker cannot be asked → the outcome stays unknown: nothing is concluded this run, and the
  position manager does not adopt or close what such an order may explain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import EXPIRED, FILLED, REJECTED, AccountRepository
from ops_pipeline.domain.gates import ReasonCode
from ops_pipeline.domain.values import money
from ops_pipeline.errors import BrokerError
from ops_pipeline.ports import Broker, OrderResult, OrderStatus
from ops_pipeline.services.runs import AccountLog

WORKING = frozenset({OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})


class Outcome(StrEnum):
    """What a lookup by client_order_id concluded about one order."""

    FILLED = "filled"
    WORKING = "working"
    """At the broker, not finished: nothing more may be sent for it."""
    UNFILLED = "unfilled"
    """Finished without a fill (cancelled, expired, rejected)."""
    NOT_FOUND = "not_found"
    """Never reached the broker: it may be sent again with the same client_order_id."""
    UNKNOWN = "unknown"
    """The broker could not be asked."""


def outcome_of(result: OrderResult | None) -> Outcome:
    if result is None:
        return Outcome.NOT_FOUND
    if result.status is OrderStatus.FILLED:
        return Outcome.FILLED
    if result.status in WORKING:
        return Outcome.WORKING
    return Outcome.FILLED if result.filled_qty > 0 else Outcome.UNFILLED


@dataclass
class EntrySettlement:
    """What settling the unsettled executions found: execution id → outcome, and the rows."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    rows: dict[int, Any] = field(default_factory=dict)
    error: str | None = None

    def with_outcome(self, outcome: Outcome) -> list[Any]:
        return [self.rows[i] for i, o in self.outcomes.items() if o is outcome]

    def explained_contracts(self) -> dict[str, int]:
        """Contracts per option symbol that orders still open to doubt may hold at the broker (working,
        or not asked): the position manager must neither adopt nor close those."""
        explained: dict[str, int] = {}
        for execution_id, outcome in self.outcomes.items():
            if outcome in (Outcome.WORKING, Outcome.UNKNOWN):
                row = self.rows[execution_id]
                explained[row.option_symbol] = explained.get(row.option_symbol, 0) + row.contracts
        return explained


def record_entry_result(repo: AccountRepository, execution: Any, result: OrderResult, now: dt.datetime,
                        quality_score: float | None) -> Outcome:
    """Write the broker's answer on an execution and on its recommendation's decision.

    A fill (or a partial fill of an order that is finished) sets the execution ``filled`` with the
    broker's price and quantity; an order still working keeps its broker status; one finished
    unfilled is ``expired`` (cancelled, expired) or ``rejected``, and its decision says so.
    """
    outcome = outcome_of(result)
    values: dict[str, Any] = {"broker_order_id": result.broker_order_id}
    recommendation_id = execution.recommendation_id
    if outcome is Outcome.FILLED and result.filled_avg_price is not None:
        values.update(status=FILLED, premium=result.filled_avg_price, contracts=result.filled_qty,
                      filled_at=result.filled_at or now, notional=money(result.filled_avg_price * 100 * result.filled_qty))
        if result.quote_source is not None:
            values.update(quote_source=result.quote_source.value, quote_ts=result.quote_time,
                          quote_snapshot=result.quote_snapshot,
                          quote_age_secs=round((now - result.quote_time).total_seconds(), 1) if result.quote_time else None)
        repo.update_execution(execution.id, **values)
        if recommendation_id is not None:
            repo.decide(recommendation_id, now=now, status="executed", option_symbol=str(result.symbol),
                        quality_score=quality_score, contracts=result.filled_qty)
        return outcome
    if outcome is Outcome.WORKING or (outcome is Outcome.FILLED and result.filled_avg_price is None):
        # a fill without a price is not a fill yet: keep asking until the broker gives the price
        status = result.status.value if outcome is Outcome.WORKING else "accepted"
        repo.update_execution(execution.id, status=status, **values)
        if recommendation_id is not None:
            repo.decide(recommendation_id, now=now, status="executed", option_symbol=str(result.symbol),
                        quality_score=quality_score, contracts=result.qty)
        return Outcome.WORKING
    status = REJECTED if result.status is OrderStatus.REJECTED else EXPIRED
    reason = f"the broker {result.status.value} the order unfilled"
    repo.update_execution(execution.id, status=status, error=reason, **values)
    if recommendation_id is not None:
        code = ReasonCode.ORDER_REJECTED if status == REJECTED else ReasonCode.ORDER_EXPIRED
        repo.decide(recommendation_id, now=now, status=REJECTED, reason_code=code.value, detail=reason)
    return outcome


def settle_entries(db: Database, account_name: str, broker: Broker, now: dt.datetime, log: AccountLog) -> EntrySettlement:
    """Look every unsettled execution of this account up by client_order_id and record what the
    broker says. Not-found rows are left for the caller (see :class:`Outcome`). A broker failure
    stops the lookups: that row and the rest are ``UNKNOWN``, the error kept in ``error``."""
    with db.read() as conn:
        rows = AccountRepository(conn, account_name).unsettled_executions()
    settlement = EntrySettlement(rows={r.id: r for r in rows})
    for row in rows:
        if settlement.error is not None:
            settlement.outcomes[row.id] = Outcome.UNKNOWN
            continue
        try:
            result = broker.get_order_by_client_id(row.client_order_id)
        except BrokerError as exc:
            settlement.error = f"{type(exc).__name__}: {exc}"
            settlement.outcomes[row.id] = Outcome.UNKNOWN
            log.warning("order %s could not be looked up (%s); settled next run", row.client_order_id, exc)
            continue
        if result is None:
            settlement.outcomes[row.id] = Outcome.NOT_FOUND
            continue
        with db.transaction() as conn:
            outcome = record_entry_result(AccountRepository(conn, account_name), row, result, now,
                                          float(row.quality_score) if row.quality_score is not None else None)
        settlement.outcomes[row.id] = outcome
        if outcome is not Outcome.WORKING:
            log.info("order %s settled by client_order_id: %s (%s × %s)", row.client_order_id, outcome.value,
                     result.filled_qty, result.filled_avg_price)
    return settlement


@dataclass
class CloseLookup:
    """A closing position's sell order as the broker knows it."""

    outcome: Outcome
    result: OrderResult | None = None


def look_up_closes(positions: list[Any], broker: Broker, log: AccountLog) -> dict[int, CloseLookup]:
    """For each ``closing`` position with a stored ``close_client_order_id``: what became of the sell.

    Returns position id → lookup; a broker failure makes that position and the rest ``UNKNOWN``.
    """
    found: dict[int, CloseLookup] = {}
    failed = False
    for row in positions:
        if failed:
            found[row.id] = CloseLookup(Outcome.UNKNOWN)
            continue
        try:
            result = broker.get_order_by_client_id(row.close_client_order_id)
        except BrokerError as exc:
            log.warning("close order %s could not be looked up (%s)", row.close_client_order_id, exc)
            failed = True
            found[row.id] = CloseLookup(Outcome.UNKNOWN)
            continue
        found[row.id] = CloseLookup(outcome_of(result), result)
    return found
