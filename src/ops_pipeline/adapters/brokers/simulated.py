"""The built-in paper broker (``EXECUTION_MODE=SIMULATED``).

One :class:`SimulatedExchange` keeps every account's book; :meth:`SimulatedExchange.broker_for`
gives one account's :class:`SimulatedBroker`, which implements the ``Broker`` port and sees only
that account. Rules, modelled on Alpaca paper trading of long options:

- whole contracts, time in force ``day``. Market orders fill at once: buys at the **ask**, sells
  at the **bid** of the quote in force (``MarketData.option_quote`` at the clock's time), the
  quote's source and time recorded on the fill. Limit orders fill the same way when marketable
  (ask ≤ limit to buy, bid ≥ limit to sell); otherwise they rest (status ``new``), a resting buy
  holding its cost at the limit out of buying power, and are tried again at every later call on
  the account until filled or expired at the session's close;
- refused like Alpaca refuses: outside regular hours (``market_closed``), a buy costing more than
  the options buying power (``insufficient_buying_power``; long options are paid in full from cash),
  a sell of more than is held — never an opening sell (``insufficient_qty``), a sell into no bid
  (``no_bid``), a reused ``client_order_id`` (``duplicate_client_order_id``);
- closing a position that does not exist raises :class:`PositionNotFound`;
- at the close of an expiration day, held contracts settle at intrinsic value against the
  underlying's last price (cash-settled; Alpaca exercises in-the-money contracts, which for a
  long option is worth the same).

Order ids are ``sim-{account}-{n}``: deterministic for the same sequence of calls.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from decimal import Decimal

from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, TradingCalendar, exchange_date
from ops_pipeline.domain.values import CONTRACT_MULTIPLIER, ZERO, OccSymbol, OptionType, money
from ops_pipeline.errors import OrderRejected, PositionNotFound
from ops_pipeline.ports import (
    BrokerAccount,
    BrokerPosition,
    Clock,
    MarketData,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderStatus,
)


@dataclass
class Holding:
    qty: int
    avg_price: Decimal


@dataclass
class Settlement:
    """A position removed by expiry: the price per share it settled at."""

    symbol: OccSymbol
    qty: int
    price: Decimal
    at: dt.datetime


@dataclass
class Book:
    """One account at the simulated exchange: cash (dollars), holdings, orders (resting ones too),
    expiry settlements, and the order sequence. ``dirty`` names the orders changed since the book
    was last saved (see ``paper_exchange.state``)."""

    account_number: str
    cash: Decimal
    holdings: dict[str, Holding] = field(default_factory=dict)
    resting: dict[str, OrderRequest] = field(default_factory=dict)
    orders: dict[str, OrderResult] = field(default_factory=dict)
    by_client_id: dict[str, str] = field(default_factory=dict)
    settlements: list[Settlement] = field(default_factory=list)
    sequence: int = 0
    dirty: set[str] = field(default_factory=set)

    def record(self, order_id: str, order: OrderResult) -> None:
        """Store (or replace) an order and mark it for saving."""
        self.orders[order_id] = order
        self.dirty.add(order_id)


class SimulatedExchange:
    """Every simulated account's book, one market, one clock."""

    def __init__(self, market: MarketData, clock: Clock, calendar: TradingCalendar) -> None:
        self.market = market
        self.clock = clock
        self.calendar = calendar
        self._books: dict[str, Book] = {}
        self._closes: dict[str, dt.datetime] = {}

    def open_account(self, account_name: str, cash_usd: Decimal) -> None:
        """Create an account holding ``cash_usd`` dollars (no-op if it exists)."""
        if account_name not in self._books:
            self._books[account_name] = Book(account_number=f"SIM-{account_name.upper()}", cash=money(cash_usd))

    def books(self) -> dict[str, Book]:
        """Every account's book by account name (the paper exchange saves them)."""
        return self._books

    def restore(self, account_name: str, book: Book) -> None:
        """Put back a saved book (a restarted paper exchange)."""
        self._books[account_name] = book

    def broker_for(self, account_name: str) -> SimulatedBroker:
        """The ``Broker`` of one account.

        Raises:
            KeyError: no such account was opened.
        """
        return SimulatedBroker(self, account_name, self._books[account_name])

    def settle_expirations(self) -> list[tuple[str, Settlement]]:
        """Settle, in every account, each contract whose expiration day has closed (call at the close)."""
        now = self.clock.now()
        return [(name, settlement) for name, book in self._books.items() for settlement in self.settle_book(book, now)]

    def _expiry_close(self, key: str) -> dt.datetime:
        """When the contract ``key`` (OCC symbol) expires: its expiration day's close (16:00
        exchange time if the calendar has no session that day). Asked of every holding at every
        request, so remembered per contract."""
        close = self._closes.get(key)
        if close is None:
            symbol = OccSymbol.parse(key)
            session = self.calendar.session(symbol.expiration)
            close = self._closes[key] = session.close if session is not None else dt.datetime.combine(
                symbol.expiration, dt.time(16), EXCHANGE_TZ)
        return close

    def settle_book(self, book: Book, now: dt.datetime) -> list[Settlement]:
        """Settle one account's contracts whose expiration day closed at or before ``now``: each at its
        intrinsic value against the underlying's price at that close, paid in cash (a long option
        exercised or expiring worthless). Called by every request on the account, so a served exchange
        left running past an expiry settles it too."""
        settled = []
        for key in list(book.holdings):
            close = self._expiry_close(key)
            if now < close:
                continue
            symbol = OccSymbol.parse(key)
            holding = book.holdings.pop(key)
            spot = self.market.underlying_price(symbol.underlying, close) or ZERO
            intrinsic = spot - symbol.strike if symbol.option_type is OptionType.CALL else symbol.strike - spot
            price = money(max(intrinsic, ZERO))
            book.cash += price * CONTRACT_MULTIPLIER * holding.qty
            settlement = Settlement(symbol, holding.qty, price, close)
            book.settlements.append(settlement)
            settled.append(settlement)
        return settled


class SimulatedBroker:
    """One account's view of the :class:`SimulatedExchange` (implements ``Broker``)."""

    def __init__(self, exchange: SimulatedExchange, account_name: str, book: Book) -> None:
        self._exchange = exchange
        self.account_name = account_name
        self._book = book

    # --- reads --------------------------------------------------------------------------------
    def _mark(self, symbol: OccSymbol, holding: Holding) -> Decimal:
        quote = self._exchange.market.option_quote(symbol, self._exchange.clock.now())
        return quote.mid if quote is not None else holding.avg_price

    def _reserved(self) -> Decimal:
        return sum((r.limit_price * CONTRACT_MULTIPLIER * r.qty for r in self._book.resting.values()
                    if r.side is OrderSide.BUY and r.limit_price is not None), ZERO)

    def _sweep(self) -> None:
        """Settle expired contracts; fill resting limit orders that became marketable; expire those
        of an earlier session."""
        now = self._exchange.clock.now()
        self._exchange.settle_book(self._book, now)
        for order_id, request in list(self._book.resting.items()):
            placed = self._book.orders[order_id]
            session = self._exchange.calendar.session(exchange_date(placed.submitted_at))
            if session is None or now >= session.close:
                del self._book.resting[order_id]
                self._book.record(order_id, replace(placed, status=OrderStatus.EXPIRED))
                continue
            if not self._exchange.calendar.is_open(now):
                continue
            quote = self._exchange.market.option_quote(request.symbol, now)
            price = self._marketable_price(request, quote)
            if price is not None:
                del self._book.resting[order_id]
                self._fill(request, price)
                self._book.record(order_id, replace(
                    placed, status=OrderStatus.FILLED, filled_qty=request.qty, filled_avg_price=price, filled_at=now,
                    quote_source=quote.source, quote_time=quote.quote_time, quote_snapshot=quote.snapshot))

    @staticmethod
    def _marketable_price(request: OrderRequest, quote) -> Decimal | None:  # noqa: ANN001 - OptionQuote | None
        """The fill price if the order can fill against ``quote`` now, else ``None``."""
        if quote is None:
            return None
        if request.side is OrderSide.BUY:
            ok = request.limit_price is None or quote.ask <= request.limit_price
            return quote.ask if ok else None
        ok = quote.has_bid and (request.limit_price is None or quote.bid >= request.limit_price)
        return quote.bid if ok else None

    def _fill(self, request: OrderRequest, price: Decimal) -> None:
        key = str(request.symbol)
        amount = price * CONTRACT_MULTIPLIER * request.qty
        held = self._book.holdings.get(key)
        if request.side is OrderSide.BUY:
            self._book.cash -= amount
            if held is None:
                self._book.holdings[key] = Holding(request.qty, price)
            else:
                total = held.qty + request.qty
                held.avg_price = (held.avg_price * held.qty + price * request.qty) / total
                held.qty = total
        else:
            assert held is not None
            self._book.cash += amount
            held.qty -= request.qty
            if held.qty == 0:
                del self._book.holdings[key]

    def get_account(self) -> BrokerAccount:
        self._sweep()
        value = sum(
            (self._mark(OccSymbol.parse(k), h) * CONTRACT_MULTIPLIER * h.qty for k, h in self._book.holdings.items()),
            ZERO,
        )
        cash = self._book.cash
        buying_power = cash - self._reserved()
        return BrokerAccount(self._book.account_number, money(cash + value), cash, buying_power, buying_power)

    def get_positions(self) -> list[BrokerPosition]:
        self._sweep()
        positions = []
        for key, holding in sorted(self._book.holdings.items()):
            symbol = OccSymbol.parse(key)
            mark = self._mark(symbol, holding)
            unrealized = money((mark - holding.avg_price) * CONTRACT_MULTIPLIER * holding.qty)
            positions.append(BrokerPosition(symbol, holding.qty, holding.avg_price, mark, unrealized))
        return positions

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        self._sweep()
        order_id = self._book.by_client_id.get(client_order_id)
        return self._book.orders[order_id] if order_id else None

    def orders(self) -> list[OrderResult]:
        """Every order of this account, oldest first."""
        self._sweep()
        return list(self._book.orders.values())

    # --- orders -------------------------------------------------------------------------------
    def submit_order(self, request: OrderRequest) -> OrderResult:
        self._sweep()
        now = self._exchange.clock.now()
        if request.client_order_id in self._book.by_client_id:
            raise OrderRejected("duplicate_client_order_id", "client_order_id must be unique")
        if request.qty < 1:
            raise OrderRejected("invalid_qty", f"qty must be a whole number of contracts ≥ 1, got {request.qty}")
        if request.limit_price is not None and request.limit_price <= 0:
            raise OrderRejected("invalid_qty", f"limit price must be positive, got {request.limit_price}")
        if not self._exchange.calendar.is_open(now):
            raise OrderRejected("market_closed", f"options orders are accepted in regular hours only ({now:%Y-%m-%d %H:%M} UTC)")
        quote = self._exchange.market.option_quote(request.symbol, now)
        if quote is None:
            raise OrderRejected("no_quote", f"no quote for {request.symbol}")
        key = str(request.symbol)
        available = self._book.cash - self._reserved()
        if request.side is OrderSide.BUY:
            worst = request.limit_price if request.limit_price is not None else quote.ask
            cost = worst * CONTRACT_MULTIPLIER * request.qty
            if cost > available:
                raise OrderRejected(
                    "insufficient_buying_power",
                    f"insufficient options buying power: need {cost:.2f} have {available:.2f}",
                )
        else:
            held = self._book.holdings.get(key)
            pending = sum(r.qty for r in self._book.resting.values() if str(r.symbol) == key and r.side is OrderSide.SELL)
            if held is None or held.qty - pending < request.qty:
                raise OrderRejected(
                    "insufficient_qty",
                    f"held {held.qty if held else 0} of {key}, asked to sell {request.qty}; opening sells are refused",
                )
            if request.limit_price is None and not quote.has_bid:
                raise OrderRejected("no_bid", f"no bid for {key}")
        price = self._marketable_price(request, quote)
        self._book.sequence += 1
        order_id = f"sim-{self.account_name}-{self._book.sequence:06d}"
        if price is None:
            self._book.resting[order_id] = request
            result = OrderResult(order_id, request.client_order_id, request.symbol, request.side, request.qty,
                                 OrderStatus.NEW, 0, None, now, None, limit_price=request.limit_price)
        else:
            self._fill(request, price)
            result = OrderResult(
                broker_order_id=order_id, client_order_id=request.client_order_id, symbol=request.symbol,
                side=request.side, qty=request.qty, status=OrderStatus.FILLED, filled_qty=request.qty,
                filled_avg_price=price, submitted_at=now, filled_at=now, quote_source=quote.source,
                quote_time=quote.quote_time, quote_snapshot=quote.snapshot, limit_price=request.limit_price,
            )
        self._book.record(order_id, result)
        self._book.by_client_id[request.client_order_id] = order_id
        return result

    def close_position(self, symbol: OccSymbol, qty: int, client_order_id: str) -> OrderResult:
        held = self._book.holdings.get(str(symbol))
        if held is None:
            raise PositionNotFound(f"position does not exist: {symbol}")
        return self.submit_order(OrderRequest(client_order_id, symbol, OrderSide.SELL, min(qty, held.qty)))
