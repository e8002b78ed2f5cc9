"""Contract quality score and selection; exit rules; the entry decision."""

import datetime as dt
from decimal import Decimal

import numpy as np

from ops_pipeline.domain.contracts import (
    affordability_points,
    candidate_contracts,
    delta_points,
    quality_score,
    round_cents,
    spread_points,
)
from ops_pipeline.domain.entry import Entry, decide_entry
from ops_pipeline.domain.exits import ExitReason, exit_reason, stop_and_target
from ops_pipeline.domain.gates import Denied, ReasonCode
from ops_pipeline.domain.market import QuoteSource
from ops_pipeline.domain.values import Action, StrategyType, Tier
from tests.factories import NOON, TODAY, quote, rec, risk, snapshot


def test_quality_score_parts():
    assert spread_points(Decimal("2.46"), Decimal("2.50")) == 30.0  # 1.6 % spread
    assert spread_points(Decimal("1.00"), Decimal("1.50")) == 0.0  # 40 %
    assert 0 < spread_points(Decimal("1.00"), Decimal("1.10")) < 30
    assert delta_points(0.45) == 20.0 and delta_points(-0.45) == 20.0
    assert delta_points(0.05) == 0.0 and 0 < delta_points(0.20) < 20
    assert affordability_points(Decimal("1.00"), Decimal("100")) == 10.0
    assert affordability_points(Decimal("2.00"), Decimal("100")) == 5.0


def test_quality_score_total_and_log_line():
    score = quality_score(quote(volume=1000, open_interest=5000), Decimal("1000"))
    assert score.total == 100.0
    assert score.describe().startswith("quality score: 100.0/100")
    modelled = quality_score(quote(volume=None, open_interest=None, source=QuoteSource.MODELLED), Decimal("1000"))
    assert modelled.volume == 10.0 and modelled.open_interest == 10.0  # unknown: half points


def test_candidates_keep_type_dte_window_bid_and_order_by_score():
    swing_call = quote("SPY260327C00660000")  # 11 DTE
    day_call = quote("SPY260317C00660000")  # 1 DTE
    put = quote("SPY260327P00660000", delta=-0.45)
    no_bid = quote("SPY260327C00661000", bid="0")
    wide = quote("SPY260327C00662000", bid="1.00", ask="1.40")
    found = candidate_contracts([swing_call, day_call, put, no_bid, wide], action=Action.BUY_CALL,
                                strategy=StrategyType.SWING_TRADE, today=TODAY, budget_usd=Decimal("1000"),
                                min_quality_score=0)
    assert [str(c.quote.symbol) for c in found] == ["SPY260327C00660000", "SPY260327C00662000"]
    assert found[0].score.total > found[1].score.total


def test_entry_buys_the_best_contract_the_account_can_afford():
    tiny = risk(Tier.TINY)
    pricey = quote("SPY260317C00660000", bid="2.95", ask="3.00")  # $300 > tiny budget
    cheap = quote("SPY260317C00665000", bid="0.98", ask="1.00", delta=0.32)
    account = snapshot(equity_usd=Decimal("1000"), buying_power_usd=Decimal("1000"))
    verdict = decide_entry(rec(strategy_type=StrategyType.DAY_TRADE), account, tiny, [pricey, cheap], now=NOON, today=TODAY)
    assert isinstance(verdict, Entry)
    assert str(verdict.contract.quote.symbol) == "SPY260317C00665000"
    assert verdict.sizing.contracts == 1  # 15 % of $1,000 = $150 → one $100 contract


def test_entry_denied_when_no_contract_reaches_the_quality_minimum():
    bad = quote(bid="1.00", ask="2.00", volume=0, open_interest=0, delta=0.05)
    verdict = decide_entry(rec(), snapshot(), risk(Tier.LARGE), [bad], now=NOON, today=TODAY)
    assert isinstance(verdict, Denied) and verdict.code is ReasonCode.NO_QUALITY_CONTRACT
    assert "min=40" in verdict.detail


def test_entry_reports_the_best_contracts_denial_when_none_fits():
    account = snapshot(open_exposure_usd=Decimal("9900"))
    verdict = decide_entry(rec(), account, risk(Tier.LARGE), [quote()], now=NOON, today=TODAY)
    assert isinstance(verdict, Denied) and verdict.code is ReasonCode.EXPOSURE_LIMIT


def test_seed_004_stop_and_target():
    assert stop_and_target(Decimal("4.80"), 0.25, 0.50) == (Decimal("3.60"), Decimal("7.20"))
    assert stop_and_target(Decimal("5.20"), 0.25, 0.50) == (Decimal("3.90"), Decimal("7.80"))


def exit_for(**overrides):
    values = dict(strategy=StrategyType.SWING_TRADE, bid_usd=Decimal("4.00"), stop_usd=Decimal("3.60"),
                  target_usd=Decimal("7.20"), minutes_to_close=120.0, today=TODAY, expiration=TODAY + dt.timedelta(days=10))
    values.update(overrides)
    return exit_reason(**values)


def test_exit_rules():
    assert exit_for() is None
    assert exit_for(bid_usd=Decimal("3.60")) is ExitReason.STOP_LOSS
    assert exit_for(bid_usd=Decimal("7.20")) is ExitReason.TAKE_PROFIT
    assert exit_for(bid_usd=Decimal("0")) is None  # no bid: no price exit
    assert exit_for(strategy=StrategyType.DAY_TRADE, minutes_to_close=15) is ExitReason.END_OF_DAY
    assert exit_for(strategy=StrategyType.DAY_TRADE, minutes_to_close=16) is None
    assert exit_for(minutes_to_close=15) is None  # swing, not expiring today
    assert exit_for(minutes_to_close=15, expiration=TODAY) is ExitReason.BEFORE_EXPIRY


def test_seed_003_examples_reproduced_by_configuring_the_older_percentages():
    day_contract = quote("SPY260317C00660000", bid="2.48", ask="2.50")
    day_trade = rec(strategy_type=StrategyType.DAY_TRADE)
    tiny_25 = risk(Tier.TINY, risk_pct_day=0.25, max_contracts_per_trade=2)
    tiny = decide_entry(day_trade, snapshot(equity_usd=Decimal("1000"), buying_power_usd=Decimal("1000")), tiny_25,
                        [day_contract], now=NOON, today=TODAY)
    assert isinstance(tiny, Entry) and tiny.sizing.contracts == 1  # $250 of $1,000
    large_1 = risk(Tier.LARGE, risk_pct_day=0.01)
    large = decide_entry(day_trade, snapshot(), large_1, [day_contract], now=NOON, today=TODAY)
    assert isinstance(large, Entry) and large.sizing.contracts == 4  # $1,000 of $100,000


def test_candidates_equal_in_score_and_delta_are_ordered_by_symbol_whatever_the_chain_order():
    later, earlier = quote("SPY260327C00662000", delta=0.40), quote("SPY260327C00661000", delta=0.50)  # |Δ| gap 0.05 both
    best = quote("SPY260327C00663000", bid="2.49", ask="2.50", delta=0.45)
    found = candidate_contracts([later, best, earlier], action=Action.BUY_CALL, strategy=StrategyType.SWING_TRADE,
                                today=TODAY, budget_usd=Decimal("1000"), min_quality_score=0)
    assert found[0].score.total == found[1].score.total == found[2].score.total  # full marks on every part
    assert [str(c.quote.symbol) for c in found] == ["SPY260327C00663000", "SPY260327C00661000", "SPY260327C00662000"]
    assert found[-1].quote is later and len(found[1:]) == 2


def _first_passing_contract(rec_, account, cfg, quotes):
    """The entry rule read from SPEC, without shortcuts: every contract reaching the quality
    minimum, best first, through exposure, buying power and sizing; else the best one's denial."""
    from ops_pipeline.domain.gates import buying_power_gate, exposure_gate
    from ops_pipeline.domain.sizing import size_gate, size_position

    ranked = candidate_contracts(quotes, action=rec_.action, strategy=rec_.strategy_type, today=TODAY,
                                 budget_usd=account.equity_usd * Decimal(str(cfg.risk_pct(rec_.strategy_type))),
                                 min_quality_score=cfg.min_quality_score)
    first = None
    for contract in ranked:
        cost = contract.quote.ask * 100
        denial = exposure_gate(account.open_exposure_usd, cost, cfg) or buying_power_gate(account.buying_power_usd, cost, cfg)
        if denial is None:
            sizing = size_position(
                premium_usd=contract.quote.ask, equity_usd=account.equity_usd, buying_power_usd=account.buying_power_usd,
                open_exposure_usd=account.open_exposure_usd, risk_pct=cfg.risk_pct(rec_.strategy_type),
                max_risk_per_trade_pct=cfg.max_risk_per_trade_pct, stop_loss_pct=cfg.stop_loss_pct,
                max_notional_exposure_usd=cfg.max_notional_exposure, contract_cap=cfg.contract_cap,
                ignore_buying_power=cfg.paper_ignore_buying_power)
            denial = size_gate(sizing)
            if denial is None:
                return str(contract.quote.symbol), sizing.contracts
        first = first or denial
    return (first.code, first.detail) if first else None


def test_entry_takes_the_first_good_contract_that_passes_every_gate():
    """decide_entry skips contracts dearer than one already denied; the verdict must be the one a
    plain walk down the ranking gives, for accounts that can afford anything, something or nothing."""
    import numpy as np

    rng = np.random.default_rng(7)
    strikes = range(640, 700)
    checked = {"entry": 0}
    for trial in range(80):
        quotes = []
        for strike in strikes:
            for day in ("260320", "260327", "260402"):
                mid = max(0.05, float(rng.lognormal(0.5, 1.0)))
                half = mid * float(rng.uniform(0.005, 0.2))
                quotes.append(quote(f"SPY{day}C00{strike}000", bid=f"{max(mid - half, 0.01):.2f}",
                                    ask=f"{mid + half:.2f}", volume=int(rng.integers(0, 3000)),
                                    open_interest=int(rng.integers(0, 8000)), delta=float(rng.uniform(0.05, 0.9))))
        tier = [Tier.TINY, Tier.SMALL, Tier.MEDIUM, Tier.LARGE][trial % 4]
        cfg = risk(tier)
        equity = Decimal(int(np.exp(rng.uniform(np.log(300), np.log(120_000)))))
        cash, room = (float(rng.uniform(0, 1)) ** 4 if rng.random() < 0.5 else 1.0 for _ in range(2))  # often tight
        account = snapshot(equity_usd=equity, buying_power_usd=(equity * Decimal(str(cash))).quantize(Decimal("0.01")),
                           open_exposure_usd=Decimal(str(round(cfg.max_notional_exposure * (1 - room), 2))))
        recommendation = rec(strategy_type=StrategyType.SWING_TRADE)
        verdict = decide_entry(recommendation, account, cfg, quotes, now=NOON, today=TODAY)
        expected = _first_passing_contract(recommendation, account, cfg, quotes)
        if isinstance(verdict, Entry):
            checked["entry"] += 1
            assert (str(verdict.contract.quote.symbol), verdict.sizing.contracts) == expected
        else:
            checked[verdict.code] = checked.get(verdict.code, 0) + 1
            assert (verdict.code, verdict.detail) == expected
    # Each way the walk can end is met: a trade, and the best contract's denial of every kind.
    assert {"entry", ReasonCode.EXPOSURE_LIMIT, ReasonCode.INSUFFICIENT_BUYING_POWER,
            ReasonCode.SIZE_BELOW_ONE_CONTRACT} <= set(checked) and checked["entry"] >= 10, checked


def test_scores_rounded_to_cents_as_python_rounds_each_one():
    """Ranking reads each contract's total rounded as ``round(total, 2)``; the array form must give
    the same doubles, ties and the values either side of them included."""
    rng = np.random.default_rng(7)
    k = rng.integers(0, 10_000, 20_000)
    ties = (k + 0.5) / 100
    values = np.concatenate([rng.uniform(0, 100, 50_000), rng.uniform(-1e6, 1e6, 5_000), ties,
                             np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf), k / 100,
                             [0.0, -0.0, 0.005, 2.675, 1.005, -0.004999999, 1e16, np.inf, -np.inf, np.nan]])
    got = round_cents(values)
    want = np.array([round(v, 2) for v in values.tolist()])
    assert np.array_equal(got, want, equal_nan=True) and np.array_equal(np.signbit(got), np.signbit(want))
