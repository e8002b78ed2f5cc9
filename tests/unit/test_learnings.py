"""The learnings' formulas on small series whose answers follow from the definitions."""

import math

import pandas as pd
import pytest

from ops_pipeline.reports.learnings import MIN_DAYS_FOR_DOUBLING, quality_buckets, quality_correlation, time_to_double, trade_metrics


def test_trade_metrics_follow_their_definitions():
    pnl = pd.Series([120.0, -40.0, 60.0, -80.0, 0.0])
    m = trade_metrics(pnl)
    wins, losses = [120.0, 60.0], [-40.0, -80.0, 0.0]  # a flat trade is not a win
    assert m["closed_trades"] == 5
    assert m["win_rate_pct"] == pytest.approx(100 * len(wins) / 5)
    assert m["avg_win"] == pytest.approx(sum(wins) / len(wins)) and m["avg_loss"] == pytest.approx(sum(losses) / len(losses))
    assert m["profit_factor"] == pytest.approx(round(sum(wins) / -sum(losses), 2))
    assert m["expectancy"] == pytest.approx(pnl.mean())
    assert trade_metrics(pd.Series([50.0]))["profit_factor"] is None  # no losses: undefined, not infinite


def test_time_to_double_needs_enough_days_and_gives_the_range_of_the_mean():
    short = time_to_double(pd.Series([0.01] * (MIN_DAYS_FOR_DOUBLING - 1)))
    assert short["days"] is None and short["text"].startswith("not enough data")
    steady = pd.Series([0.01, 0.012, 0.008] * 10)
    result = time_to_double(steady)
    growth = math.prod(1 + r for r in steady) ** (1 / len(steady)) - 1
    assert result["days"] == round(math.log(2) / math.log1p(growth))
    assert result["low"] < result["days"] < result["high"]
    assert time_to_double(pd.Series([-0.01, 0.005] * 15))["days"] is None  # shrinking: never


def test_quality_buckets_and_rank_correlation():
    outcomes = pd.DataFrame({"quality_score": [45.0, 55.0, 65.0, 75.0, 85.0, 95.0, 100.0],
                             "pnl_pct": [-30.0, -10.0, 5.0, 10.0, 20.0, 40.0, 50.0],
                             "realized_pnl": [-30.0, -10.0, 5.0, 10.0, 20.0, 40.0, 50.0]})
    corr = quality_correlation(outcomes)
    assert corr["rho"] == pytest.approx(1.0) and corr["p_value"] < 0.01 and corr["n"] == 7
    buckets = quality_buckets(outcomes)
    assert [b["bucket"] for b in buckets] == ["0-50", "50-60", "60-70", "70-80", "80-90", "90-100"]
    assert buckets[-1]["trades"] == 2  # a perfect 100 is in the top bucket
    assert sum(b["trades"] for b in buckets) == len(outcomes)
    assert quality_correlation(outcomes.assign(quality_score=80.0))["rho"] is None  # constant score: undefined
