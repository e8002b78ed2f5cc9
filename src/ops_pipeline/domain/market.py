"""Market values the rules read: option quotes and recommendations.

All times are timezone-aware; all prices are dollars per share (Decimal).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import overload

import numpy as np

from ops_pipeline.domain.values import Action, OccSymbol, OptionType, StrategyType

PRICE_TICKS_PER_USD = 10_000
"""Prices inside :class:`OptionChain` are whole ticks of $0.0001 (option quotes are in cents;
Alpaca's are at most four decimals), so sums and differences of prices are exact."""


class QuoteSource(StrEnum):
    """Where an option quote came from.

    ``real``: a recorded option-chain snapshot, stamped with the time its quotes were taken (no
    older than the quote-age limit).
    ``modelled``: Black-Scholes from the underlying price with the contract's latest listed
    implied volatility (else the nearest chain's smile) and the nearest real contracts' spread
    (see ``adapters/market_data/quotes.py`` and docs/quotes.md).
    """

    REAL = "real"
    MODELLED = "modelled"


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """One option contract's quote as known at ``quote_time``.

    Attributes:
        symbol: the contract.
        bid, ask: dollars per share; ``bid`` is ``0`` when the market shows no bid.
        volume, open_interest: contracts; ``None`` when unknown (modelled quotes).
        iv: implied volatility as a fraction (0.25 = 25 %), ``None`` when it cannot be inferred.
        delta: Black-Scholes delta, -1..1, ``None`` when unknown.
        underlying_price: dollars, the price the quote was taken against.
        quote_time: when the quote was observed (snapshot time or modelling time), aware.
        source: real snapshot or modelled.
        snapshot: the snapshot's name for real quotes (which file a fill used), else ``None``.
    """

    symbol: OccSymbol
    bid: Decimal
    ask: Decimal
    volume: int | None
    open_interest: int | None
    iv: float | None
    delta: float | None
    underlying_price: Decimal
    quote_time: dt.datetime
    source: QuoteSource
    snapshot: str | None = None

    @property
    def mid(self) -> Decimal:
        """Midpoint of bid and ask, dollars per share."""
        return (self.bid + self.ask) / 2

    @property
    def has_bid(self) -> bool:
        return self.bid > 0

    def age_secs(self, now: dt.datetime) -> float:
        """Seconds between the quote and ``now`` (both aware)."""
        return (now - self.quote_time).total_seconds()


def price_ticks(price_usd: Decimal) -> int:
    """``price_usd`` (dollars per share) in ticks of $0.0001, rounded half-even past the fourth decimal."""
    return int((price_usd * PRICE_TICKS_PER_USD).to_integral_value())


class OptionChain(Sequence[OptionQuote]):
    """The quotes of one underlying's contracts at one time, column by column: what the contract
    rules read (:func:`~ops_pipeline.domain.contracts.candidate_contracts`) as parallel numpy arrays,
    and each contract's whole :class:`OptionQuote` built only when it is asked for (``chain[i]``,
    iteration). A chain of thousands of modelled contracts is scored without building thousands of
    quotes; any list of quotes becomes one with :meth:`of`.

    Columns (length ``len(chain)``): ``bid_ticks``, ``ask_ticks`` int64 prices in ticks of
    :data:`PRICE_TICKS_PER_USD` (bid 0: no bid); ``volume``, ``open_interest`` float64 contracts,
    NaN when unknown; ``delta`` float64, NaN when unknown; ``expiration`` datetime64[D] dates;
    ``is_call`` bool. ``quote_of(i)`` builds contract ``i``'s quote, whose values are the columns'.
    """

    __slots__ = ("bid_ticks", "ask_ticks", "volume", "open_interest", "delta", "expiration", "is_call",
                 "_quote_of", "_built")

    def __init__(self, *, bid_ticks: np.ndarray, ask_ticks: np.ndarray, volume: np.ndarray, open_interest: np.ndarray,
                 delta: np.ndarray, expiration: np.ndarray, is_call: np.ndarray,
                 quote_of: Callable[[int], OptionQuote]) -> None:
        self.bid_ticks, self.ask_ticks = bid_ticks, ask_ticks
        self.volume, self.open_interest, self.delta = volume, open_interest, delta
        self.expiration, self.is_call = expiration, is_call
        self._quote_of = quote_of
        self._built: dict[int, OptionQuote] = {}

    @classmethod
    def of(cls, quotes: Sequence[OptionQuote]) -> OptionChain:
        """The chain of ``quotes`` (any underlyings, types and expirations), in their order."""
        if isinstance(quotes, OptionChain):
            return quotes
        quotes = list(quotes)

        def known(values: list[int | float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=float)

        return cls(
            bid_ticks=np.array([price_ticks(q.bid) for q in quotes], dtype=np.int64),
            ask_ticks=np.array([price_ticks(q.ask) for q in quotes], dtype=np.int64),
            volume=known([q.volume for q in quotes]), open_interest=known([q.open_interest for q in quotes]),
            delta=known([q.delta for q in quotes]),
            expiration=np.array([q.symbol.expiration for q in quotes], dtype="datetime64[D]"),
            is_call=np.array([q.symbol.option_type is OptionType.CALL for q in quotes], dtype=bool),
            quote_of=quotes.__getitem__,
        )

    def __len__(self) -> int:
        return len(self.bid_ticks)

    @overload
    def __getitem__(self, i: int) -> OptionQuote: ...

    @overload
    def __getitem__(self, i: slice) -> list[OptionQuote]: ...

    def __getitem__(self, i: int | slice) -> OptionQuote | list[OptionQuote]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"contract {i} of a chain of {len(self)}")
        quote = self._built.get(i)
        if quote is None:
            quote = self._built[i] = self._quote_of(i)
        return quote

    def __iter__(self) -> Iterator[OptionQuote]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A trade idea shared by all accounts (SPEC "Words").

    Attributes:
        id: database id.
        ticker: underlying symbol, e.g. ``SPY``.
        action: ``BUY_CALL`` or ``BUY_PUT``.
        strategy_type: ``day_trade`` (0–1 DTE) or ``swing_trade`` (7–30 DTE).
        confidence: 0..1.
        volume_ratio: bar volume over the trailing average (1.0 = average).
        bar_time: start of the last bar the signal was computed from, aware.
        feature_time: when the features were computed, aware.
        created_at: when the recommendation was written, aware.
        underlying_price: dollars at ``feature_time``.
    """

    id: int
    ticker: str
    action: Action
    strategy_type: StrategyType
    confidence: float
    volume_ratio: float
    bar_time: dt.datetime
    feature_time: dt.datetime
    created_at: dt.datetime
    underlying_price: Decimal
