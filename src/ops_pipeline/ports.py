"""Protocols the services depend on; adapters implement them (simulated broker, Alpaca, files…).

Distinct input and output types cross every boundary: :class:`OrderRequest` goes in,
:class:`OrderResult` comes out. Prices are Decimal dollars per share; quantities whole contracts;
times aware.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from ops_pipeline.domain.market import OptionQuote, QuoteSource
from ops_pipeline.domain.values import OccSymbol, OptionType


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, aware (UTC)."""
        ...


class MarketData(Protocol):
    def underlying_price(self, ticker: str, now: dt.datetime) -> Decimal | None: ...

    def option_chain(
        self, ticker: str, now: dt.datetime, *, option_type: OptionType, min_dte: int, max_dte: int
    ) -> Sequence[OptionQuote]:
        """Quotes of one type of ``ticker``'s contracts in the DTE window (a list, or an
        :class:`~ops_pipeline.domain.market.OptionChain` whose quotes are built when read)."""
        ...

    def option_quote(self, symbol: OccSymbol, now: dt.datetime) -> OptionQuote | None: ...


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """Alpaca's order statuses that matter here (wire values)."""

    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order for whole option contracts, time in force ``day`` (Alpaca options rule): a market
    order, or a limit order when ``limit_price`` (dollars per share) is given."""

    client_order_id: str
    symbol: OccSymbol
    side: OrderSide
    qty: int
    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What the broker says about an order.

    ``filled_avg_price`` is dollars per share; ``quote_*`` say which quote a simulated fill used
    (``None`` from a real broker).
    """

    broker_order_id: str
    client_order_id: str
    symbol: OccSymbol
    side: OrderSide
    qty: int
    status: OrderStatus
    filled_qty: int
    filled_avg_price: Decimal | None
    submitted_at: dt.datetime
    filled_at: dt.datetime | None
    quote_source: QuoteSource | None = None
    quote_time: dt.datetime | None = None
    quote_snapshot: str | None = None
    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """Account figures in dollars (Alpaca ``/v2/account``)."""

    account_number: str
    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    options_buying_power: Decimal


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """A position the broker holds: whole contracts, average entry and mark per share."""

    symbol: OccSymbol
    qty: int
    avg_entry_price: Decimal
    current_price: Decimal | None
    unrealized_pl: Decimal | None


class Broker(Protocol):
    """One account at one broker. Every adapter (simulated, Alpaca) has this shape.

    Errors: :class:`~ops_pipeline.errors.OrderRejected` (refused, record it),
    :class:`~ops_pipeline.errors.BrokerTemporaryError` (unknown outcome, look up by client id),
    :class:`~ops_pipeline.errors.PositionNotFound` (close of a position the broker lacks).
    """

    def get_account(self) -> BrokerAccount: ...

    def submit_order(self, request: OrderRequest) -> OrderResult: ...

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None: ...

    def get_positions(self) -> list[BrokerPosition]: ...

    def close_position(self, symbol: OccSymbol, qty: int, client_order_id: str) -> OrderResult: ...
