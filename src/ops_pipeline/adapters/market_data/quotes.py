"""Historical market data: underlying prices from bars, option quotes real or modelled.

The option quote at time *t* is taken from the latest in-hours snapshot at or before *t* whose age
is at most ``max_quote_age`` (default 30 minutes). Otherwise it is **modelled**: Black-Scholes
from the underlying's latest close with

- the contract's own implied volatility, inferred from its mid in the latest snapshot that lists
  it (skew kept), else
- the at-the-money IV of the nearest real chain (the latest at or before *t*, else the earliest
  after it), else
- the underlying's realized volatility over the last five sessions of bars (for tickers with no
  chain at all).

A modelled quote's spread is 4 % of the model price (at least $0.02); a model price under one cent
has no bid. Modelled chains list daily expirations for SPY, QQQ and IWM and Friday expirations
otherwise, strikes within ±12 % of the spot on a grid set by the price.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache

import numpy as np

from ops_pipeline.adapters.market_data.bars import BarSeries
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.adapters.market_data.chains import YEAR_SECS, ChainSnapshot, ChainStore, expiry_close_epoch
from ops_pipeline.domain.market import OptionQuote, QuoteSource
from ops_pipeline.domain.pricing import bs_delta, bs_price
from ops_pipeline.domain.values import CENT, OccSymbol, OptionType, to_decimal

DAILY_EXPIRY_TICKERS = frozenset({"SPY", "QQQ", "IWM"})
DEFAULT_MAX_QUOTE_AGE = dt.timedelta(minutes=30)
MODEL_SPREAD_PCT = 0.04
MODEL_MIN_SPREAD = 0.02
STRIKE_RANGE = 0.12


def _cents_down(x: float) -> Decimal:
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_FLOOR)


def _cents_up(x: float) -> Decimal:
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_CEILING)


def strike_step(ticker: str, spot: float) -> float:
    """Strike grid of modelled chains, dollars."""
    if ticker in DAILY_EXPIRY_TICKERS:
        return 1.0
    for limit, step in ((25, 0.5), (100, 1.0), (250, 2.5)):
        if spot < limit:
            return step
    return 5.0


class HistoricalMarketData:
    """Market data for a replay or the paper exchange; implements the ``MarketData`` port."""

    def __init__(
        self,
        bars: dict[str, BarSeries],
        chains: ChainStore,
        calendar: TradingCalendar,
        max_quote_age: dt.timedelta = DEFAULT_MAX_QUOTE_AGE,
    ) -> None:
        self.bars = bars
        self.chains = chains
        self.calendar = calendar
        self.max_quote_age = max_quote_age
        self._symbol_index: dict[int, dict[str, int]] = {}
        self._realized: dict[tuple[str, int], float | None] = {}

    # --- underlying ---------------------------------------------------------------------------
    def underlying_price(self, ticker: str, now: dt.datetime) -> Decimal | None:
        """Close of the latest bar that ended at or before ``now``, dollars; None if none."""
        series = self.bars.get(ticker)
        if series is None:
            return None
        i = series.last_closed_index(now.timestamp())
        return None if i < 0 else to_decimal(round(float(series.close[i]), 4))

    def realized_vol(self, ticker: str, now: dt.datetime) -> float | None:
        """Annualized volatility of bar log returns over the last five sessions (fraction)."""
        series = self.bars.get(ticker)
        if series is None:
            return None
        i = series.last_closed_index(now.timestamp())
        key = (ticker, i)
        if key not in self._realized:
            per_session = 390 * 60 // series.interval_secs
            window = series.close[max(0, i - 5 * per_session) : i + 1]
            returns = np.diff(np.log(window))
            self._realized[key] = float(np.std(returns) * math.sqrt(252 * per_session)) if len(window) >= 20 else None
        return self._realized[key]

    # --- option quotes ------------------------------------------------------------------------
    def _fresh_snapshot(self, ticker: str, now: dt.datetime) -> ChainSnapshot | None:
        snap = self.chains.latest_at_or_before(ticker, now)
        if snap is None or now - snap.taken_at > self.max_quote_age:
            return None
        return snap

    def option_chain(
        self, ticker: str, now: dt.datetime, *, option_type: OptionType, min_dte: int, max_dte: int
    ) -> list[OptionQuote]:
        """Quotes of every listed contract of one type expiring ``min_dte``..``max_dte`` calendar
        days after today (exchange date), not yet expired at ``now``."""
        today = exchange_date(now)
        lo, hi = np.datetime64(today + dt.timedelta(days=min_dte)), np.datetime64(today + dt.timedelta(days=max_dte))
        snap = self._fresh_snapshot(ticker, now)
        if snap is not None:
            mask = (snap.is_call == (option_type is OptionType.CALL)) & (snap.expiration >= lo)
            mask &= (snap.expiration <= hi) & (snap.expiry_close > now.timestamp())
            return [self._real_quote(snap, int(i)) for i in np.flatnonzero(mask)]
        return self._modelled_chain(ticker, now, option_type, min_dte, max_dte)

    def option_quote(self, symbol: OccSymbol, now: dt.datetime) -> OptionQuote | None:
        """The contract's quote in force at ``now``: real if a fresh snapshot lists it, else modelled.
        ``None`` when the underlying has no price yet."""
        snap = self._fresh_snapshot(symbol.underlying, now)
        if snap is not None:
            i = self._index(snap).get(str(symbol))
            if i is not None:
                return self._real_quote(snap, i)
        spot = self.underlying_price(symbol.underlying, now)
        sigma = self._contract_iv(symbol, now) or self._ticker_iv(symbol.underlying, now)
        if spot is None or sigma is None:
            return None
        return self._model(symbol, float(spot), sigma, now)

    def _index(self, snap: ChainSnapshot) -> dict[str, int]:
        key = id(snap)
        if key not in self._symbol_index:
            self._symbol_index[key] = {str(s): i for i, s in enumerate(snap.symbols)}
        return self._symbol_index[key]

    def _real_quote(self, snap: ChainSnapshot, i: int) -> OptionQuote:
        years = (snap.expiry_close[i] - snap.taken_at.timestamp()) / YEAR_SECS
        iv = float(snap.iv[i]) if math.isfinite(snap.iv[i]) else snap.atm_iv()
        delta = float(bs_delta(snap.spot, snap.strike[i], years, iv, snap.is_call[i])) if iv else None
        volume, oi = snap.volume[i], snap.open_interest[i]
        return OptionQuote(
            symbol=OccSymbol.parse(str(snap.symbols[i])),
            bid=to_decimal(round(float(snap.bid[i]), 2)),
            ask=to_decimal(round(float(snap.ask[i]), 2)),
            volume=int(volume) if math.isfinite(volume) else 0,
            open_interest=int(oi) if math.isfinite(oi) else 0,
            iv=iv,
            delta=delta,
            underlying_price=to_decimal(round(snap.spot, 4)),
            quote_time=snap.taken_at,
            source=QuoteSource.REAL,
            snapshot=snap.name,
        )

    def _contract_iv(self, symbol: OccSymbol, now: dt.datetime) -> float | None:
        snap = self.chains.latest_at_or_before(symbol.underlying, now)
        if snap is None:
            return None
        i = self._index(snap).get(str(symbol))
        return float(snap.iv[i]) if i is not None and math.isfinite(snap.iv[i]) else None

    def _ticker_iv(self, ticker: str, now: dt.datetime) -> float | None:
        found = self.chains.nearest_with_iv(ticker, now)
        return found[1] if found else self.realized_vol(ticker, now)

    def _model(self, symbol: OccSymbol, spot: float, sigma: float, now: dt.datetime) -> OptionQuote:
        return self._model_many([symbol], spot, sigma, now)[0]

    def _model_many(self, symbols: list[OccSymbol], spot: float, sigma: float, now: dt.datetime) -> list[OptionQuote]:
        """Model quotes for contracts of one underlying, priced in one vectorised call."""
        if not symbols:
            return []
        years = np.array([(expiry_close_epoch(s.expiration) - now.timestamp()) / YEAR_SECS for s in symbols])
        strikes = np.array([float(s.strike) for s in symbols])
        is_call = np.array([s.option_type is OptionType.CALL for s in symbols])
        prices = bs_price(spot, strikes, years, sigma, is_call)
        deltas = bs_delta(spot, strikes, years, sigma, is_call)
        underlying = to_decimal(round(spot, 4))
        quotes = []
        for symbol, price, delta in zip(symbols, prices.tolist(), deltas.tolist(), strict=True):
            half = max(MODEL_MIN_SPREAD, MODEL_SPREAD_PCT * price) / 2
            quotes.append(OptionQuote(
                symbol=symbol,
                bid=_cents_down(price - half) if price - half >= 0.01 else Decimal("0"),
                ask=max(_cents_up(price + half), CENT),
                volume=None,
                open_interest=None,
                iv=sigma,
                delta=delta,
                underlying_price=underlying,
                quote_time=now,
                source=QuoteSource.MODELLED,
            ))
        return quotes

    def _modelled_chain(
        self, ticker: str, now: dt.datetime, option_type: OptionType, min_dte: int, max_dte: int
    ) -> list[OptionQuote]:
        spot_d = self.underlying_price(ticker, now)
        sigma = self._ticker_iv(ticker, now)
        if spot_d is None or sigma is None:
            return []
        spot = float(spot_d)
        step = strike_step(ticker, spot)
        strikes = np.arange(math.ceil(spot * (1 - STRIKE_RANGE) / step), math.floor(spot * (1 + STRIKE_RANGE) / step) + 1) * step
        symbols = [
            OccSymbol(ticker, expiration, option_type, Decimal(str(round(float(strike), 3))))
            for expiration in self._expirations(ticker, exchange_date(now), min_dte, max_dte)
            if expiry_close_epoch(expiration) > now.timestamp()
            for strike in strikes
        ]
        return self._model_many(symbols, spot, sigma, now)

    def _expirations(self, ticker: str, today: dt.date, min_dte: int, max_dte: int) -> list[dt.date]:
        return _listed_expirations(self.calendar, ticker in DAILY_EXPIRY_TICKERS, today, min_dte, max_dte)


@lru_cache(maxsize=4096)
def _listed_expirations(calendar: TradingCalendar, daily: bool, today: dt.date, min_dte: int, max_dte: int) -> list[dt.date]:
    sessions = calendar.sessions(today + dt.timedelta(days=min_dte), today + dt.timedelta(days=max_dte + 3))
    last = today + dt.timedelta(days=max_dte)
    if daily:
        return [s.date for s in sessions if s.date <= last]
    by_week: dict[tuple[int, int], dt.date] = {}
    for s in sessions:
        week = s.date.isocalendar()[:2]
        if s.date.weekday() <= 4:
            by_week[week] = max(by_week.get(week, s.date), s.date)  # Friday, or the session before
    return [d for d in sorted(by_week.values()) if d <= last and d.weekday() >= 3]
