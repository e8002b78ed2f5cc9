"""Contract scoring a chain at a time (issue 11) gives, contract by contract, what the SPEC table
gives one contract at a time: every score part, the total, the eligibility and the order, on the
real chains of ``../shared/data/option_chains`` and on the modelled chains of tickers and times
without one."""

import datetime as dt
import math
from decimal import Decimal

import numpy as np
import pytest

from ops_pipeline.adapters.market_data.calendar import TradingCalendar, from_exchange
from ops_pipeline.bootstrap import load_market
from ops_pipeline.domain.contracts import DTE_WINDOWS, QualityScore, candidate_contracts
from ops_pipeline.domain.market import OptionChain, OptionQuote
from ops_pipeline.domain.values import Action, OptionType, StrategyType

pytestmark = pytest.mark.data


def _reference_score(quote: OptionQuote, budget_usd: Decimal) -> QualityScore:
    """The SPEC "Contract selection" table for one contract, in plain Python floats and Decimals
    (the formula as it was written before chains were scored in columns)."""
    mid = float(quote.bid + quote.ask) / 2
    pct = float(quote.ask - quote.bid) / mid if mid > 0 else None
    spread = 0.0 if pct is None else 30.0 if pct <= 0.02 else 0.0 if pct >= 0.25 else 30.0 * (0.25 - pct) / (0.25 - 0.02)

    def log_points(value: int | None, full_at: int, points: float) -> float:
        return points / 2 if value is None else points * min(1.0, math.log10(1 + max(0, value)) / math.log10(1 + full_at))

    if quote.delta is None:
        delta = 0.0
    else:
        d = abs(quote.delta)
        delta = 20.0 * max(0.0, 1 - max(0.30 - d, d - 0.60, 0.0) / 0.25)
    cost = quote.ask * 100
    afford = 0.0 if cost <= 0 else 10.0 * min(1.0, float(budget_usd / cost))
    parts = (spread, log_points(quote.volume, 1_000, 20.0), log_points(quote.open_interest, 5_000, 20.0), delta, afford)
    return QualityScore(round(sum(parts), 2), *(round(p, 2) for p in parts))


def _reference_candidates(quotes, action, strategy, today, budget_usd):
    wanted = OptionType.CALL if action is Action.BUY_CALL else OptionType.PUT
    low, high = DTE_WINDOWS[strategy]
    found = []
    for q in quotes:
        dte = (q.symbol.expiration - today).days
        if q.symbol.option_type is wanted and q.bid > 0 and q.ask >= q.bid and low <= dte <= high:
            found.append((q, _reference_score(q, budget_usd), dte))
    found.sort(key=lambda f: (-f[1].total, abs(abs(f[0].delta or 0) - 0.45), str(f[0].symbol)))
    return found


@pytest.fixture(scope="module")
def market(data_dir):
    """1-minute bars of SPY and QQQ (with chains in March), NVDA and COIN (none), October to March."""
    found, _ = load_market(data_dir, 1, ["SPY", "QQQ", "NVDA", "COIN"], dt.date(2025, 10, 1), dt.date(2026, 3, 19),
                           TradingCalendar(), dt.timedelta(minutes=30))
    return found


CASES = [
    # (ticker, exchange time): real snapshots of March, modelled chains before them and for a ticker with none
    ("SPY", dt.datetime(2026, 3, 16, 12, 30)), ("QQQ", dt.datetime(2026, 3, 17, 14, 5)),
    ("SPY", dt.datetime(2026, 3, 16, 9, 45)), ("QQQ", dt.datetime(2026, 3, 18, 15, 50)),
    ("COIN", dt.datetime(2026, 3, 17, 11, 0)), ("SPY", dt.datetime(2026, 3, 13, 10, 31)),
    ("NVDA", dt.datetime(2026, 3, 12, 13, 0)), ("NVDA", dt.datetime(2025, 10, 7, 10, 15)),
    ("QQQ", dt.datetime(2025, 11, 20, 15, 46)), ("SPY", dt.datetime(2026, 3, 19, 15, 59)),
]
BUDGETS = [Decimal("50.0000"), Decimal("150.00"), Decimal("833.3333"), Decimal("15000.00")]


@pytest.mark.parametrize(("ticker", "local"), CASES)
def test_a_chain_is_scored_and_ranked_exactly_as_one_contract_at_a_time(market, ticker, local):
    now = from_exchange(local)
    today = local.date()
    compared = 0
    for action in (Action.BUY_CALL, Action.BUY_PUT):
        kind = OptionType.CALL if action is Action.BUY_CALL else OptionType.PUT
        for strategy, (low, high) in DTE_WINDOWS.items():
            chain = market.option_chain(ticker, now, option_type=kind, min_dte=low, max_dte=high)
            quotes = list(chain)
            for budget in BUDGETS:
                expected = _reference_candidates(quotes, action, strategy, today, budget)
                for given in (chain, quotes):  # the market's own chain, and a plain list of its quotes
                    ranked = candidate_contracts(given, action=action, strategy=strategy, today=today,
                                                 budget_usd=budget, min_quality_score=0.0)
                    assert len(ranked) == len(expected)
                    got = [(c.quote, c.score, c.dte) for c in ranked]
                    assert got == expected
                compared += len(expected)
    assert compared > 100


def test_a_modelled_chain_reads_as_the_quotes_modelled_one_by_one(market):
    """Built from its columns, each quote equals the one the batch model gives the same contracts,
    and its columns are those of its own quotes."""
    now = from_exchange(dt.datetime(2026, 3, 13, 11, 7))
    chain = market.option_chain("SPY", now, option_type=OptionType.PUT, min_dte=7, max_dte=30)
    assert isinstance(chain, OptionChain) and len(chain) > 1000
    quotes = list(chain)
    spot = float(market.underlying_price("SPY", now))
    assert quotes == market._quotes([q.symbol for q in quotes], spot, now)
    again = OptionChain.of(quotes)
    for column in ("bid_ticks", "ask_ticks", "expiration", "is_call"):
        assert np.array_equal(getattr(chain, column), getattr(again, column)), column
    assert np.array_equal(chain.delta, again.delta)
    assert np.isnan(chain.volume).all() and np.isnan(again.volume).all()
    assert chain[-1] is chain[len(chain) - 1] and chain[:2] == quotes[:2]
    with pytest.raises(IndexError):
        chain[len(chain)]
