"""Contract quality score (0–100) and contract selection (SPEC "Contract selection").

The score adds five parts; each part's weight and full-marks point are constants below:

============== ====== =====================================================================
part           points full marks when …
============== ====== =====================================================================
spread         30     (ask − bid) / mid ≤ 2 %; zero at ≥ 25 %, linear between
volume         20     day volume ≥ 1,000 contracts (log scale from 0)
open interest  20     open interest ≥ 5,000 contracts (log scale from 0)
delta          20     |Δ| inside 0.30–0.60; zero 0.25 outside the band, linear between
affordability  10     one contract costs ≤ the account's per-trade budget; else budget / cost
============== ====== =====================================================================

Unknown volume or open interest (modelled quotes) earn half their points: neither rewarded nor
ruled out. A contract without a bid cannot be sold and is never selected.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from ops_pipeline.domain.market import OptionQuote
from ops_pipeline.domain.values import Action, StrategyType, contract_cost, option_type_for

SPREAD_POINTS, VOLUME_POINTS, OI_POINTS, DELTA_POINTS, AFFORD_POINTS = 30.0, 20.0, 20.0, 20.0, 10.0
SPREAD_FULL_PCT, SPREAD_ZERO_PCT = 0.02, 0.25
VOLUME_FULL, OI_FULL = 1_000, 5_000
DELTA_BAND = (0.30, 0.60)
DELTA_FALLOFF = 0.25
DTE_WINDOWS: dict[StrategyType, tuple[int, int]] = {
    StrategyType.DAY_TRADE: (0, 1),
    StrategyType.SWING_TRADE: (7, 30),
}


@dataclass(frozen=True, slots=True)
class QualityScore:
    """A contract's score and its parts (points)."""

    total: float
    spread: float
    volume: float
    open_interest: float
    delta: float
    affordability: float

    def describe(self) -> str:
        return (
            f"quality score: {self.total:.1f}/100 (spread {self.spread:.1f}, volume {self.volume:.1f}, "
            f"oi {self.open_interest:.1f}, delta {self.delta:.1f}, affordability {self.affordability:.1f})"
        )


def _log_points(value: int | None, full_at: int, points: float) -> float:
    if value is None:
        return points / 2
    return points * min(1.0, math.log10(1 + max(0, value)) / math.log10(1 + full_at))


def spread_points(bid: Decimal, ask: Decimal) -> float:
    """30 points at a ≤ 2 % spread (of mid), 0 at ≥ 25 %."""
    mid = float(bid + ask) / 2
    if mid <= 0:
        return 0.0
    pct = float(ask - bid) / mid
    if pct <= SPREAD_FULL_PCT:
        return SPREAD_POINTS
    if pct >= SPREAD_ZERO_PCT:
        return 0.0
    return SPREAD_POINTS * (SPREAD_ZERO_PCT - pct) / (SPREAD_ZERO_PCT - SPREAD_FULL_PCT)


def delta_points(delta: float | None) -> float:
    """20 points for |Δ| in 0.30–0.60, falling to 0 at 0.25 outside the band; unknown Δ scores 0."""
    if delta is None:
        return 0.0
    d = abs(delta)
    low, high = DELTA_BAND
    distance = max(low - d, d - high, 0.0)
    return DELTA_POINTS * max(0.0, 1 - distance / DELTA_FALLOFF)


def affordability_points(ask: Decimal, budget_usd: Decimal) -> float:
    """10 points when one contract costs no more than ``budget_usd``; else scaled by budget/cost."""
    cost = contract_cost(ask)
    if cost <= 0:
        return 0.0
    return AFFORD_POINTS * min(1.0, float(budget_usd / cost))


def quality_score(quote: OptionQuote, budget_usd: Decimal) -> QualityScore:
    """Score one contract for an account whose per-trade budget is ``budget_usd`` dollars."""
    parts = (
        spread_points(quote.bid, quote.ask),
        _log_points(quote.volume, VOLUME_FULL, VOLUME_POINTS),
        _log_points(quote.open_interest, OI_FULL, OI_POINTS),
        delta_points(quote.delta),
        affordability_points(quote.ask, budget_usd),
    )
    return QualityScore(round(sum(parts), 2), *(round(p, 2) for p in parts))


def days_to_expiry(quote: OptionQuote, today: dt.date) -> int:
    """Calendar days from ``today`` (exchange date) to the contract's expiration."""
    return (quote.symbol.expiration - today).days


@dataclass(frozen=True, slots=True)
class ScoredContract:
    quote: OptionQuote
    score: QualityScore
    dte: int


def candidate_contracts(
    quotes: Iterable[OptionQuote],
    *,
    action: Action,
    strategy: StrategyType,
    today: dt.date,
    budget_usd: Decimal,
    min_quality_score: float,
) -> list[ScoredContract]:
    """Contracts an account may buy for this recommendation, best first.

    Keeps calls for BUY_CALL and puts for BUY_PUT, expirations inside the strategy's DTE window,
    a positive bid and an ask at or above the bid, and a score ≥ ``min_quality_score``. Order:
    score descending, then |Δ| nearest 0.45, then symbol (deterministic).
    """
    wanted = option_type_for(action)
    low, high = DTE_WINDOWS[strategy]
    scored = []
    for quote in quotes:
        if quote.symbol.option_type is not wanted or not quote.has_bid or quote.ask < quote.bid:
            continue
        dte = days_to_expiry(quote, today)
        if not low <= dte <= high:
            continue
        score = quality_score(quote, budget_usd)
        if score.total >= min_quality_score:
            scored.append(ScoredContract(quote, score, dte))
    scored.sort(key=lambda s: (-s.score.total, abs(abs(s.quote.delta or 0) - 0.45), str(s.quote.symbol)))
    return scored
