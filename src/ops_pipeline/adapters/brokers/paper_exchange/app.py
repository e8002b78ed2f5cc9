"""The paper exchange: the simulated broker served over HTTP with Alpaca's Trading API v2 paths and
JSON, so alpaca-py's ``TradingClient`` (``url_override``) and ``OptionHistoricalDataClient`` work
against it. One simulated account per API key (``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``).

Served: ``GET /v2/account``; ``POST /v2/orders`` (market or limit, whole contracts, ``day``);
``GET /v2/orders``, ``/v2/orders/{id}``, ``/v2/orders:by_client_order_id``; ``GET /v2/positions``;
``DELETE /v2/positions/{symbol}``; ``GET /v2/options/contracts`` (paged); ``GET /v2/clock``
(market time); market data ``GET /v1beta1/options/quotes/latest``, ``/v1beta1/options/snapshots``
(quote, greeks, implied volatility) and ``/v2/stocks/trades/latest`` (a trade at the latest close).

Every bad request gets Alpaca's 4xx with a ``{"code", "message"}`` body naming the field — never a
500: malformed JSON, non-finite or fractional quantities, a ``client_order_id`` over 128
characters, unknown enum values, bad paging (``limit`` out of range, a ``page_token`` that is not
one of ours); a body over :data:`MAX_BODY_BYTES` gets 413. With a :class:`ExchangeState`, each
account's book is saved after every request that touched it, before the answer is sent.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ops_pipeline.adapters.brokers.paper_exchange import wire
from ops_pipeline.adapters.brokers.paper_exchange.state import ExchangeState
from ops_pipeline.adapters.brokers.simulated import SimulatedBroker, SimulatedExchange
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.adapters.market_data.chains import YEAR_SECS, expiry_close_epoch
from ops_pipeline.domain.market import OptionQuote
from ops_pipeline.domain.recommendations import TICKER_PATTERN
from ops_pipeline.domain.values import OccSymbol, OptionType
from ops_pipeline.errors import OrderRejected, PositionNotFound
from ops_pipeline.ports import Clock, MarketData, OrderRequest, OrderSide

MAX_BODY_BYTES = 1024 * 1024
MAX_CLIENT_ORDER_ID = 128
"""Alpaca's limit on ``client_order_id``: 128 characters."""
MAX_QTY = 100_000
MAX_PRICE = Decimal("1000000")
MAX_SYMBOLS = 100
log = logging.getLogger("ops_pipeline.paper_exchange")


@dataclass(frozen=True)
class ApiKey:
    """One account's credentials on the exchange."""

    account_name: str
    secret: str
    options_level: int = 2


class ApiError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        self.status, self.body = wire.error_body(kind, message)
        super().__init__(message)


def invalid(message: str) -> ApiError:
    return ApiError("invalid_request", message)


def _finite(value: Any, field: str, what: str) -> Decimal:  # noqa: ANN401 - JSON or query text
    """A finite number from JSON (not a boolean) or text, or a 422 naming ``field``."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid(f"{field} is required and must be {what}, not {_shown(value)}")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except InvalidOperation:
        raise invalid(f"{field} must be a number, not {_shown(value)}") from None
    if not number.is_finite():
        raise invalid(f"{field} must be finite, not {_shown(value)}")
    return number


def parse_qty(value: Any, field: str = "qty") -> int:  # noqa: ANN401 - JSON or query text
    """A whole, positive number of contracts from JSON or query text.

    Raises:
        ApiError: 422 naming ``field``: missing, a boolean, not a number, not finite, fractional,
            not positive or above :data:`MAX_QTY`.
    """
    number = _finite(value, field, "a number of contracts")
    if number != number.to_integral_value():
        raise invalid(f"{field}: options orders must be for whole contracts, not {_shown(value)}")
    if not 1 <= number <= MAX_QTY:
        raise invalid(f"{field} must be from 1 to {MAX_QTY} contracts, not {_shown(value)}")
    return int(number)


def parse_price(value: Any, field: str) -> Decimal:  # noqa: ANN401 - JSON or query text
    """A finite, positive price in dollars per share.

    Raises:
        ApiError: 422 naming ``field``.
    """
    price = _finite(value, field, "a price")
    if not 0 < price < MAX_PRICE:
        raise invalid(f"{field} must be a price above 0 and below {MAX_PRICE}, not {_shown(value)}")
    return price


def _shown(value: Any) -> str:  # noqa: ANN401
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _instant(value: str | None, field: str) -> dt.datetime | None:
    """An RFC 3339 time or a date (naive: UTC, as Alpaca reads it), or a 422 naming ``field``."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{field} must be an RFC 3339 time, not {_shown(value)}") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:  # noqa: ANN401
    if not isinstance(value, str) or value not in allowed:
        raise invalid(f"{field} must be one of {', '.join(allowed)}, not {_shown(value)}")
    return value


def _symbols(text: str, *, field: str = "symbols") -> list[str]:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if not parts or len(parts) > MAX_SYMBOLS:
        raise invalid(f"{field} must list 1 to {MAX_SYMBOLS} symbols")
    return parts


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 without being read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = JSONResponse({"code": 41300000, "message": f"request body larger than {self.max_bytes} bytes"},
                                 status_code=413)
        try:
            if declared is not None and int(declared) > self.max_bytes:
                await too_large(scope, receive, send)
                return
        except ValueError:
            await JSONResponse({"code": 40010001, "message": "invalid Content-Length"}, status_code=400)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(exchange: SimulatedExchange, keys: dict[str, ApiKey], market: MarketData, clock: Clock,
               state: ExchangeState | None = None) -> FastAPI:
    """The ASGI app; every call is serialised by one lock (the simulated books are not thread-safe)."""
    calendar = exchange.calendar
    app = FastAPI(title="ops-pipeline paper exchange", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit)
    lock = threading.Lock()
    opened = clock.now()

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(_TooLarge)
    async def _too_large(_: Request, exc: _TooLarge) -> JSONResponse:
        return JSONResponse({"code": 41300000, "message": f"request body larger than {MAX_BODY_BYTES} bytes"},
                            status_code=413)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"code": 40010001, "message": problems or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("paper exchange: unexpected error")
        return JSONResponse({"code": 50010000, "message": "internal error"}, status_code=500)

    def key_for(request: Request) -> ApiKey:
        """The key of the request's Alpaca headers, or 401."""
        entry = keys.get(request.headers.get("APCA-API-KEY-ID", ""))
        secret = request.headers.get("APCA-API-SECRET-KEY", "")
        if entry is None or not hmac.compare_digest(entry.secret.encode(), secret.encode()):
            raise ApiError("unauthorized", "request is not authorized")
        return entry

    @contextmanager
    def account(request: Request) -> Iterator[tuple[ApiKey, SimulatedBroker]]:
        """Under the lock: the caller's key and broker; the book is saved before the answer leaves."""
        with lock:
            entry = key_for(request)
            broker = exchange.broker_for(entry.account_name)
            try:
                yield entry, broker
            finally:
                if state is not None:
                    state.save(entry.account_name, exchange.books()[entry.account_name], clock.now())

    @contextmanager
    def market_call(request: Request) -> Iterator[dt.datetime]:
        """Under the lock, authenticated: the market time of a market-data answer."""
        with lock:
            key_for(request)
            now = clock.now()
            yield now
            if state is not None:
                state.save_market_time(now)

    def quotes_for(symbols: str, now: dt.datetime) -> list[OptionQuote]:
        """Quotes of comma-separated OCC symbols (unknown contracts left out; malformed ones: 422)."""
        try:
            parsed = [OccSymbol.parse(raw) for raw in _symbols(symbols)]
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return [q for q in (market.option_quote(symbol, now) for symbol in parsed) if q is not None]

    @app.get("/v2/account")
    def get_account(request: Request) -> dict[str, Any]:
        with account(request) as (entry, broker):
            return wire.account_json(wire.asset_id(broker.account_name), broker.get_account(), opened, entry.options_level)

    @app.post("/v2/orders")
    async def submit(request: Request) -> dict[str, Any]:
        raw = await request.body()  # read here (any Content-Type); over MAX_BODY_BYTES → 413
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise invalid(f"the order is not JSON: {exc}") from None
        return await anyio.to_thread.run_sync(place, body, request)

    def place(body: Any, request: Request) -> dict[str, Any]:  # noqa: ANN401 - any JSON
        if not isinstance(body, dict):
            raise invalid("the order must be a JSON object")
        kind = _choice(body.get("type", "market"), "type", ("market", "limit"))
        _choice(body.get("time_in_force", "day"), "time_in_force", ("day",))
        side = OrderSide(_choice(body.get("side"), "side", ("buy", "sell")))
        symbol_text = body.get("symbol")
        if not isinstance(symbol_text, str) or len(symbol_text) > 32:
            raise invalid(f"symbol must be an OCC option symbol, not {_shown(symbol_text)}")
        try:
            symbol = OccSymbol.parse(symbol_text)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        qty = parse_qty(body.get("qty"))
        limit = parse_price(body.get("limit_price"), "limit_price") if kind == "limit" else None
        client_id = body.get("client_order_id")
        if client_id is None:
            client_id = str(uuid.uuid4())
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= MAX_CLIENT_ORDER_ID:
            raise invalid(f"client_order_id must be text of 1 to {MAX_CLIENT_ORDER_ID} characters")
        with account(request) as (_, broker):
            try:
                return wire.order_json(broker.submit_order(OrderRequest(client_id, symbol, side, qty, limit)))
            except OrderRejected as exc:
                raise ApiError(exc.code, str(exc)) from None

    @app.get("/v2/orders:by_client_order_id")
    def by_client_id(request: Request, client_order_id: str = Query(max_length=MAX_CLIENT_ORDER_ID)) -> dict[str, Any]:
        with account(request) as (_, broker):
            order = broker.get_order_by_client_id(client_order_id)
            if order is None:
                raise ApiError("order_not_found", f"order not found for {client_order_id}")
            return wire.order_json(order)

    @app.get("/v2/orders/{order_id}")
    def by_id(order_id: str, request: Request) -> dict[str, Any]:
        with account(request) as (_, broker):
            order = next((o for o in broker.orders() if wire.order_uuid(o.broker_order_id) == order_id), None)
            if order is None:
                raise ApiError("order_not_found", f"order not found for {order_id}")
            return wire.order_json(order)

    @app.get("/v2/orders")
    def orders(request: Request, status: str = "open", limit: int = Query(50, ge=1, le=500),
               symbols: str | None = None, side: str | None = None) -> list[dict[str, Any]]:
        _choice(status, "status", ("open", "closed", "all"))
        if side is not None:
            _choice(side, "side", ("buy", "sell"))
        wanted = set(_symbols(symbols)) if symbols is not None else None
        with account(request) as (_, broker):
            found = broker.orders()
            if status in {"open", "closed"}:
                still_open = {"new", "accepted", "partially_filled"}
                found = [o for o in found if (o.status.value in still_open) == (status == "open")]
            found = [o for o in found if (wanted is None or str(o.symbol) in wanted)
                     and (side is None or o.side.value == side)]
            return [wire.order_json(o) for o in reversed(found)][:limit]

    @app.get("/v2/positions")
    def positions(request: Request) -> list[dict[str, Any]]:
        with account(request) as (_, broker):
            return [wire.position_json(p) for p in broker.get_positions()]

    @app.delete("/v2/positions/{symbol}")
    def close(request: Request, symbol: str, qty: str | None = None) -> dict[str, Any]:
        try:
            occ = OccSymbol.parse(symbol)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        amount = parse_qty(qty) if qty is not None else None
        with account(request) as (_, broker):
            held = {str(p.symbol): p.qty for p in broker.get_positions()}.get(str(occ), 0)
            try:
                result = broker.close_position(occ, amount or held, str(uuid.uuid4()))
            except PositionNotFound:
                raise ApiError("position_not_found", "position does not exist") from None
            except OrderRejected as exc:
                raise ApiError(exc.code, str(exc)) from None
            return wire.order_json(result)

    @app.get("/v2/options/contracts")
    def contracts(
        request: Request, underlying_symbols: str, type: str | None = None,
        expiration_date_gte: dt.date | None = None, expiration_date_lte: dt.date | None = None,
        limit: int = Query(100, ge=1, le=10000), page_token: str | None = None,
    ) -> dict[str, Any]:
        kinds = [OptionType(_choice(type, "type", ("call", "put")))] if type is not None else [OptionType.CALL, OptionType.PUT]
        tickers = [t.upper() for t in _symbols(underlying_symbols, field="underlying_symbols")]
        if bad := [t for t in tickers if not TICKER_PATTERN.match(t)]:
            raise invalid(f"underlying_symbols: not a symbol: {_shown(bad[0])}")
        if page_token is not None and not (page_token.isdigit() and len(page_token) <= 9):
            raise invalid(f"page_token {_shown(page_token)} is not a token this server gave")
        start = int(page_token or 0)
        with market_call(request) as now:
            today = exchange_date(now)
            low = (expiration_date_gte - today).days if expiration_date_gte else 0
            high = (expiration_date_lte - today).days if expiration_date_lte else 45
            found = [q for ticker in tickers for kind in kinds
                     for q in market.option_chain(ticker, now, option_type=kind, min_dte=max(0, low), max_dte=max(0, high))]
            found.sort(key=lambda q: str(q.symbol))
            page = found[start:start + limit]
            more = start + limit < len(found)
            return {"option_contracts": [wire.contract_json(q) for q in page],
                    "next_page_token": str(start + limit) if more else None}

    @app.get("/v1beta1/options/quotes/latest")
    def latest_quotes(request: Request, symbols: str, feed: str | None = None) -> dict[str, Any]:
        with market_call(request) as now:
            return {"quotes": {str(q.symbol): wire.quote_json(q) for q in quotes_for(symbols, now)}}

    @app.get("/v1beta1/options/snapshots")
    def snapshots(request: Request, symbols: str, feed: str | None = None, limit: int | None = None,
                  page_token: str | None = None) -> dict[str, Any]:
        with market_call(request) as now:
            found = {str(q.symbol): wire.snapshot_json(q, (expiry_close_epoch(q.symbol.expiration) - now.timestamp()) / YEAR_SECS)
                     for q in quotes_for(symbols, now)}
            return {"snapshots": found, "next_page_token": None}

    @app.get("/v2/stocks/trades/latest")
    def latest_trades(request: Request, symbols: str, feed: str | None = None) -> dict[str, Any]:
        tickers = [t.upper() for t in _symbols(symbols)]
        with market_call(request) as now:
            trades = {}
            for ticker in tickers:
                price = market.underlying_price(ticker, now) if TICKER_PATTERN.match(ticker) else None
                if price is not None:
                    trades[ticker] = wire.trade_json(price, now)
            return {"trades": trades}

    @app.get("/v2/stocks/bars")
    def stock_bars(request: Request, symbols: str, timeframe: str, start: str | None = None, end: str | None = None,
                   limit: int = Query(1000, ge=1, le=10000), page_token: str | None = None, feed: str | None = None,
                   adjustment: str | None = None, sort: str | None = None, asof: str | None = None,
                   currency: str | None = None) -> dict[str, Any]:
        """1-minute bars from the data folder (``timeframe=1Min``) that have closed by the market time:
        nothing from the future. Paged across symbols as Alpaca does (``next_page_token``)."""
        _choice(timeframe, "timeframe", ("1Min", "1T"))
        if sort not in (None, "asc"):
            raise invalid(f"sort {_shown(sort)} is not supported by this exchange (asc only)")
        tickers = sorted({t.upper() for t in _symbols(symbols)})
        if bad := [t for t in tickers if not TICKER_PATTERN.match(t)]:
            raise invalid(f"symbols: not a symbol: {_shown(bad[0])}")
        lo, hi = _instant(start, "start"), _instant(end, "end")
        if page_token is not None and not (page_token.isdigit() and len(page_token) <= 9):
            raise invalid(f"page_token {_shown(page_token)} is not a token this server gave")
        offset = int(page_token or 0)
        with market_call(request) as now:
            rows: list[tuple[str, int]] = []
            for ticker in tickers:
                series = market.bars.get(ticker)
                if series is None or series.interval_secs != 60:
                    continue
                first = 0 if lo is None else int(np.searchsorted(series.start, lo.timestamp(), side="left"))
                last = series.last_closed_index(now.timestamp())
                if hi is not None:
                    last = min(last, int(np.searchsorted(series.start, hi.timestamp(), side="right")) - 1)
                rows += [(ticker, i) for i in range(first, last + 1)]
            page = rows[offset:offset + limit]
            bars: dict[str, list[dict[str, Any]]] = {}
            for ticker, i in page:
                s = market.bars[ticker]
                bars.setdefault(ticker, []).append(wire.bar_json(int(s.start[i]), float(s.open[i]), float(s.high[i]),
                                                                 float(s.low[i]), float(s.close[i]), float(s.volume[i])))
            more = offset + limit < len(rows)
            return {"bars": bars, "next_page_token": str(offset + limit) if more else None}

    @app.get("/v2/clock")
    def market_clock(request: Request) -> dict[str, Any]:
        """Answered without the exchange's lock: a scheduler polling the clock is never held up by
        another account's option chain being priced."""
        key_for(request)
        now = clock.now()
        sessions = calendar.sessions(exchange_date(now), exchange_date(now) + dt.timedelta(days=10))
        is_open = calendar.is_open(now)
        upcoming = [s for s in sessions if s.close > now]
        next_open = next(s.open for s in upcoming if s.open > now) if upcoming else now
        return wire.clock_json(now, is_open, next_open, upcoming[0].close if upcoming else now)

    return app
