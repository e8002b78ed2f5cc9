"""alpaca-py's own clients against the paper exchange on 127.0.0.1; every JSON answer checked
against Alpaca's OpenAPI specs."""

from decimal import Decimal

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.requests import OptionLatestQuoteRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.enums import TimeInForce
from alpaca.trading.requests import GetOptionContractsRequest, MarketOrderRequest

from ops_pipeline.adapters.brokers.paper_exchange.app import ApiKey, create_app
from ops_pipeline.adapters.brokers.paper_exchange.server import serve_in_thread
from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.clock import SimulatedClock
from tests.factories import NOON, quote
from tests.fakes import FakeMarket
from tests.openapi import validate, validate_error

SYMBOLS = ["SPY260327C00660000", "SPY260327C00665000", "SPY260327P00655000"]
KEYS = {"PKTINYKEY00001": ApiKey("tiny-1k", "tiny-secret"), "PKLARGEKEY0002": ApiKey("large-100k", "large-secret")}


@pytest.fixture
def exchange_url():
    market = FakeMarket([quote(s, bid="2.46", ask="2.50") for s in SYMBOLS], prices={"SPY": Decimal("660")})
    clock = SimulatedClock(NOON)
    exchange = SimulatedExchange(market, clock, TradingCalendar())
    exchange.open_account("tiny-1k", Decimal("1000"))
    exchange.open_account("large-100k", Decimal("100000"))
    running = serve_in_thread(create_app(exchange, KEYS, market, clock))
    yield running.url
    running.stop()


def client(url: str, key: str = "PKLARGEKEY0002") -> TradingClient:
    return TradingClient(key, KEYS[key].secret, paper=True, url_override=url)


def raw(url: str, method: str, path: str, key: str = "PKLARGEKEY0002", **kwargs):
    headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": KEYS[key].secret}
    return requests.request(method, url + path, headers=headers, timeout=10, **kwargs)


def test_every_call_the_pipeline_makes_through_alpaca_py(exchange_url):
    trading = client(exchange_url)
    account = trading.get_account()
    assert (account.equity, account.options_buying_power, account.options_trading_level) == ("100000.00", "100000.00", 2)
    order = trading.submit_order(MarketOrderRequest(symbol=SYMBOLS[0], qty=4, side=AlpacaSide.BUY,
                                                    time_in_force=TimeInForce.DAY, client_order_id="ops-large-100k-rec1"))
    assert (order.status.value, order.filled_qty, order.filled_avg_price) == ("filled", "4", "2.50")
    assert trading.get_order_by_client_id("ops-large-100k-rec1").id == order.id
    assert trading.get_order_by_id(order.id).client_order_id == "ops-large-100k-rec1"
    (position,) = trading.get_all_positions()
    assert (position.symbol, position.qty, position.avg_entry_price) == (SYMBOLS[0], "4", "2.50")
    closed = trading.close_position(SYMBOLS[0])
    assert (closed.side.value, closed.filled_avg_price) == ("sell", "2.46")
    assert trading.get_all_positions() == []
    contracts = trading.get_option_contracts(GetOptionContractsRequest(underlying_symbols=["SPY"], limit=2))
    assert [c.symbol for c in contracts.option_contracts] == sorted(SYMBOLS)[:2] and contracts.next_page_token == "2"
    assert [c.strike_price for c in contracts.option_contracts] == [660.0, 665.0]
    rest = trading.get_option_contracts(GetOptionContractsRequest(underlying_symbols=["SPY"], limit=2, page_token="2"))
    assert [c.symbol for c in rest.option_contracts] == sorted(SYMBOLS)[2:] and rest.next_page_token is None
    data = OptionHistoricalDataClient("PKLARGEKEY0002", "large-secret", url_override=exchange_url)
    quotes = data.get_option_latest_quote(OptionLatestQuoteRequest(symbol_or_symbols=SYMBOLS[:2]))
    assert (quotes[SYMBOLS[0]].bid_price, quotes[SYMBOLS[0]].ask_price) == (2.46, 2.50)


def test_answers_validate_against_the_openapi_specs(exchange_url):
    validate(raw(exchange_url, "GET", "/v2/account").json(), "/v2/account", "get")
    order = raw(exchange_url, "POST", "/v2/orders", json={"symbol": SYMBOLS[0], "qty": "2", "side": "buy", "type": "market",
                                                         "time_in_force": "day", "client_order_id": "c1"}).json()
    validate(order, "/v2/orders", "post")
    validate(raw(exchange_url, "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "c1"}).json(),
             "/v2/orders:by_client_order_id", "get")
    validate(raw(exchange_url, "GET", f"/v2/orders/{order['id']}").json(), "/v2/orders/{order_id}", "get")
    validate(raw(exchange_url, "GET", "/v2/positions").json(), "/v2/positions", "get")
    validate(raw(exchange_url, "GET", "/v2/options/contracts", params={"underlying_symbols": "SPY"}).json(),
             "/v2/options/contracts", "get")
    validate(raw(exchange_url, "DELETE", f"/v2/positions/{SYMBOLS[0]}").json(), "/v2/positions/{symbol_or_asset_id}", "delete")
    validate(raw(exchange_url, "GET", "/v1beta1/options/quotes/latest", params={"symbols": SYMBOLS[0]}).json(),
             "/v1beta1/options/quotes/latest", "get", spec="market-data-api.json")
    snapshots = raw(exchange_url, "GET", "/v1beta1/options/snapshots", params={"symbols": ",".join(SYMBOLS)}).json()
    validate(snapshots, "/v1beta1/options/snapshots", "get", spec="market-data-api.json")
    assert 0.3 < snapshots["snapshots"][SYMBOLS[0]]["greeks"]["delta"] < 0.7
    validate(raw(exchange_url, "GET", "/v2/stocks/trades/latest", params={"symbols": "SPY"}).json(),
             "/v2/stocks/trades/latest", "get", spec="market-data-api.json")
    validate(raw(exchange_url, "GET", "/v2/clock").json(), "/v2/clock", "get")


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), [
    ("POST", "/v2/orders", {"json": {"symbol": SYMBOLS[0], "qty": "9", "side": "buy", "type": "market",
                                     "time_in_force": "day", "client_order_id": "big"}}, 403, "insufficient options buying power"),
    ("POST", "/v2/orders", {"json": {"symbol": SYMBOLS[0], "qty": "1", "side": "sell", "type": "market",
                                     "time_in_force": "day"}}, 403, "opening sells are refused"),
    ("DELETE", f"/v2/positions/{SYMBOLS[0]}", {}, 404, "position does not exist"),
    ("GET", "/v2/orders:by_client_order_id", {"params": {"client_order_id": "nope"}}, 404, "order not found"),
])
def test_refusals_answer_like_alpaca(exchange_url, method, path, kwargs, status, message):
    answer = raw(exchange_url, method, path, key="PKTINYKEY00001", **kwargs)
    assert answer.status_code == status and message in answer.json()["message"]
    validate_error(answer.json())


def test_a_reused_client_order_id_is_a_422_and_no_second_order(exchange_url):
    body = {"symbol": SYMBOLS[0], "qty": "1", "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": "once"}
    assert raw(exchange_url, "POST", "/v2/orders", json=body).status_code == 200
    again = raw(exchange_url, "POST", "/v2/orders", json=body)
    assert again.status_code == 422 and again.json()["message"].endswith("client_order_id must be unique")
    assert [p["qty"] for p in raw(exchange_url, "GET", "/v2/positions").json()] == ["1"]


def test_wrong_credentials_are_refused(exchange_url):
    bad = TradingClient("PKLARGEKEY0002", "wrong", paper=True, url_override=exchange_url)
    with pytest.raises(APIError) as err:
        bad.get_account()
    assert err.value.status_code == 401


def test_two_accounts_never_see_each_others_orders_or_positions(exchange_url):
    large, tiny = client(exchange_url), client(exchange_url, "PKTINYKEY00001")
    large.submit_order(MarketOrderRequest(symbol=SYMBOLS[1], qty=3, side=AlpacaSide.BUY, time_in_force=TimeInForce.DAY,
                                          client_order_id="large-only"))
    assert tiny.get_all_positions() == []
    with pytest.raises(APIError):
        tiny.get_order_by_client_id("large-only")
    assert tiny.get_account().cash == "1000.00" and large.get_account().cash == "99250.00"
    assert [(p.symbol, p.qty) for p in large.get_all_positions()] == [(SYMBOLS[1], "3")]


def test_a_malformed_symbol_is_a_422_naming_it(exchange_url):
    answer = raw(exchange_url, "GET", "/v1beta1/options/snapshots", params={"symbols": "SPY 660 C"})
    assert answer.status_code == 422 and "SPY 660 C" in answer.json()["message"]
