"""The paper exchange: the simulated broker served over HTTP with Alpaca's Trading API v2 paths and
JSON, so alpaca-py's ``TradingClient`` (``url_override``) and ``OptionHistoricalDataClient`` work
against it. One simulated account per API key (``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``).

Served: ``GET /v2/account``; ``POST /v2/orders`` (market or limit, whole contracts, ``day``);
``GET /v2/orders``, ``/v2/orders/{id}``, ``/v2/orders:by_client_order_id``; ``GET /v2/positions``;
``DELETE /v2/positions/{symbol}``; ``GET /v2/options/contracts`` (paged); ``GET /v2/clock``
(market time); market data ``GET /v1beta1/options/quotes/latest``, ``/v1beta1/options/snapshots``
(quote, greeks, implied volatility) and ``/v2/stocks/trades/latest`` (a trade at the latest close). Errors are Alpaca's ``{"code", "message"}`` bodies.
"""

from __future__ import annotations

import datetime as dt
import hmac
from decimal import Decimal
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ops_pipeline.adapters.brokers.paper_exchange import wire
from ops_pipeline.adapters.brokers.simulated import SimulatedBroker, SimulatedExchange
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.adapters.market_data.chains import YEAR_SECS, expiry_close_epoch
from ops_pipeline.domain.market import OptionQuote
from ops_pipeline.domain.values import OccSymbol, OptionType
from ops_pipeline.errors import OrderRejected, PositionNotFound
from ops_pipeline.ports import Clock, MarketData, OrderRequest, OrderSide


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


class OrderBody(BaseModel):
    symbol: str
    qty: str | int | float | None = None
    side: str
    type: str = "market"
    time_in_force: str = "day"
    client_order_id: str | None = None
    limit_price: str | float | None = None


def create_app(exchange: SimulatedExchange, keys: dict[str, ApiKey], market: MarketData, clock: Clock) -> FastAPI:
    """The ASGI app; every call is serialised by one lock (the simulated books are not thread-safe)."""
    calendar = exchange.calendar
    app = FastAPI(title="ops-pipeline paper exchange", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    opened = clock.now()
    sequence = iter(range(1, 10**12))

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    def key_for(request: Request) -> ApiKey:
        """The key of the request's Alpaca headers, or 401."""
        entry = keys.get(request.headers.get("APCA-API-KEY-ID", ""))
        secret = request.headers.get("APCA-API-SECRET-KEY", "")
        if entry is None or not hmac.compare_digest(entry.secret.encode(), secret.encode()):
            raise ApiError("unauthorized", "request is not authorized")
        return entry

    def broker_for(request: Request) -> SimulatedBroker:
        return exchange.broker_for(key_for(request).account_name)

    def quotes_for(symbols: str, now: dt.datetime) -> list[OptionQuote]:
        """Quotes of comma-separated OCC symbols (unknown contracts left out; malformed ones: 422)."""
        try:
            parsed = [OccSymbol.parse(raw.strip()) for raw in symbols.split(",") if raw.strip()]
        except ValueError as exc:
            raise ApiError("invalid_qty", str(exc)) from None
        return [q for q in (market.option_quote(symbol, now) for symbol in parsed) if q is not None]

    @app.get("/v2/account")
    def account(request: Request) -> dict[str, Any]:
        with lock:
            entry = key_for(request)
            broker = exchange.broker_for(entry.account_name)
            return wire.account_json(wire.asset_id(broker.account_name), broker.get_account(), opened, entry.options_level)

    @app.post("/v2/orders")
    def submit(body: OrderBody, request: Request) -> dict[str, Any]:
        with lock:
            broker = broker_for(request)
            if body.type not in {"market", "limit"} or body.time_in_force != "day":
                raise ApiError("invalid_qty", "options orders are market or limit orders with time_in_force day")
            try:
                qty = float(body.qty or 0)
                symbol = OccSymbol.parse(body.symbol)
                side = OrderSide(body.side)
                limit = Decimal(str(body.limit_price)) if body.type == "limit" and body.limit_price is not None else None
            except (ValueError, ArithmeticError) as exc:
                raise ApiError("invalid_qty", str(exc)) from None
            if qty != int(qty):
                raise ApiError("invalid_qty", "options orders must be for whole contracts")
            if body.type == "limit" and limit is None:
                raise ApiError("invalid_qty", "a limit order needs limit_price")
            client_id = body.client_order_id or f"auto-{next(sequence)}"
            try:
                return wire.order_json(broker.submit_order(OrderRequest(client_id, symbol, side, int(qty), limit)))
            except OrderRejected as exc:
                raise ApiError(exc.code, str(exc)) from None

    @app.get("/v2/orders:by_client_order_id")
    def by_client_id(request: Request, client_order_id: str) -> dict[str, Any]:
        with lock:
            order = broker_for(request).get_order_by_client_id(client_order_id)
            if order is None:
                raise ApiError("order_not_found", f"order not found for {client_order_id}")
            return wire.order_json(order)

    @app.get("/v2/orders/{order_id}")
    def by_id(order_id: str, request: Request) -> dict[str, Any]:
        with lock:
            order = next((o for o in broker_for(request).orders() if wire.order_uuid(o.broker_order_id) == order_id), None)
            if order is None:
                raise ApiError("order_not_found", f"order not found for {order_id}")
            return wire.order_json(order)

    @app.get("/v2/orders")
    def orders(request: Request, status: str = "open", limit: int = 50) -> list[dict[str, Any]]:
        with lock:
            found = broker_for(request).orders()
            if status in {"open", "closed"}:
                still_open = {"new", "accepted", "partially_filled"}
                found = [o for o in found if (o.status.value in still_open) == (status == "open")]
            return [wire.order_json(o) for o in reversed(found)][:limit]

    @app.get("/v2/positions")
    def positions(request: Request) -> list[dict[str, Any]]:
        with lock:
            return [wire.position_json(p) for p in broker_for(request).get_positions()]

    @app.delete("/v2/positions/{symbol}")
    def close(request: Request, symbol: str, qty: str | None = None) -> dict[str, Any]:
        with lock:
            broker = broker_for(request)
            try:
                occ = OccSymbol.parse(symbol)
                held = {str(p.symbol): p.qty for p in broker.get_positions()}.get(str(occ), 0)
                result = broker.close_position(occ, int(float(qty)) if qty else held, f"close-{next(sequence)}")
            except PositionNotFound:
                raise ApiError("position_not_found", "position does not exist") from None
            except OrderRejected as exc:
                raise ApiError(exc.code, str(exc)) from None
            except ValueError as exc:
                raise ApiError("invalid_qty", str(exc)) from None
            return wire.order_json(result)

    @app.get("/v2/options/contracts")
    def contracts(
        underlying_symbols: str, type: str | None = None, expiration_date_gte: dt.date | None = None,
        expiration_date_lte: dt.date | None = None, limit: Annotated[int, Query(le=10000)] = 100,
        page_token: str | None = None, *, request: Request,
    ) -> dict[str, Any]:
        with lock:
            broker_for(request)
            now = clock.now()
            today = exchange_date(now)
            low = (expiration_date_gte - today).days if expiration_date_gte else 0
            high = (expiration_date_lte - today).days if expiration_date_lte else 45
            kinds = [OptionType(type)] if type else [OptionType.CALL, OptionType.PUT]
            found = [q for ticker in underlying_symbols.split(",") for kind in kinds
                     for q in market.option_chain(ticker.strip().upper(), now, option_type=kind,
                                                  min_dte=max(0, low), max_dte=max(0, high))]
            found.sort(key=lambda q: str(q.symbol))
            start = int(page_token or 0)
            page = found[start:start + limit]
            more = start + limit < len(found)
            return {"option_contracts": [wire.contract_json(q) for q in page],
                    "next_page_token": str(start + limit) if more else None}

    @app.get("/v1beta1/options/quotes/latest")
    def latest_quotes(request: Request, symbols: str, feed: str | None = None) -> dict[str, Any]:
        with lock:
            broker_for(request)
            return {"quotes": {str(q.symbol): wire.quote_json(q) for q in quotes_for(symbols, clock.now())}}

    @app.get("/v1beta1/options/snapshots")
    def snapshots(request: Request, symbols: str, feed: str | None = None, limit: int | None = None,
                  page_token: str | None = None) -> dict[str, Any]:
        with lock:
            broker_for(request)
            now = clock.now()
            found = {str(q.symbol): wire.snapshot_json(q, (expiry_close_epoch(q.symbol.expiration) - now.timestamp()) / YEAR_SECS)
                     for q in quotes_for(symbols, now)}
            return {"snapshots": found, "next_page_token": None}

    @app.get("/v2/stocks/trades/latest")
    def latest_trades(request: Request, symbols: str, feed: str | None = None) -> dict[str, Any]:
        with lock:
            broker_for(request)
            now = clock.now()
            trades = {}
            for ticker in symbols.split(","):
                price = market.underlying_price(ticker.strip().upper(), now)
                if price is not None:
                    trades[ticker.strip().upper()] = wire.trade_json(price, now)
            return {"trades": trades}

    @app.get("/v2/clock")
    def market_clock(request: Request) -> dict[str, Any]:
        with lock:
            broker_for(request)
            now = clock.now()
            sessions = calendar.sessions(exchange_date(now), exchange_date(now) + dt.timedelta(days=10))
            is_open = calendar.is_open(now)
            upcoming = [s for s in sessions if s.close > now]
            next_open = next(s.open for s in upcoming if s.open > now) if upcoming else now
            return wire.clock_json(now, is_open, next_open, upcoming[0].close if upcoming else now)

    return app
