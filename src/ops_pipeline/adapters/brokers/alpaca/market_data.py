"""Market data from Alpaca through alpaca-py (the ``MarketData`` port in ``ALPACA_PAPER`` mode).

- the underlying's price: the latest stock trade (``/v2/stocks/trades/latest``);
- an option chain: the contracts (``/v2/options/contracts``, paged, by type and expiration window)
  joined with their snapshots (``/v1beta1/options/snapshots``: latest quote, greeks, implied
  volatility), 100 symbols a request;
- one contract's quote: its snapshot;
- 1-minute stock bars for the live signal engine (``/v2/stocks/bars``).

Quotes are ``real`` (they are the market's), timed by the quote's own timestamp. The ``now`` the
port passes in is only used for the DTE window: Alpaca answers with the latest data.

Every request has a timeout and goes through the per-key rate limiter; a 429 waits (``Retry-After``)
and asks again; any other failure — a 5xx, a timeout, a refusal, an answer that cannot be parsed —
is a :class:`~ops_pipeline.errors.MarketDataError`, which ends the run cleanly.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.enums import DataFeed
from alpaca.data.requests import OptionSnapshotRequest, StockBarsRequest, StockLatestTradeRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import ContractType
from alpaca.trading.requests import GetOptionContractsRequest

from ops_pipeline.adapters.brokers.alpaca.client import RateLimiter, call_alpaca, check_paper, harden, limiter_for
from ops_pipeline.adapters.market_data.bars import BarQuality, BarSeries
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.domain.market import OptionQuote, QuoteSource
from ops_pipeline.domain.values import OccSymbol, OptionType, to_decimal
from ops_pipeline.errors import MarketDataError

SNAPSHOT_BATCH = 100
MAX_CONTRACT_PAGES = 50
"""A broker that keeps answering with a next page is refused after this many (50,000 contracts)."""
T = TypeVar("T")


class AlpacaMarketData:
    """Underlying prices, option chains and option quotes from Alpaca."""

    def __init__(self, api_key: str, api_secret: str, *, trading_url: str | None = None, data_url: str | None = None,
                 timeout_secs: float = 10.0, limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        check_paper(api_key, trading_url)
        self._trading = harden(TradingClient(api_key, api_secret, paper=True, url_override=trading_url), timeout_secs)
        self._options = harden(OptionHistoricalDataClient(api_key, api_secret, url_override=data_url), timeout_secs)
        self._stocks = harden(StockHistoricalDataClient(api_key, api_secret, url_override=data_url), timeout_secs)
        self._limiter = limiter or limiter_for(api_key)
        self._sleep = sleep

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """A market-data read; every failure is a :class:`MarketDataError` naming ``what``."""
        return call_alpaca(fn, limiter=self._limiter, sleep=self._sleep, temporary=MarketDataError,
                           refused=MarketDataError, what=what)

    def underlying_price(self, ticker: str, now: dt.datetime) -> Decimal | None:
        trades = self._call(lambda: self._stocks.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=ticker)),
                            f"latest trade of {ticker}")
        trade = trades.get(ticker)
        return None if trade is None else to_decimal(trade.price)

    def minute_bars(self, tickers: list[str], start: dt.datetime, end: dt.datetime) -> dict[str, BarSeries]:
        """1-minute bars of ``tickers`` starting in [start, end] (``/v2/stocks/bars``, every page),
        as :class:`BarSeries` (epoch seconds, dollars, shares). The feed is
        ``OPS_PIPELINE_ALPACA_FEED`` (default ``iex``, the one a free Alpaca account may read)."""
        feed = DataFeed(os.environ.get("OPS_PIPELINE_ALPACA_FEED", "iex"))
        request = StockBarsRequest(symbol_or_symbols=tickers, timeframe=TimeFrame.Minute, start=start, end=end, feed=feed)
        barset = self._call(lambda: self._stocks.get_stock_bars(request), f"1-minute bars of {','.join(tickers)}")
        found: dict[str, BarSeries] = {}
        for ticker in tickers:
            bars = barset.data.get(ticker, [])
            found[ticker] = BarSeries(
                ticker=ticker, interval_secs=60,
                start=np.array([int(b.timestamp.timestamp()) for b in bars], dtype=np.int64),
                open=np.array([b.open for b in bars], dtype=float), high=np.array([b.high for b in bars], dtype=float),
                low=np.array([b.low for b in bars], dtype=float), close=np.array([b.close for b in bars], dtype=float),
                volume=np.array([b.volume for b in bars], dtype=float),
                quality=BarQuality(path="alpaca:/v2/stocks/bars", rows_read=len(bars), bars_kept=len(bars)))
        return found

    def option_chain(self, ticker: str, now: dt.datetime, *, option_type: OptionType, min_dte: int,
                     max_dte: int) -> list[OptionQuote]:
        today = exchange_date(now)
        contracts: dict[str, Any] = {}
        token = None
        for _ in range(MAX_CONTRACT_PAGES):
            request = GetOptionContractsRequest(
                underlying_symbols=[ticker], type=ContractType(option_type.value), limit=1000, page_token=token,
                expiration_date_gte=today + dt.timedelta(days=min_dte),
                expiration_date_lte=today + dt.timedelta(days=max_dte))
            page = self._call(lambda r=request: self._trading.get_option_contracts(r), f"option contracts of {ticker}")
            contracts.update({c.symbol: c for c in page.option_contracts or []})
            if not page.next_page_token or page.next_page_token == token:
                break
            token = page.next_page_token
        else:
            raise MarketDataError(f"option contracts of {ticker}: more than {MAX_CONTRACT_PAGES} pages")
        symbols = sorted(contracts)
        spot = self.underlying_price(ticker, now) if symbols else None
        quotes = []
        for start in range(0, len(symbols), SNAPSHOT_BATCH):
            for symbol, snap in self._snapshots(symbols[start:start + SNAPSHOT_BATCH]).items():
                oi = contracts[symbol].open_interest
                quote = self._quote(symbol, snap, spot, int(Decimal(str(oi))) if oi is not None else None)
                if quote is not None:
                    quotes.append(quote)
        return quotes

    def option_quote(self, symbol: OccSymbol, now: dt.datetime) -> OptionQuote | None:
        snap = self._snapshots([str(symbol)]).get(str(symbol))
        return None if snap is None else self._quote(str(symbol), snap, self.underlying_price(symbol.underlying, now), None)

    def _snapshots(self, symbols: list[str]) -> dict[str, Any]:
        if not symbols:
            return {}
        return self._call(lambda: self._options.get_option_snapshot(OptionSnapshotRequest(symbol_or_symbols=symbols)),
                          f"option snapshots ({len(symbols)} contracts)")

    @staticmethod
    def _quote(symbol: str, snap: Any, spot: Decimal | None, open_interest: int | None) -> OptionQuote | None:
        q = snap.latest_quote
        if q is None:
            return None
        greeks = snap.greeks
        return OptionQuote(
            symbol=OccSymbol.parse(symbol), bid=to_decimal(round(q.bid_price or 0.0, 2)),
            ask=to_decimal(round(q.ask_price or 0.0, 2)), volume=None, open_interest=open_interest,
            iv=snap.implied_volatility, delta=greeks.delta if greeks is not None else None,
            underlying_price=spot or Decimal(0), quote_time=q.timestamp.astimezone(dt.UTC), source=QuoteSource.REAL,
            snapshot=None,
        )


class BrokerClock:
    """The time of the broker (``/v2/clock``): real time at Alpaca, market time at a paper exchange.

    Raises (from ``now``):
        MarketDataError: the clock cannot be read.
    """

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    def now(self) -> dt.datetime:
        return self._broker.market_time()
