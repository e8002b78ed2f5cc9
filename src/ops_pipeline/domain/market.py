"""Market values the rules read: option quotes and recommendations.

All times are timezone-aware; all prices are dollars per share (Decimal).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ops_pipeline.domain.values import Action, OccSymbol, StrategyType


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
