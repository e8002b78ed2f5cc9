"""Historical market data: underlying prices from bars, option quotes real or modelled.

The option quote at time *t* is taken from the snapshot with the latest **quote time** at or before
*t* (see ``chains.py``: a file's quotes are older than its name) whose age is at most
``max_quote_age`` (default 30 minutes). Otherwise it is **modelled** (:meth:`HistoricalMarketData.model`):
Black-Scholes from the underlying's latest close with the implied volatility of, in order

1. ``listing``: the contract's own, in the latest snapshot that lists it with a bid;
2. ``smile``: the smile of the nearest chain (the latest at or before *t*, else the earliest after
   it) read at the contract's moneyness, on that chain's expiration nearest in time to expiry;
3. ``atm``: that chain's at-the-money IV;
4. ``realized``: the underlying's realized volatility over the last five sessions of bars (tickers
   and times with no chain at all).

A modelled quote's spread is the median relative spread (ask − bid over mid) of the four contracts
of the same type nearest by moneyness on that chain's expiration nearest in time to expiry, times
the model price; where the ticker has no chain, :func:`rule_spread` (a table by days to expiry and
|delta| measured on the real chains, see ``docs/quotes.md``). At least $0.01 wide; a model price
under half a cent has no bid. Modelled chains list daily expirations for SPY, QQQ and IWM and Friday
expirations otherwise, strikes within ±12 % of the spot on a grid set by the price.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ops_pipeline.adapters.market_data.bars import BarSeries
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.adapters.market_data.chains import YEAR_SECS, ChainSnapshot, ChainStore, expiry_close_epoch, minute_epochs
from ops_pipeline.domain.market import PRICE_TICKS_PER_USD, OptionChain, OptionQuote, QuoteSource, price_ticks
from ops_pipeline.domain.pricing import MIN_YEARS, bs_delta, bs_price_delta
from ops_pipeline.domain.values import CENT, OccSymbol, OptionType, occ_root, occ_strike_code, to_decimal

DAILY_EXPIRY_TICKERS = frozenset({"SPY", "QQQ", "IWM"})
DEFAULT_MAX_QUOTE_AGE = dt.timedelta(minutes=30)
MINUTE = dt.timedelta(minutes=1)
MIN_SPREAD = 0.01
STRIKE_RANGE = 0.12
SPREAD_NEIGHBOURS = 4
MIN_SMILE_POINTS = 3
STD_ROWS = 32
"""Realized-volatility windows reduced per ``np.std`` call (32 × 1,950 returns: half a megabyte)."""

DTE_EDGES = (2, 7, 31)
"""Days-to-expiry buckets: 0–1, 2–6, 7–30, 31+ (the day-trade and swing bands of SPEC "Words")."""
DTE_BUCKETS = ("0-1", "2-6", "7-30", "31+")
DELTA_EDGES = (0.15, 0.30, 0.60, 0.85)
"""|delta| bands: <0.15, 0.15–0.30, 0.30–0.60 (the band the product trades), 0.60–0.85, ≥0.85."""
DELTA_BANDS = ("<0.15", "0.15-0.30", "0.30-0.60", "0.60-0.85", ">=0.85")

RULE_SPREAD = np.array([
    # |delta| <0.15, 0.15-0.30, 0.30-0.60, 0.60-0.85, >=0.85 ; relative spread (ask - bid) / mid
    [0.400, 0.061, 0.040, 0.042, 0.088],  # 0-1 DTE
    [0.200, 0.026, 0.022, 0.049, 0.074],  # 2-6 DTE
    [0.154, 0.033, 0.028, 0.064, 0.074],  # 7-30 DTE
    [0.154, 0.033, 0.028, 0.064, 0.074],  # 31+ DTE (as 7-30: only SPY and QQQ list these, tighter)
])
"""Relative spread where a ticker has no chain: per DTE bucket and |delta| band, the widest of the
real chains' four tickers' medians (AAPL in most cells; SPY, QQQ and TSLA are 2-5 times tighter),
measured on ``../shared/data/option_chains`` by ``ops-pipeline data check-quotes --spreads``
(docs/quotes.md). A ticker without chains is assumed no more liquid than the least liquid measured."""


class VolSource(StrEnum):
    """Where a modelled quote's volatility came from (see the module docstring)."""

    LISTING = "listing"
    SMILE = "smile"
    ATM = "atm"
    REALIZED = "realized"


def dte_bucket(days: np.ndarray) -> np.ndarray:
    """Index into :data:`DTE_BUCKETS` of calendar days to expiry."""
    return np.searchsorted(DTE_EDGES, days, side="right")


def delta_band(delta: np.ndarray) -> np.ndarray:
    """Index into :data:`DELTA_BANDS` of a delta (sign ignored)."""
    return np.searchsorted(DELTA_EDGES, np.abs(delta), side="right")


def rule_spread(days: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Relative spread (fraction of the mid) of :data:`RULE_SPREAD` for calendar days to expiry and delta."""
    return RULE_SPREAD[dte_bucket(days), delta_band(delta)]


def quote_prices(price: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask, dollars per share rounded to the cent, around a model price with a spread
    (dollars, at least :data:`MIN_SPREAD`); the bid is 0 (no bid) below one cent."""
    spread = np.maximum(spread, MIN_SPREAD)
    bid = np.round(price - spread / 2, 2)
    ask = np.maximum(np.round(price + spread / 2, 2), np.maximum(bid + MIN_SPREAD, MIN_SPREAD))
    return np.where(bid >= 0.01, bid, 0.0), np.round(ask, 2)


@dataclass(frozen=True)
class ModelledQuotes:
    """Modelled quotes for contracts of one underlying, parallel arrays.

    ``price``, ``bid``, ``ask`` in dollars per share; ``iv`` a fraction; ``vol_source`` values of
    :class:`VolSource`; ``rule_spread`` True where the spread came from :func:`rule_spread`;
    ``spot`` the underlying price they were modelled against, dollars.
    """

    spot: float
    price: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    iv: np.ndarray
    delta: np.ndarray
    vol_source: np.ndarray
    rule_spread: np.ndarray


@dataclass(frozen=True)
class _Expiry:
    years: float
    smile_x: np.ndarray
    smile_iv: np.ndarray
    spread_x: dict[bool, np.ndarray]
    spread_rel: dict[bool, np.ndarray]


def _moneyness(strike: np.ndarray, spot: float, years: np.ndarray) -> np.ndarray:
    """Standardised moneyness ln(K/S)/sqrt(T): comparable across expirations."""
    return np.log(strike / spot) / np.sqrt(np.maximum(years, MIN_YEARS))


def strike_step(ticker: str, spot: float) -> float:
    """Strike grid of modelled chains, dollars."""
    if ticker in DAILY_EXPIRY_TICKERS:
        return 1.0
    for limit, step in ((25, 0.5), (100, 1.0), (250, 2.5)):
        if spot < limit:
            return step
    return 5.0


def _modelled_quote(symbol: OccSymbol, bid: float, ask: float, iv: float, delta: float, underlying: Decimal,
                    now: dt.datetime) -> OptionQuote:
    """A modelled contract's :class:`OptionQuote` from the model's values (dollars per share, the
    ask at least a cent); ``underlying`` the price it was modelled against, dollars."""
    return OptionQuote(symbol=symbol, bid=to_decimal(bid), ask=max(to_decimal(ask), CENT), volume=None,
                       open_interest=None, iv=iv, delta=delta, underlying_price=underlying, quote_time=now,
                       source=QuoteSource.MODELLED)


class _MarkPath:
    """One contract's modelled quotes at ``start`` (aware) and each whole minute after it,
    parallel arrays; NaN ``bid`` where no quote could be modelled. A held contract is marked every
    minute of a replay: modelled a session at a time, its marks cost one pass instead of one a minute."""

    def __init__(self, symbol: OccSymbol, start: dt.datetime, spot: np.ndarray, bid: np.ndarray,
                 ask: np.ndarray, iv: np.ndarray, delta: np.ndarray) -> None:
        self.symbol, self.start, self.end = symbol, start, start + (len(spot) - 1) * MINUTE
        self._spot, self._bid, self._ask = spot.tolist(), bid.tolist(), ask.tolist()
        self._iv, self._delta = iv.tolist(), delta.tolist()

    def minute_of(self, now: dt.datetime) -> int | None:
        """The index of ``now`` on the path, or None if it is not one of its minutes."""
        k, off = divmod(now - self.start, MINUTE)
        return k if not off and 0 <= k < len(self._spot) else None

    def quote(self, k: int, now: dt.datetime) -> OptionQuote | None:
        """The quote at ``now`` (minute ``k``), built as :meth:`HistoricalMarketData._quotes` builds it."""
        if math.isnan(self._spot[k]) or math.isnan(self._bid[k]):
            return None
        return _modelled_quote(self.symbol, self._bid[k], self._ask[k], self._iv[k], self._delta[k],
                               to_decimal(round(self._spot[k], 4)), now)


class HistoricalMarketData:
    """Market data for a replay or the paper exchange; implements the ``MarketData`` port.

    ``mark_ahead`` (the replay): a modelled contract's quote is computed for the rest of the
    session the first minute it is asked for (:class:`_MarkPath`); the same values, once a session.
    """

    def __init__(
        self,
        bars: dict[str, BarSeries],
        chains: ChainStore,
        calendar: TradingCalendar,
        max_quote_age: dt.timedelta = DEFAULT_MAX_QUOTE_AGE,
        *,
        mark_ahead: bool = False,
    ) -> None:
        self.bars = bars
        self.mark_ahead = mark_ahead
        self._paths: dict[OccSymbol, _MarkPath] = {}
        self.chains = chains
        self.calendar = calendar
        self.max_quote_age = max_quote_age
        self._symbol_index: dict[int, dict[str, int]] = {}
        self._realized: dict[tuple[str, int], float | None] = {}
        self._returns: dict[str, tuple[BarSeries, np.ndarray]] = {}
        self._expiries: dict[int, list[_Expiry]] = {}
        self._memo_now: dt.datetime | None = None
        self._memo: dict[tuple[Any, ...], Any] = {}
        """This minute's answers (:meth:`_memoized`): quotes by ``(symbol, now)``, chains by
        ``(ticker, now, type, min DTE, max DTE)``."""

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
        return self._realized_at(series, [series.last_closed_index(now.timestamp())])[0]

    def _realized_at(self, series: BarSeries, closed: list[int]) -> list[float | None]:
        """Realized volatility as of each bar index of ``closed`` (the latest closed bar), memoized
        per ticker and index. Several full five-session windows not yet known are reduced together
        (one ``np.std`` over their rows: each row sums the same returns in the same order as the
        window alone, so the same values)."""
        per_session = 390 * 60 // series.interval_secs
        span, memo, ticker = 5 * per_session, self._realized, series.ticker
        todo = sorted({i for i in closed if (ticker, i) not in memo})
        full = [i for i in todo if i >= span]
        if len(full) > 1:
            windows, at = sliding_window_view(self._log_returns(series), span), np.array(full) - span
            for block in range(0, len(full), STD_ROWS):  # blocks of rows that stay in the CPU's cache
                rows = windows[at[block:block + STD_ROWS]]  # returns[i - span:i], one row each
                vols = (np.std(rows, axis=1) * math.sqrt(252 * per_session)).tolist()
                for i, vol in zip(full[block:block + STD_ROWS], vols, strict=True):
                    memo[ticker, i] = vol
        for i in todo:
            if (ticker, i) not in memo:
                start = max(0, i - span)
                if i + 1 - start >= 20:  # bars in the window
                    returns = self._log_returns(series)[start:i]  # = np.diff(np.log(close[start:i + 1])), bit for bit
                    memo[ticker, i] = float(np.std(returns) * math.sqrt(252 * per_session))
                else:
                    memo[ticker, i] = None
        return [memo[ticker, i] for i in closed]

    def _log_returns(self, series: BarSeries) -> np.ndarray:
        """Log returns between consecutive closes of ``series``, computed once per series (element
        by element, so a slice of it equals the returns of the same closes computed alone)."""
        found = self._returns.get(series.ticker)
        if found is None or found[0] is not series:
            found = self._returns[series.ticker] = (series, np.diff(np.log(series.close)))
        return found[1]

    # --- option quotes ------------------------------------------------------------------------
    def _fresh_snapshot(self, ticker: str, now: dt.datetime) -> ChainSnapshot | None:
        snap = self.chains.latest_at_or_before(ticker, now)
        if snap is None or now - snap.quote_time > self.max_quote_age:
            return None
        return snap

    def option_chain(
        self, ticker: str, now: dt.datetime, *, option_type: OptionType, min_dte: int, max_dte: int
    ) -> Sequence[OptionQuote]:
        """Quotes of every listed contract of one type expiring ``min_dte``..``max_dte`` calendar
        days after today (exchange date), not yet expired at ``now``: a snapshot's real quotes, or a
        modelled :class:`~ops_pipeline.domain.market.OptionChain`. Computed once per minute and
        window: every account deciding the ticker's recommendation then gets the same chain (shared,
        so never changed by a reader: a chain's quotes are immutable, a list is returned as a tuple)."""
        return self._memoized((ticker, now, option_type, min_dte, max_dte), now,
                              lambda: self._option_chain(ticker, now, option_type, min_dte, max_dte))

    def _option_chain(self, ticker: str, now: dt.datetime, option_type: OptionType, min_dte: int,
                      max_dte: int) -> Sequence[OptionQuote]:
        today = exchange_date(now)
        lo, hi = np.datetime64(today + dt.timedelta(days=min_dte)), np.datetime64(today + dt.timedelta(days=max_dte))
        snap = self._fresh_snapshot(ticker, now)
        if snap is not None:
            mask = (snap.is_call == (option_type is OptionType.CALL)) & (snap.expiration >= lo)
            mask &= (snap.expiration <= hi) & (snap.expiry_close > now.timestamp())
            return tuple(self._real_quote(snap, int(i)) for i in np.flatnonzero(mask))
        chain = self._modelled_chain(ticker, now, option_type, min_dte, max_dte)
        return chain if isinstance(chain, OptionChain) else tuple(chain)

    def option_quote(self, symbol: OccSymbol, now: dt.datetime) -> OptionQuote | None:
        """The contract's quote in force at ``now``: real if a fresh snapshot lists it, else modelled.
        ``None`` when the underlying has no price yet. Computed once per contract and minute: every
        account holding it (and the broker marking it) gets the same quote."""
        key = (symbol, now)
        memo = self._memo
        if key in memo:
            return memo[key]
        return self._memoized(key, now, lambda: self._option_quote(symbol, now))

    def _memoized(self, key: tuple[Any, ...], now: dt.datetime, compute: Callable[[], Any]) -> Any:  # noqa: ANN401
        """``compute()``, remembered under ``key`` (which holds ``now``) until the first question about
        another minute: a replay asks about one minute at a time, for four accounts and the broker."""
        memo = self._memo
        if key in memo:
            return memo[key]
        if now != self._memo_now:  # keyed by time too, so a server's threads at other times stay apart
            self._memo_now, memo = now, {}
            self._memo = memo
        memo[key] = answer = compute()
        return answer

    def _option_quote(self, symbol: OccSymbol, now: dt.datetime) -> OptionQuote | None:
        snap = self._fresh_snapshot(symbol.underlying, now)
        if snap is not None:
            i = self._index(snap).get(str(symbol))
            if i is not None:
                return self._real_quote(snap, i)
        if self.mark_ahead and (path := self._paths.get(symbol)) is not None and (k := path.minute_of(now)) is not None:
            return path.quote(k, now)  # the path's spot is the underlying price's (NaN: none, so no quote)
        spot = self.underlying_price(symbol.underlying, now)
        if spot is None:
            return None
        if self.mark_ahead:
            path = self._path(symbol, now)
            k = path.minute_of(now)
            if k is not None:  # else a time off the path's minutes: modelled alone below
                return path.quote(k, now)
        quotes = self._quotes([symbol], float(spot), now)
        return quotes[0] if quotes else None

    def _path(self, symbol: OccSymbol, now: dt.datetime) -> _MarkPath:
        """``symbol``'s :class:`_MarkPath` spanning ``now``: the one built earlier this session,
        else a new one from ``now`` (paths that ended before ``now`` are dropped)."""
        path = self._paths.get(symbol)
        if path is None or not path.start <= now <= path.end:
            self._paths = {s: p for s, p in self._paths.items() if p.end >= now}
            path = self._paths[symbol] = self._mark_path(symbol, now)
        return path

    def _mark_path(self, symbol: OccSymbol, now: dt.datetime) -> _MarkPath:
        """``symbol`` modelled at ``now`` and every whole minute after it to the session's close,
        each minute exactly as :meth:`model` models it alone then (spot, chains and volatility as
        of that minute: nothing after it is read), in one pass per reference chain."""
        session = self.calendar.session(exchange_date(now))
        n = 1 + (int((session.close - now).total_seconds() // 60) if session is not None else 0)
        epochs = minute_epochs(now, n)
        ticker, text, strike, expiry_close, call = symbol.underlying, *_contract_terms(symbol)
        series = self.bars[ticker]
        closed = np.searchsorted(series.start, np.floor(epochs) - series.interval_secs, side="right") - 1
        closes = series.close[np.maximum(closed, 0)].tolist()  # the floats float(series.close[i]) gives, at once
        spot = np.array([round(c, 4) if i >= 0 else np.nan for i, c in zip(closed.tolist(), closes, strict=True)])
        sigma = self.chains.listing_iv_each_minute(text, now, n)
        which, references = self.chains.nearest_with_iv_each_minute(ticker, now, n)
        bid, ask, iv, delta = (np.full(n, np.nan) for _ in range(4))
        usable = ~np.isnan(spot)
        # Minutes with the same reference chain (by identity) are modelled together.
        key_of = [None if r is None else id(r[0]) for r in references]
        for key in dict.fromkeys(key_of):
            rows = usable & np.isin(which, [j for j, k in enumerate(key_of) if k == key])
            if not rows.any():
                continue
            reference = references[int(which[np.flatnonzero(rows)[0]])]
            expiries = self._reference_expiries(reference[0]) if reference else []
            years = (np.float64(expiry_close) - epochs[rows]) / YEAR_SECS
            x = _moneyness(np.float64(strike), spot[rows], years)
            vol = sigma[rows]
            missing = np.isnan(vol)
            if missing.any() and expiries:
                vol[missing] = _smile_iv(expiries, x[missing], years[missing])
            missing = np.isnan(vol)
            if missing.any():
                if reference:
                    vol[missing] = reference[1]
                else:
                    at = closed[np.flatnonzero(rows)[missing]].tolist()
                    vol[missing] = [np.nan if v is None else v for v in self._realized_at(series, at)]
            known = ~np.isnan(vol)  # no volatility at all: no quote, as model() gives none
            rows[rows] = known
            _, bid[rows], ask[rows], delta[rows], _ = self._price(
                spot[rows], np.float64(strike), years[known], x[known], vol[known], np.full(int(known.sum()), call), expiries)
            iv[rows] = vol[known]
        return _MarkPath(symbol, now, spot, bid, ask, iv, delta)

    def _index(self, snap: ChainSnapshot) -> dict[str, int]:
        key = id(snap)
        if key not in self._symbol_index:
            self._symbol_index[key] = {str(s): i for i, s in enumerate(snap.symbols)}
        return self._symbol_index[key]

    def _real_quote(self, snap: ChainSnapshot, i: int) -> OptionQuote:
        iv = float(snap.iv[i]) if math.isfinite(snap.iv[i]) else snap.atm_iv()
        delta = float(bs_delta(snap.spot, snap.strike[i], snap.years[i], iv, snap.is_call[i])) if iv else None
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
            quote_time=snap.quote_time,
            source=QuoteSource.REAL,
            snapshot=snap.name,
        )

    # --- the model ----------------------------------------------------------------------------
    def model(self, ticker: str, symbols: Sequence[str], strike: np.ndarray, expiry_close: np.ndarray,
              is_call: np.ndarray, spot: float, now: dt.datetime, *, known_at: dt.datetime | None = None,
              allow_later: bool = True) -> ModelledQuotes | None:
        """Model quotes of contracts of ``ticker`` at ``now`` against the underlying price ``spot``
        (dollars), from the chains quoted at or before ``known_at`` (default ``now``; earlier to
        score the model on chains at least that old). ``allow_later`` lets volatility and spreads
        come from the earliest chain after ``known_at`` when none is before it (a replay before the
        first chain does; ``data check-quotes`` does not). Arrays are parallel to ``symbols``;
        ``None`` when no volatility is known at all (no chain and too few bars).

        One contract (a held position marked by the paper exchange; a replay marks a session at a
        time, :class:`_MarkPath`) takes :meth:`_model_one`: the same steps on numpy scalars, the
        same values bit for bit."""
        known_at = known_at or now
        if len(symbols) == 1:
            return self._model_one(ticker, symbols[0], float(strike[0]), float(expiry_close[0]), bool(is_call[0]),
                                   spot, now, known_at, allow_later)
        years = (expiry_close - now.timestamp()) / YEAR_SECS
        sigma = np.full(len(symbols), np.nan)
        source = np.full(len(symbols), VolSource.LISTING.value, dtype=object)
        for i, listed in enumerate(self.chains.listing_ivs(symbols, known_at)):
            if listed is not None:
                sigma[i] = listed
        reference = self.chains.nearest_with_iv(ticker, known_at, allow_later=allow_later)
        expiries = self._reference_expiries(reference[0]) if reference else []
        x = _moneyness(strike, spot, years)
        missing = np.isnan(sigma)
        if missing.any() and expiries:
            sigma[missing] = _smile_iv(expiries, x[missing], years[missing])
            source[missing] = VolSource.SMILE.value
        missing = np.isnan(sigma)
        if missing.any():
            fallback, kind = (reference[1], VolSource.ATM) if reference else (self.realized_vol(ticker, now), VolSource.REALIZED)
            if fallback is None:
                return None
            sigma[missing] = fallback
            source[missing] = kind.value
        price, bid, ask, delta, by_rule = self._price(spot, strike, years, x, sigma, is_call, expiries)
        return ModelledQuotes(spot, price, bid, ask, sigma, delta, source, by_rule)

    def _price(self, spot: float | np.ndarray, strike: np.ndarray, years: np.ndarray, x: np.ndarray, sigma: np.ndarray,
               is_call: np.ndarray, expiries: list[_Expiry]) -> tuple[np.ndarray, ...]:
        """Black-Scholes price and delta at volatility ``sigma``, and bid and ask around the price
        (the reference chain's neighbour spreads, else the rule's): ``(price, bid, ask, delta,
        by_rule)``, parallel to the rows. ``spot`` one price or one per row, dollars."""
        price, delta = bs_price_delta(spot, strike, years, sigma, is_call)
        relative = np.full(len(years), np.nan)
        chosen = self._nearest_expiry(expiries, years) if expiries else np.zeros(0, dtype=int)
        for j in np.unique(chosen):
            for call in (True, False):
                rows = (chosen == j) & (is_call == call)
                relative[rows] = _neighbour_spread(expiries[j].spread_x[call], expiries[j].spread_rel[call], x[rows])
        by_rule = np.isnan(relative)
        relative[by_rule] = rule_spread(np.maximum(years[by_rule] * 365, 0), delta[by_rule])
        bid, ask = quote_prices(price, relative * price)
        return price, bid, ask, delta, by_rule

    def _model_one(self, ticker: str, symbol: str, strike: float, expiry_close: float, is_call: bool, spot: float,
                   now: dt.datetime, known_at: dt.datetime, allow_later: bool) -> ModelledQuotes | None:
        """:meth:`model` of one contract. Every number goes through the same numpy functions as
        the array path (scalars take the same ufunc loops; ``tests/integration/test_real_quotes.py``
        checks the two agree exactly for each volatility source); what is left out is the masking
        and per-expiry grouping, about a quarter of a one-contract call (docs/performance.md)."""
        years = (np.float64(expiry_close) - now.timestamp()) / YEAR_SECS
        found = self.chains.listing_iv(symbol, known_at)
        reference = self.chains.nearest_with_iv(ticker, known_at, allow_later=allow_later)
        expiries = self._reference_expiries(reference[0]) if reference else []
        x = _moneyness(np.float64(strike), spot, years)
        sigma, source = np.float64(np.nan if found is None else found[0]), VolSource.LISTING
        if np.isnan(sigma) and expiries:
            sigma, source = _smile_iv(expiries, np.array([x]), np.array([years]))[0], VolSource.SMILE
        if np.isnan(sigma):
            fallback, source = (reference[1], VolSource.ATM) if reference else (self.realized_vol(ticker, now), VolSource.REALIZED)
            if fallback is None:
                return None
            sigma = np.float64(fallback)
        price, delta = bs_price_delta(spot, strike, years, sigma, is_call)
        relative = np.float64(np.nan)
        if expiries:
            expiry = expiries[int(self._nearest_expiry(expiries, np.array([years]))[0])]
            relative = _neighbour_spread(expiry.spread_x[is_call], expiry.spread_rel[is_call], np.array([x]))[0]
        by_rule = bool(np.isnan(relative))
        if by_rule:
            relative = rule_spread(np.maximum(years * 365, 0), delta)
        bid, ask = quote_prices(price, relative * price)
        return ModelledQuotes(spot, np.array([price]), np.array([bid]), np.array([ask]), np.array([sigma]),
                              np.array([delta]), np.array([source.value], dtype=object), np.array([by_rule]))

    def _reference_expiries(self, snap: ChainSnapshot) -> list[_Expiry]:
        key = id(snap)
        if key not in self._expiries:
            years = snap.years
            x = _moneyness(snap.strike, snap.spot, years)
            quoted = (snap.bid > 0) & (years > 0)
            otm = np.where(snap.is_call, snap.strike >= snap.spot, snap.strike < snap.spot)
            expiries = []
            for expiration in np.unique(snap.expiration):
                this = quoted & (snap.expiration == expiration)
                smile = this & otm & np.isfinite(snap.iv)
                if smile.sum() < MIN_SMILE_POINTS:
                    continue
                order = np.argsort(x[smile])
                spread_x, spread_rel = {}, {}
                for call in (True, False):
                    side = this & (snap.is_call == call)
                    mid = (snap.bid[side] + snap.ask[side]) / 2
                    by_x = np.argsort(x[side])
                    spread_x[call] = x[side][by_x]
                    spread_rel[call] = ((snap.ask[side] - snap.bid[side]) / mid)[by_x]
                expiries.append(_Expiry(float(years[this][0]), x[smile][order], snap.iv[smile][order], spread_x, spread_rel))
            self._expiries[key] = expiries
        return self._expiries[key]

    @staticmethod
    def _nearest_expiry(expiries: list[_Expiry], years: np.ndarray) -> np.ndarray:
        """Per contract, the index of the reference expiration (``expiries``, not empty) nearest in
        time to expiry."""
        listed = np.array([e.years for e in expiries])
        return np.argmin(np.abs(years[:, None] - listed[None, :]), axis=1) if len(years) else np.zeros(0, dtype=int)

    def _quotes(self, symbols: list[OccSymbol], spot: float, now: dt.datetime) -> list[OptionQuote]:
        """Modelled :class:`OptionQuote` objects for contracts of one underlying."""
        if not symbols:
            return []
        terms = [_contract_terms(s) for s in symbols]
        modelled = self.model(
            symbols[0].underlying, [t[0] for t in terms], np.array([t[1] for t in terms]),
            np.array([t[2] for t in terms]), np.array([t[3] for t in terms]), spot, now)
        if modelled is None:
            return []
        underlying = to_decimal(round(spot, 4))
        return [
            _modelled_quote(symbol, bid, ask, iv, delta, underlying, now)
            for symbol, bid, ask, iv, delta in zip(symbols, modelled.bid.tolist(), modelled.ask.tolist(),
                                                   modelled.iv.tolist(), modelled.delta.tolist(), strict=True)
        ]

    def _modelled_chain(
        self, ticker: str, now: dt.datetime, option_type: OptionType, min_dte: int, max_dte: int
    ) -> OptionChain | list[OptionQuote]:
        """Every listed (modelled) contract of one type in the DTE window, as a chain whose quotes
        are built when read: the values :meth:`_quotes` gives each of them, bit for bit."""
        spot_d = self.underlying_price(ticker, now)
        if spot_d is None:
            return []
        spot = float(spot_d)
        step = strike_step(ticker, spot)
        strikes = _strike_grid(step, math.ceil(spot * (1 - STRIKE_RANGE) / step), math.floor(spot * (1 + STRIKE_RANGE) / step))
        expirations = [e for e in self._expirations(ticker, exchange_date(now), min_dte, max_dte)
                       if expiry_close_epoch(e) > now.timestamp()]
        if not strikes or not expirations:
            return []
        call = option_type is OptionType.CALL
        if len(strikes) * len(expirations) == 1:
            return self._quotes([OccSymbol(ticker, expirations[0], option_type, strikes[0])], spot, now)
        texts = _chain_texts(ticker, tuple(expirations), option_type, strikes)
        n = len(texts)
        modelled = self.model(
            ticker, texts, np.tile(np.array([float(k) for k in strikes]), len(expirations)),
            np.repeat(np.array([expiry_close_epoch(e) for e in expirations]), len(strikes)), np.full(n, call), spot, now)
        if modelled is None:
            return []
        bid, ask, iv, delta = modelled.bid.tolist(), modelled.ask.tolist(), modelled.iv.tolist(), modelled.delta.tolist()
        underlying = to_decimal(round(spot, 4))

        def quote_of(i: int) -> OptionQuote:
            symbol = OccSymbol(ticker, expirations[i // len(strikes)], option_type, strikes[i % len(strikes)])
            return _modelled_quote(symbol, bid[i], ask[i], iv[i], delta[i], underlying, now)

        unknown = np.full(n, np.nan)
        return OptionChain(
            bid_ticks=_ticks(modelled.bid), ask_ticks=np.maximum(_ticks(modelled.ask), price_ticks(CENT)),
            volume=unknown, open_interest=unknown, delta=modelled.delta,
            expiration=np.repeat(np.array(expirations, dtype="datetime64[D]"), len(strikes)),
            is_call=np.full(n, call), quote_of=quote_of)

    def _expirations(self, ticker: str, today: dt.date, min_dte: int, max_dte: int) -> list[dt.date]:
        return _listed_expirations(self.calendar, ticker in DAILY_EXPIRY_TICKERS, today, min_dte, max_dte)


@lru_cache(maxsize=1024)
def _strike_grid(step: float, low: int, high: int) -> tuple[Decimal, ...]:
    """Listed strikes ``low × step`` to ``high × step`` (dollars, to the tenth of a cent): the same
    grids recur minute after minute and account after account."""
    return tuple(Decimal(str(round(float(k), 3))) for k in np.arange(low, high + 1) * step)


@lru_cache(maxsize=256)
def _chain_texts(ticker: str, expirations: tuple[dt.date, ...], option_type: OptionType,
                 strikes: tuple[Decimal, ...]) -> tuple[str, ...]:
    """``str(OccSymbol(ticker, e, option_type, k))`` of every expiration (outer) and strike (inner),
    without building them."""
    codes = [occ_strike_code(option_type, k) for k in strikes]
    return tuple(root + code for root in (occ_root(ticker, e) for e in expirations) for code in codes)


def _ticks(prices_usd: np.ndarray) -> np.ndarray:
    """Cent-rounded prices (dollars, as :func:`quote_prices` gives them) in ticks of
    :data:`~ops_pipeline.domain.market.PRICE_TICKS_PER_USD`: the value ``to_decimal`` reads."""
    return np.rint(prices_usd * PRICE_TICKS_PER_USD).astype(np.int64)


@lru_cache(maxsize=65536)
def _contract_terms(symbol: OccSymbol) -> tuple[str, float, float, bool]:
    """What the model needs of a contract: OCC symbol, strike (dollars), expiry close (epoch
    seconds), call or not. A held contract is modelled every minute; its terms never change."""
    return str(symbol), float(symbol.strike), expiry_close_epoch(symbol.expiration), symbol.option_type is OptionType.CALL


def _smile_iv(expiries: list[_Expiry], x: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Implied volatility read off the reference chain's smiles at standardised moneyness ``x``:
    total variance (σ²T) interpolated linearly in time between the two listed expirations around
    ``years``, the nearest one's smile beyond them (``expiries`` in time order)."""
    listed = np.array([e.years for e in expiries])
    upper = np.clip(np.searchsorted(listed, years), 1, len(listed) - 1) if len(listed) > 1 else np.zeros(len(x), dtype=int)
    lower = np.maximum(upper - 1, 0)
    t1, t2 = listed[lower], listed[upper]
    v1, v2 = np.empty(len(x)), np.empty(len(x))
    for j in np.unique(np.concatenate((lower, upper))).tolist():  # only the smiles some contract reads
        expiry = expiries[j]
        for v, side in ((v1, lower), (v2, upper)):
            rows = side == j
            if rows.any():
                v[rows] = np.interp(x[rows], expiry.smile_x, expiry.smile_iv)  # element by element
    t = np.clip(years, t1, t2)
    weight = np.where(t2 > t1, (t - t1) / np.where(t2 > t1, t2 - t1, 1.0), 0.0)
    variance = v1**2 * t1 + weight * (v2**2 * t2 - v1**2 * t1)
    inside = np.sqrt(np.maximum(variance, 0) / np.maximum(t, MIN_YEARS))
    return np.where(years <= t1, v1, np.where(years >= t2, v2, inside))


def _neighbour_spread(listed_x: np.ndarray, listed_rel: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Median relative spread of the :data:`SPREAD_NEIGHBOURS` listed contracts nearest each ``x``
    (standardised moneyness); NaN where the side lists none."""
    if len(listed_x) == 0 or len(x) == 0:
        return np.full(len(x), np.nan)
    k = min(SPREAD_NEIGHBOURS, len(listed_x))
    window = np.searchsorted(listed_x, x)[:, None] + np.arange(-k, k)[None, :]
    inside = (window >= 0) & (window < len(listed_x))
    window = np.clip(window, 0, len(listed_x) - 1)
    distance = np.where(inside, np.abs(listed_x[window] - x[:, None]), np.inf)
    nearest = np.take_along_axis(window, np.argsort(distance, axis=1)[:, :k], axis=1)
    return _row_median(listed_rel[nearest])


def _row_median(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=1)``, bit for bit (the middle value, or the two middle values'
    sum halved; NaN where a row has one), without its general machinery (most of the cost of a
    few rows)."""
    k = values.shape[1]
    ordered = np.sort(values, axis=1)
    middle = ordered[:, k // 2] if k % 2 else (ordered[:, k // 2 - 1] + ordered[:, k // 2]) / 2
    return np.where(np.isnan(values).any(axis=1), np.nan, middle)


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
