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

Contracts are scored a chain at a time (:class:`~ops_pipeline.domain.market.OptionChain`, numpy
columns): a modelled swing chain of SPY lists about 2,900 contracts. Each part is the same IEEE
arithmetic, in the same order, as the formula written for one contract (prices are exact ticks,
so ``float(bid + ask)`` is the same double either way; logarithms and the Decimal budget ratio are
taken with Python's ``math`` and ``decimal`` per distinct value; the total is rounded with Python's
``round``), so a contract's score does not depend on the chain it came in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import numpy as np

from ops_pipeline.domain.market import PRICE_TICKS_PER_USD, OptionChain, OptionQuote, price_ticks
from ops_pipeline.domain.values import CONTRACT_MULTIPLIER, Action, OptionType, StrategyType, option_type_for

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


SPREAD_SLOPE = SPREAD_ZERO_PCT - SPREAD_FULL_PCT
DELTA_TARGET = 0.45
"""|Δ| preferred between contracts of equal score (the middle of :data:`DELTA_BAND`)."""


@dataclass(frozen=True)
class ChainScores:
    """The quality score parts (points, unrounded) of every contract of a chain, parallel arrays;
    ``total`` is their sum, in the order of the table above."""

    spread: np.ndarray
    volume: np.ndarray
    open_interest: np.ndarray
    delta: np.ndarray
    affordability: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.spread + self.volume + self.open_interest + self.delta + self.affordability

    def score(self, i: int, total: float | None = None) -> QualityScore:
        """Contract ``i``'s :class:`QualityScore`, each figure rounded to 0.01 point."""
        parts = (self.spread[i], self.volume[i], self.open_interest[i], self.delta[i], self.affordability[i])
        return QualityScore(round(float(self.total[i]), 2) if total is None else total, *(round(float(p), 2) for p in parts))


def _spread_points(bid_ticks: np.ndarray, ask_ticks: np.ndarray) -> np.ndarray:
    mid = (bid_ticks + ask_ticks) / PRICE_TICKS_PER_USD / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = (ask_ticks - bid_ticks) / PRICE_TICKS_PER_USD / mid
        between = SPREAD_POINTS * (SPREAD_ZERO_PCT - pct) / SPREAD_SLOPE
    points = np.where(pct <= SPREAD_FULL_PCT, SPREAD_POINTS, np.where(pct >= SPREAD_ZERO_PCT, 0.0, between))
    return np.where(mid <= 0, 0.0, points)


def _log_points(values: np.ndarray, full_at: int, points: float) -> np.ndarray:
    """``points`` × log10(1 + value) / log10(1 + full_at), at most ``points``; half where unknown (NaN)."""
    out = np.full(len(values), points / 2)
    known = ~np.isnan(values)
    if known.any():
        scale = math.log10(1 + full_at)
        distinct, where = np.unique(values[known], return_inverse=True)
        out[known] = np.array([points * min(1.0, math.log10(1 + max(0, int(v))) / scale) for v in distinct.tolist()])[where]
    return out


def _delta_points(delta: np.ndarray) -> np.ndarray:
    d = np.abs(delta)
    low, high = DELTA_BAND
    distance = np.maximum(np.maximum(low - d, d - high), 0.0)
    return np.where(np.isnan(delta), 0.0, DELTA_POINTS * np.maximum(0.0, 1 - distance / DELTA_FALLOFF))


def round_cents(values: np.ndarray) -> np.ndarray:
    """``[round(v, 2) for v in values]`` (Python's correctly rounded decimal rounding, half to
    even) as an array, bit for bit, without a Python call per value where none is needed.

    ``rint(v × 100) / 100`` is that value whenever ``v × 100`` is not within rounding error of a
    half: the product's rounding cannot then cross the half, so ``rint`` finds the decimal rounding
    k, and ``k / 100`` is the double nearest k/100, which is what ``round`` returns. Values near a
    half (or not finite) are rounded by ``round`` itself."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values * 100
        out = np.rint(scaled) / 100
        near_half = ~(np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6 * np.maximum(1.0, np.abs(scaled)))
    for i in np.flatnonzero(near_half).tolist():
        out[i] = round(float(values[i]), 2)
    return out


def _affordability_points(ask_ticks: np.ndarray, budget_usd: Decimal) -> np.ndarray:
    """Full points where one contract costs at most the budget; else 10 × budget / cost, the ratio
    taken in Decimal (per distinct ask) as for one contract."""
    out = np.full(len(ask_ticks), AFFORD_POINTS)
    # cost = ask × 100 dollars ≤ budget  ⇔  ask_ticks ≤ budget × ticks per dollar / 100
    scaled = budget_usd * (PRICE_TICKS_PER_USD // CONTRACT_MULTIPLIER)
    affordable = int(scaled.to_integral_value(rounding=ROUND_FLOOR))
    dear = (ask_ticks > affordable) | (ask_ticks <= 0)
    if dear.any():
        distinct, where = np.unique(ask_ticks[dear], return_inverse=True)
        # budget / (ticks / 10,000 × 100) is the same number as budget × 100 / ticks, and Decimal
        # division is correctly rounded, so the ratio is the one taken with the contract's cost.
        points = [0.0 if t <= 0 else AFFORD_POINTS * min(1.0, float(scaled / t)) for t in distinct.tolist()]
        out[dear] = np.array(points)[where]
    return out


def score_chain(chain: OptionChain, budget_usd: Decimal) -> ChainScores:
    """The quality score parts of every contract of ``chain`` for an account whose per-trade budget
    is ``budget_usd`` dollars (see the table above)."""
    return ChainScores(
        spread=_spread_points(chain.bid_ticks, chain.ask_ticks),
        volume=_log_points(chain.volume, VOLUME_FULL, VOLUME_POINTS),
        open_interest=_log_points(chain.open_interest, OI_FULL, OI_POINTS),
        delta=_delta_points(chain.delta),
        affordability=_affordability_points(chain.ask_ticks, budget_usd),
    )


def spread_points(bid: Decimal, ask: Decimal) -> float:
    """30 points at a ≤ 2 % spread (of mid), 0 at ≥ 25 %; bid and ask in dollars per share."""
    return float(_spread_points(np.array([price_ticks(bid)]), np.array([price_ticks(ask)]))[0])


def delta_points(delta: float | None) -> float:
    """20 points for |Δ| in 0.30–0.60, falling to 0 at 0.25 outside the band; unknown Δ scores 0."""
    return float(_delta_points(np.array([np.nan if delta is None else delta]))[0])


def affordability_points(ask: Decimal, budget_usd: Decimal) -> float:
    """10 points when one contract (``ask`` dollars per share × 100) costs no more than
    ``budget_usd``; else scaled by budget/cost."""
    return float(_affordability_points(np.array([price_ticks(ask)]), budget_usd)[0])


def quality_score(quote: OptionQuote, budget_usd: Decimal) -> QualityScore:
    """Score one contract for an account whose per-trade budget is ``budget_usd`` dollars."""
    return score_chain(OptionChain.of([quote]), budget_usd).score(0)


@dataclass(frozen=True, slots=True)
class ScoredContract:
    quote: OptionQuote
    score: QualityScore
    dte: int


class RankedContracts(Sequence[ScoredContract]):
    """Contracts of a chain that an account may buy, best first (see :func:`candidate_contracts`);
    each :class:`ScoredContract` is built when it is read."""

    def __init__(self, chain: OptionChain, scores: ChainScores, order: np.ndarray, totals: np.ndarray,
                 dte: np.ndarray) -> None:
        self._chain, self._scores, self._order, self._totals, self._dte = chain, scores, order, totals, dte

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, k):  # type: ignore[no-untyped-def]  # int -> ScoredContract, slice -> list
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        i = int(self._order[k])
        return ScoredContract(self._chain[i], self._scores.score(i, float(self._totals[k])), int(self._dte[i]))

    def __iter__(self) -> Iterator[ScoredContract]:
        return (self[k] for k in range(len(self)))

    def ask_ticks(self) -> np.ndarray:
        """Each contract's ask in ticks of :data:`~ops_pipeline.domain.market.PRICE_TICKS_PER_USD`,
        in rank order (int64, parallel to this sequence)."""
        return self._chain.ask_ticks[self._order]

    def count_at_least(self, score: float) -> int:
        """How many contracts, from the best, have a (rounded) total of at least ``score`` points."""
        return int(np.count_nonzero(self._totals >= score))  # totals descend


def candidate_contracts(
    quotes: Sequence[OptionQuote],
    *,
    action: Action,
    strategy: StrategyType,
    today: dt.date,
    budget_usd: Decimal,
    min_quality_score: float,
) -> RankedContracts:
    """Contracts an account may buy for this recommendation, best first.

    ``quotes``: an :class:`~ops_pipeline.domain.market.OptionChain` or any sequence of quotes.
    Keeps calls for BUY_CALL and puts for BUY_PUT, expirations inside the strategy's DTE window,
    a positive bid and an ask at or above the bid, and a score ≥ ``min_quality_score``. Order:
    score descending, then |Δ| nearest 0.45, then OCC symbol (deterministic).
    """
    chain = OptionChain.of(quotes)
    low, high = DTE_WINDOWS[strategy]
    dte = (chain.expiration - np.datetime64(today, "D")).astype(np.int64)
    wanted = chain.is_call == (option_type_for(action) is OptionType.CALL)
    eligible = wanted & (chain.bid_ticks > 0) & (chain.ask_ticks >= chain.bid_ticks) & (dte >= low) & (dte <= high)
    scores = score_chain(chain, budget_usd)
    index = np.flatnonzero(eligible)
    totals = round_cents(scores.total[index])
    keep = totals >= min_quality_score
    index, totals = index[keep], totals[keep]
    delta_gap = np.abs(np.abs(np.nan_to_num(chain.delta[index], nan=0.0)) - DELTA_TARGET)
    by_rank = np.lexsort((delta_gap, -totals))
    order, totals, delta_gap = index[by_rank], totals[by_rank], delta_gap[by_rank]
    order = _ties_by_symbol(chain, order, totals, delta_gap)
    return RankedContracts(chain, scores, order, totals, dte)


def _ties_by_symbol(chain: OptionChain, order: np.ndarray, totals: np.ndarray, delta_gap: np.ndarray) -> np.ndarray:
    """``order`` with each run of equal (score, |Δ| gap) put in OCC symbol order."""
    if len(order) < 2:
        return order
    same = (totals[1:] == totals[:-1]) & (delta_gap[1:] == delta_gap[:-1])
    if not same.any():
        return order
    order = order.copy()
    k = 0
    while k < len(same):
        if not same[k]:
            k += 1
            continue
        end = k
        while end < len(same) and same[end]:
            end += 1
        run = order[k:end + 1]
        order[k:end + 1] = sorted(run.tolist(), key=lambda i: str(chain[i].symbol))
        k = end + 1
    return order
