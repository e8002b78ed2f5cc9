"""Alpaca paper trading through alpaca-py, behind the ``Broker`` port (``EXECUTION_MODE=ALPACA_PAPER``).

alpaca-py's traps, and what this adapter does about them (SPEC "Brokers"):

- it sets no request timeout → every request here has one (``timeout_secs``);
- it re-sends every request, order POSTs included, on 429 and 504 → that retry is switched off;
  an order is never re-sent blindly: after any ambiguous outcome (timeout, connection error, 5xx,
  422 "client_order_id must be unique") the order is looked up by its ``client_order_id``;
- a 429 means the request was refused unprocessed: wait (``Retry-After`` or one second), look the
  order up, and only then send it again; one token bucket per API key keeps a process under
  Alpaca's 200 requests a minute;
- options orders are ``day`` and whole contracts.

Closing sends a sell order for at most what the broker reports held, with its own
``client_order_id`` (idempotent like entries; never an opening sell). Paper only: a live trading URL
or a key that is not a paper key (``PK…``) is refused at construction.

Errors: on orders, 403 → :class:`OrderRejected` (``insufficient_buying_power`` or ``forbidden``)
and other 4xx → :class:`OrderRejected` (``rejected``); closing what the broker does not hold →
:class:`PositionNotFound`; on reads, 5xx and network failures → :class:`BrokerTemporaryError`, other
refusals (401…) → :class:`BrokerError`; ambiguity the lookup cannot settle →
:class:`BrokerTemporaryError`.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.enums import TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from requests.adapters import HTTPAdapter

from ops_pipeline.config.secrets import mask
from ops_pipeline.domain.values import OccSymbol, to_decimal
from ops_pipeline.errors import (
    BrokerError,
    BrokerTemporaryError,
    ConfigError,
    MarketDataError,
    OrderRejected,
    PositionNotFound,
)
from ops_pipeline.ports import BrokerAccount, BrokerPosition, OrderRequest, OrderResult, OrderSide, OrderStatus

LIVE_HOSTS = frozenset({"api.alpaca.markets"})
REQUESTS_PER_MINUTE = 200
T = TypeVar("T")
C = TypeVar("C")


class RateLimiter:
    """Token bucket: ``per_minute`` requests a minute, ``burst`` at once; time and sleep injectable."""

    def __init__(self, per_minute: int = REQUESTS_PER_MINUTE, burst: int = 20,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._rate, self._burst = per_minute / 60.0, float(burst)
        self._tokens, self._last = float(burst), monotonic()
        self._monotonic, self._sleep = monotonic, sleep
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self._rate
                self._sleep(wait)
                self._last = self._monotonic()
                self._tokens = 1.0
            self._tokens -= 1


_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def requests_per_minute() -> int:
    """Requests a minute allowed per key: ``OPS_PIPELINE_ALPACA_REQUESTS_PER_MINUTE``, default
    :data:`REQUESTS_PER_MINUTE` (Alpaca's limit). Against a paper exchange that runs market time
    N times faster than real time, N × 200 keeps the same rate per market minute.

    Raises:
        ConfigError: not a positive whole number.
    """
    raw = os.environ.get("OPS_PIPELINE_ALPACA_REQUESTS_PER_MINUTE")
    if raw is None:
        return REQUESTS_PER_MINUTE
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise ConfigError(f"OPS_PIPELINE_ALPACA_REQUESTS_PER_MINUTE must be a whole number above 0, not {raw!r}")
    return int(raw)


def limiter_for(api_key: str) -> RateLimiter:
    """The process-wide limiter of one API key (Alpaca limits per key)."""
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault(api_key, RateLimiter(requests_per_minute()))


class _TimeoutAdapter(HTTPAdapter):
    def __init__(self, timeout_secs: float) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout_secs

    def send(self, request: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - requests' own types
        kwargs["timeout"] = kwargs.get("timeout") or self._timeout
        return super().send(request, **kwargs)


def harden(client: C, timeout_secs: float) -> C:
    """Give an alpaca-py client a timeout on every request and switch off its re-sending on 429/504
    (its ``_retry`` and ``_session`` are private; TradingClient exposes neither)."""
    client._retry = 0  # type: ignore[attr-defined]
    adapter = _TimeoutAdapter(timeout_secs)
    client._session.mount("http://", adapter)  # type: ignore[attr-defined]
    client._session.mount("https://", adapter)  # type: ignore[attr-defined]
    return client


def check_paper(api_key: str, base_url: str | None) -> None:
    """Refuse a live endpoint or a live key.

    Raises:
        ConfigError: saying why, with the key masked.
    """
    host = urlparse(base_url).hostname if base_url else None
    if host in LIVE_HOSTS:
        raise ConfigError(f"{base_url} is Alpaca's live trading endpoint; ops-pipeline trades paper accounts only "
                          "(use https://paper-api.alpaca.markets or a paper exchange)")
    if not api_key.startswith("PK"):
        raise ConfigError(f"API key {mask(api_key)} is not a paper key (Alpaca paper keys start with PK); "
                          "live keys are refused")


def call_alpaca(fn: Callable[[], T], *, limiter: RateLimiter, sleep: Callable[[float], None],
                temporary: type[Exception], refused: type[Exception], what: str, none_on_404: bool = False,
                attempts: int = 5) -> T | None:
    """One read through alpaca-py under the rate limit, its failures translated.

    A 429 waits (``Retry-After`` or one second, through ``sleep``) and reads again, up to
    ``attempts`` times; 404 is ``None`` when ``none_on_404``; 5xx, timeouts and network failures
    raise ``temporary``; other refusals (401, 403, 422…) raise ``refused``. Messages name ``what``
    and the status, never the credentials.
    """
    for _ in range(attempts):
        limiter.acquire()
        try:
            return fn()
        except APIError as exc:
            status = _status(exc)
            if status == 429:
                sleep(retry_after(exc))
                continue
            if status == 404 and none_on_404:
                return None
            if status is None or status >= 500:
                raise temporary(f"{what}: HTTP {status}: {_message(exc)}") from exc
            raise refused(f"{what}: refused, HTTP {status}: {_message(exc)}") from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise temporary(f"{what}: unreachable ({type(exc).__name__})") from exc
        except (ValueError, KeyError, TypeError) as exc:  # an answer alpaca-py cannot parse
            raise temporary(f"{what}: malformed answer ({type(exc).__name__}: {str(exc)[:200]})") from exc
    raise temporary(f"{what}: rate limited {attempts} times in a row")


def retry_after(exc: APIError) -> float:
    """Seconds a 429 asks to wait (``Retry-After``), else one."""
    response = exc.response
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(60.0, max(0.0, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def _status(exc: APIError) -> int | None:
    try:
        return exc.status_code
    except Exception:  # noqa: BLE001 - alpaca-py raises bare errors when the body is not JSON
        return None


def _message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except Exception:  # noqa: BLE001
        return str(exc)


class AlpacaBroker:
    """One Alpaca paper account (implements ``Broker``)."""

    def __init__(self, api_key: str, api_secret: str, *, base_url: str | None = None, timeout_secs: float = 10.0,
                 limiter: RateLimiter | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        check_paper(api_key, base_url)
        self._client = harden(TradingClient(api_key, api_secret, paper=True, url_override=base_url), timeout_secs)
        self._limiter = limiter or limiter_for(api_key)
        self._sleep = sleep

    # --- plumbing -----------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], *, none_on_404: bool = False, what: str = "broker") -> T | None:
        """One read: 5xx and network failures are :class:`BrokerTemporaryError`, other refusals
        :class:`BrokerError` (see :func:`call_alpaca`)."""
        return call_alpaca(fn, limiter=self._limiter, sleep=self._sleep, temporary=BrokerTemporaryError,
                           refused=BrokerError, what=what, none_on_404=none_on_404)

    # --- reads --------------------------------------------------------------------------------
    def get_account(self) -> BrokerAccount:
        a = self._call(self._client.get_account)
        return BrokerAccount(
            account_number=str(a.account_number), equity=to_decimal(a.equity or "0"), cash=to_decimal(a.cash or "0"),
            buying_power=to_decimal(a.buying_power or "0"),
            options_buying_power=to_decimal(a.options_buying_power or a.buying_power or "0"),
        )

    def options_trading_level(self) -> int:
        return int(self._call(self._client.get_account).options_trading_level or 0)

    def market_time(self) -> dt.datetime:
        """The broker's clock (``/v2/clock``): market time, aware UTC.

        Raises:
            MarketDataError: the clock cannot be read (5xx, timeout, refused).
        """
        clock = call_alpaca(self._client.get_clock, limiter=self._limiter, sleep=self._sleep,
                            temporary=MarketDataError, refused=MarketDataError, what="market clock (/v2/clock)")
        return clock.timestamp.astimezone(dt.UTC)

    def get_positions(self) -> list[BrokerPosition]:
        positions = []
        for p in self._call(self._client.get_all_positions):
            positions.append(BrokerPosition(
                symbol=OccSymbol.parse(p.symbol), qty=int(Decimal(p.qty)), avg_entry_price=to_decimal(p.avg_entry_price),
                current_price=to_decimal(p.current_price) if p.current_price else None,
                unrealized_pl=to_decimal(p.unrealized_pl) if p.unrealized_pl else None,
            ))
        return positions

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        order = self._call(lambda: self._client.get_order_by_client_id(client_order_id), none_on_404=True)
        return None if order is None else _order_result(order)

    # --- orders -------------------------------------------------------------------------------
    def submit_order(self, request: OrderRequest) -> OrderResult:
        fields = {"symbol": str(request.symbol), "qty": request.qty, "time_in_force": TimeInForce.DAY,
                  "side": AlpacaSide.BUY if request.side is OrderSide.BUY else AlpacaSide.SELL,
                  "client_order_id": request.client_order_id}
        body = (MarketOrderRequest(**fields) if request.limit_price is None
                else LimitOrderRequest(**fields, limit_price=float(request.limit_price)))
        for _ in range(5):
            self._limiter.acquire()
            try:
                return _order_result(self._client.submit_order(body))
            except (requests.Timeout, requests.ConnectionError) as exc:
                return self._settle(request, f"{type(exc).__name__}", exc)
            except APIError as exc:
                status, message = _status(exc), _message(exc)
                if status == 429:
                    self._sleep(retry_after(exc))
                    found = self.get_order_by_client_id(request.client_order_id)
                    if found is not None:
                        return found
                    continue
                if status is None or status >= 500:
                    return self._settle(request, f"HTTP {status}", exc)
                if status == 422 and "client_order_id" in message:
                    return self._settle(request, message, exc)
                if status == 403:
                    code = "insufficient_buying_power" if "buying power" in message.lower() else "forbidden"
                    raise OrderRejected(code, message) from exc
                raise OrderRejected("rejected", f"HTTP {status}: {message}") from exc
        raise BrokerTemporaryError(f"order {request.client_order_id} rate limited five times in a row")

    def _settle(self, request: OrderRequest, what: str, cause: Exception) -> OrderResult:
        """After an ambiguous outcome: the order exists (return it) or the outcome stays unknown."""
        found = self.get_order_by_client_id(request.client_order_id)
        if found is not None:
            return found
        raise BrokerTemporaryError(f"order {request.client_order_id}: {what}; not found by client_order_id") from cause

    def close_position(self, symbol: OccSymbol, qty: int, client_order_id: str) -> OrderResult:
        held = {str(p.symbol): p.qty for p in self.get_positions()}.get(str(symbol), 0)
        if held <= 0:
            raise PositionNotFound(f"position does not exist: {symbol}")
        return self.submit_order(OrderRequest(client_order_id, symbol, OrderSide.SELL, min(qty, held)))


def _order_result(order: Any) -> OrderResult:
    filled_price = order.filled_avg_price
    return OrderResult(
        broker_order_id=str(order.id),
        client_order_id=order.client_order_id,
        symbol=OccSymbol.parse(order.symbol),
        side=OrderSide(order.side.value),
        qty=int(Decimal(order.qty or "0")),
        status=OrderStatus(order.status.value) if order.status.value in OrderStatus._value2member_map_ else OrderStatus.ACCEPTED,
        filled_qty=int(Decimal(order.filled_qty or "0")),
        filled_avg_price=to_decimal(filled_price) if filled_price else None,
        submitted_at=order.submitted_at,
        filled_at=order.filled_at,
        limit_price=to_decimal(order.limit_price) if order.limit_price else None,
    )
