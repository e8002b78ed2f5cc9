"""The paper exchange answers every bad request with Alpaca's 4xx ``{"code", "message"}``, never a
500, and refuses bodies over 1 MB (item 11). Real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests

from ops_pipeline.adapters.brokers.paper_exchange.app import ApiKey, create_app
from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.clock import SimulatedClock
from tests.factories import NOON, quote
from tests.fakes import FakeMarket

KEY, SECRET = "PKHARDENING0001", "hardening-secret"
SYMBOL = "SPY260327C00660000"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
GOOD_ORDER = {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"}


@pytest.fixture(scope="module")
def exchange():
    market = FakeMarket([quote(SYMBOL, bid="2.46", ask="2.50")], prices={"SPY": Decimal("660")})
    clock = SimulatedClock(NOON)
    sim = SimulatedExchange(market, clock, TradingCalendar())
    sim.open_account("large-100k", Decimal("100000"))
    server = serve_in_thread(create_app(sim, {KEY: ApiKey("large-100k", SECRET)}, market, clock))
    yield server.url, sim
    server.stop()


def order(**changes):
    return json.dumps({**GOOD_ORDER, **changes})


BAD_ORDERS = {
    "qty 1e400": '{"symbol": "%s", "qty": 1e400, "side": "buy", "type": "market", "time_in_force": "day"}' % SYMBOL,
    "qty NaN literal": '{"symbol": "%s", "qty": NaN, "side": "buy", "type": "market", "time_in_force": "day"}' % SYMBOL,
    "qty Infinity": '{"symbol": "%s", "qty": Infinity, "side": "buy", "type": "market", "time_in_force": "day"}' % SYMBOL,
    "qty 'NaN'": order(qty="NaN"),
    "qty true": order(qty=True),
    "qty 1.5": order(qty=1.5),
    "qty 0": order(qty=0),
    "qty -2": order(qty=-2),
    "qty 'abc'": order(qty="abc"),
    "qty list": order(qty=[1]),
    "qty missing": json.dumps({k: v for k, v in GOOD_ORDER.items() if k != "qty"}),
    "limit_price NaN": order(type="limit", limit_price="NaN"),
    "limit_price -1": order(type="limit", limit_price=-1),
    "limit_price missing": order(type="limit"),
    "type foo": order(type="foo"),
    "side short": order(side="short"),
    "time_in_force gtc": order(time_in_force="gtc"),
    "symbol not OCC": order(symbol="SPY"),
    "symbol number": order(symbol=123),
    "client_order_id 10,000 chars": order(client_order_id="x" * 10_000),
    "client_order_id number": order(client_order_id=5),
    "not JSON": "{",
    "a JSON list": "[]",
    "empty body": "",
}


@pytest.mark.parametrize("body", BAD_ORDERS.values(), ids=BAD_ORDERS.keys())
def test_bad_orders_get_alpacas_4xx_and_place_nothing(exchange, body):
    url, sim = exchange
    response = requests.post(f"{url}/v2/orders", data=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    answer = response.json()
    assert set(answer) == {"code", "message"} and answer["message"]
    assert sim.broker_for("large-100k").orders() == []


BAD_QUERIES = {
    "DELETE qty=inf": ("DELETE", f"/v2/positions/{SYMBOL}?qty=inf"),
    "DELETE qty=NaN": ("DELETE", f"/v2/positions/{SYMBOL}?qty=NaN"),
    "DELETE qty=-3": ("DELETE", f"/v2/positions/{SYMBOL}?qty=-3"),
    "DELETE not a symbol": ("DELETE", "/v2/positions/NOTASYMBOL"),
    "page_token=abc": ("GET", "/v2/options/contracts?underlying_symbols=SPY&page_token=abc"),
    "page_token=-1": ("GET", "/v2/options/contracts?underlying_symbols=SPY&page_token=-1"),
    "limit=0": ("GET", "/v2/options/contracts?underlying_symbols=SPY&limit=0"),
    "limit=100000": ("GET", "/v2/options/contracts?underlying_symbols=SPY&limit=100000"),
    "type=foo": ("GET", "/v2/options/contracts?underlying_symbols=SPY&type=foo"),
    "date not a date": ("GET", "/v2/options/contracts?underlying_symbols=SPY&expiration_date_gte=soon"),
    "no underlying": ("GET", "/v2/options/contracts?underlying_symbols="),
    "underlying SQL": ("GET", "/v2/options/contracts?underlying_symbols=SPY;DROP%20TABLE"),
    "orders status=weird": ("GET", "/v2/orders?status=weird"),
    "orders limit=0": ("GET", "/v2/orders?limit=0"),
    "orders limit=abc": ("GET", "/v2/orders?limit=abc"),
    "client id 200 chars": ("GET", "/v2/orders:by_client_order_id?client_order_id=" + "y" * 200),
    "snapshots bad symbol": ("GET", "/v1beta1/options/snapshots?symbols=BAD"),
    "snapshots no symbol": ("GET", "/v1beta1/options/snapshots?symbols="),
    "snapshots 500 symbols": ("GET", "/v1beta1/options/snapshots?symbols=" + ",".join([SYMBOL] * 500)),
    "quotes bad symbol": ("GET", "/v1beta1/options/quotes/latest?symbols=%00"),
    "trades no symbol": ("GET", "/v2/stocks/trades/latest?symbols=,,"),
    "unknown order id": ("GET", "/v2/orders/not-an-id"),
}


@pytest.mark.parametrize(("method", "path"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_bad_queries_get_alpacas_4xx(exchange, method, path):
    url, _ = exchange
    response = requests.request(method, url + path, headers=AUTH, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"code", "message"}


def test_unauthenticated_requests_get_401_with_alpacas_body(exchange):
    url, _ = exchange
    response = requests.get(f"{url}/v2/account", headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "wrong"}, timeout=10)
    assert response.status_code == 401 and set(response.json()) == {"code", "message"}


def test_a_body_over_one_megabyte_gets_413_declared_or_streamed(exchange):
    url, sim = exchange
    big = b'{"symbol": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    declared = requests.post(f"{url}/v2/orders", data=big, headers=AUTH, timeout=60)
    assert declared.status_code == 413 and set(declared.json()) == {"code", "message"}
    streamed = requests.post(f"{url}/v2/orders", data=(big[i:i + 65536] for i in range(0, 2 * 1024 * 1024, 65536)),
                             headers=AUTH, timeout=60)  # chunked: no Content-Length to refuse up front
    assert streamed.status_code == 413
    assert sim.broker_for("large-100k").orders() == []


def test_paging_always_ends_and_the_exchange_still_trades_after_the_corpus(exchange):
    url, sim = exchange
    seen, token = [], None
    for _ in range(10):
        page = requests.get(f"{url}/v2/options/contracts", params={"underlying_symbols": "SPY", "limit": 1,
                                                                   **({"page_token": token} if token else {})},
                            headers=AUTH, timeout=10).json()
        seen += [c["symbol"] for c in page["option_contracts"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [SYMBOL] and token is None
    good = requests.post(f"{url}/v2/orders", data=order(client_order_id="after-corpus"), headers=AUTH, timeout=10)
    assert good.status_code == 200 and good.json()["status"] == "filled"
    assert [o.client_order_id for o in sim.broker_for("large-100k").orders()] == ["after-corpus"]
