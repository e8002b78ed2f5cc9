"""The simulated broker's values as Alpaca Trading API v2 JSON (``reference/alpaca/trading-api.json``).

Money and quantities are strings, as Alpaca sends them; times are RFC 3339 UTC.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.domain.market import OptionQuote
from ops_pipeline.domain.pricing import bs_greeks
from ops_pipeline.domain.values import CONTRACT_MULTIPLIER, OccSymbol, OptionType
from ops_pipeline.ports import BrokerAccount, BrokerPosition, OrderResult

# Alpaca's error codes for the refusals the simulated broker makes (status, code).
ERRORS: dict[str, tuple[int, int]] = {
    "insufficient_buying_power": (403, 40310000),
    "insufficient_qty": (403, 40310000),
    "duplicate_client_order_id": (422, 40010001),
    "market_closed": (422, 42210000),
    "no_bid": (422, 42210000),
    "no_quote": (422, 42210000),
    "invalid_qty": (422, 40010001),
    "invalid_request": (422, 40010001),
    "position_not_found": (404, 40410000),
    "order_not_found": (404, 40410000),
    "unauthorized": (401, 40110000),
}


def error_body(kind: str, message: str) -> tuple[int, dict[str, Any]]:
    status, code = ERRORS[kind]
    return status, {"code": code, "message": message}


def _t(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _s(value: Decimal | int | None) -> str | None:
    return None if value is None else str(value)


def asset_id(symbol: OccSymbol | str) -> str:
    """A stable asset id per contract (Alpaca ids are UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ops-pipeline:{symbol}"))


def order_uuid(broker_order_id: str) -> str:
    """Alpaca order ids are UUIDs: a stable one per simulated order id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ops-pipeline-order:{broker_order_id}"))


def account_json(account_id: str, account: BrokerAccount, created_at: dt.datetime, options_level: int = 2) -> dict[str, Any]:
    return {
        "id": account_id, "account_number": account.account_number, "status": "ACTIVE", "crypto_status": "INACTIVE",
        "currency": "USD", "cash": _s(account.cash), "buying_power": _s(account.buying_power),
        "regt_buying_power": _s(account.buying_power), "daytrading_buying_power": "0",
        "non_marginable_buying_power": _s(account.cash), "options_buying_power": _s(account.options_buying_power),
        "options_approved_level": options_level, "options_trading_level": options_level, "portfolio_value": _s(account.equity),
        "equity": _s(account.equity), "last_equity": _s(account.equity),
        "long_market_value": _s(account.equity - account.cash), "short_market_value": "0",
        "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
        "accrued_fees": "0", "pending_transfer_in": "0", "pending_transfer_out": "0", "multiplier": "1",
        "daytrade_count": 0, "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
        "account_blocked": False, "trade_suspended_by_user": False, "shorting_enabled": False,
        "created_at": _t(created_at),
    }


def order_json(order: OrderResult) -> dict[str, Any]:
    symbol = str(order.symbol)
    kind = "market" if order.limit_price is None else "limit"
    return {
        "id": order_uuid(order.broker_order_id), "client_order_id": order.client_order_id,
        "created_at": _t(order.submitted_at), "updated_at": _t(order.filled_at or order.submitted_at),
        "submitted_at": _t(order.submitted_at), "filled_at": _t(order.filled_at), "expired_at": None,
        "canceled_at": None, "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": asset_id(symbol), "symbol": symbol, "asset_class": "us_option", "notional": None,
        "qty": _s(order.qty), "filled_qty": _s(order.filled_qty), "filled_avg_price": _s(order.filled_avg_price),
        "order_class": "simple", "order_type": kind, "type": kind, "side": order.side.value,
        "time_in_force": "day", "limit_price": _s(order.limit_price), "stop_price": None, "status": order.status.value,
        "extended_hours": False, "legs": None, "trail_percent": None, "trail_price": None, "hwm": None,
        "position_intent": "buy_to_open" if order.side.value == "buy" else "sell_to_close",
    }


def position_json(position: BrokerPosition) -> dict[str, Any]:
    qty = Decimal(position.qty)
    current = position.current_price or position.avg_entry_price
    cost = position.avg_entry_price * CONTRACT_MULTIPLIER * qty
    value = current * CONTRACT_MULTIPLIER * qty
    unrealized = position.unrealized_pl if position.unrealized_pl is not None else value - cost
    plpc = (unrealized / cost) if cost else Decimal(0)
    return {
        "asset_id": asset_id(position.symbol), "symbol": str(position.symbol), "exchange": "", "asset_class": "us_option",
        "asset_marginable": False, "avg_entry_price": _s(position.avg_entry_price), "qty": _s(position.qty),
        "qty_available": _s(position.qty), "side": "long", "market_value": _s(value), "cost_basis": _s(cost),
        "unrealized_pl": _s(unrealized), "unrealized_plpc": _s(round(plpc, 6)), "unrealized_intraday_pl": _s(unrealized),
        "unrealized_intraday_plpc": _s(round(plpc, 6)), "current_price": _s(current), "lastday_price": _s(current),
        "change_today": "0",
    }


def contract_json(quote: OptionQuote) -> dict[str, Any]:
    s = quote.symbol
    as_of = exchange_date(quote.quote_time).isoformat()
    kind = "call" if s.option_type is OptionType.CALL else "put"
    return {
        "id": asset_id(s), "symbol": str(s), "name": f"{s.underlying} {s.expiration:%b %d %Y} {s.strike_text} {kind.title()}",
        "status": "active", "tradable": True, "expiration_date": s.expiration.isoformat(), "root_symbol": s.underlying,
        "underlying_symbol": s.underlying, "underlying_asset_id": asset_id(s.underlying), "type": kind,
        "style": "american", "strike_price": s.strike_text, "multiplier": "100", "size": "100",
        "open_interest": _s(quote.open_interest or 0), "open_interest_date": as_of,
        "close_price": _s(quote.mid), "close_price_date": as_of,
    }


def snapshot_json(quote: OptionQuote, years: float) -> dict[str, Any]:
    """Market Data API ``/v1beta1/options/snapshots`` item: latest quote, greeks, implied volatility."""
    body: dict[str, Any] = {"latestQuote": quote_json(quote)}
    if quote.iv:
        s = quote.symbol
        body["impliedVolatility"] = quote.iv
        body["greeks"] = bs_greeks(float(quote.underlying_price), float(s.strike), years, quote.iv,
                                   s.option_type is OptionType.CALL)
    return body


def trade_json(price: Decimal, at: dt.datetime) -> dict[str, Any]:
    """Market Data API ``/v2/stocks/trades/latest`` item: a trade at the latest bar's close."""
    return {"t": _t(at), "i": 0, "x": "V", "p": float(price), "s": 100, "c": ["@"], "z": "B"}


def bar_json(start_epoch: int, o: float, h: float, low: float, c: float, v: float) -> dict[str, Any]:
    """Market Data API ``/v2/stocks/bars`` item: ``t`` is the bar's start. The data has no trade
    count or VWAP: ``n`` and ``vw`` are null."""
    return {"t": _t(dt.datetime.fromtimestamp(start_epoch, tz=dt.UTC)), "o": o, "h": h, "l": low, "c": c, "v": v,
            "n": None, "vw": None}


def clock_json(now: dt.datetime, is_open: bool, next_open: dt.datetime, next_close: dt.datetime) -> dict[str, Any]:
    """Trading API ``/v2/clock``."""
    return {"timestamp": _t(now), "is_open": is_open, "next_open": _t(next_open), "next_close": _t(next_close)}


def quote_json(quote: OptionQuote) -> dict[str, Any]:
    """Market Data API ``/v1beta1/options/quotes/latest`` item."""
    return {"ap": float(quote.ask), "as": 1, "ax": "N", "bp": float(quote.bid), "bs": 1 if quote.has_bid else 0,
            "bx": "N", "c": "A", "t": _t(quote.quote_time)}
