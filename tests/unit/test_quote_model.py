"""The quote model's rules on values we construct: quote lags, parity, smiles, spreads."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ops_pipeline.adapters.market_data.calendar import from_exchange
from ops_pipeline.adapters.market_data.chains import LagSource, choose_lags, parity_spot
from ops_pipeline.adapters.market_data.quotes import (
    _Expiry,
    _neighbour_spread,
    _row_median,
    _smile_iv,
    quote_prices,
    rule_spread,
)
from ops_pipeline.domain.pricing import MIN_YEARS, bs_price


def test_a_clear_match_sets_the_lag_and_a_flat_market_takes_the_days_lag():
    lags = np.arange(91, dtype=float)
    clear = np.abs(lags - 12) + 0.0  # best at 12 minutes, nothing else near it
    flat = np.full(91, 3.0)
    flat[25:40] = 0.2  # 25..39 fit equally well
    day = np.abs(lags - 30) * 0.5  # the day's typical snapshot: best at 30
    chosen = choose_lags([clear, flat, day, day, None], [0.0, 0.0, 0.0, 0.0, 0.0])
    assert [c[0] for c in chosen] == [12, 30, 30, 30, 30]
    assert [c[1] for c in chosen] == [LagSource.PARITY] * 4 + [LagSource.DAY]
    assert choose_lags([None], [0.0]) == [(0, LagSource.NONE, None)]


def test_a_snapshots_own_noise_widens_the_lags_that_fit():
    curve = np.abs(np.arange(91) - 10) * 0.1  # 10 best; 30 is 2 bp worse
    median_day = [curve, np.abs(np.arange(91) - 30.0), np.abs(np.arange(91) - 30.0)]
    assert choose_lags(median_day, [0.0, 0.0, 0.0])[0][0] == 15  # 5..15 within 0.5 bp: the one nearest 30
    assert choose_lags(median_day, [4.0, 0.0, 0.0])[0][0] == 30


def test_parity_gives_back_the_underlying_the_quotes_were_priced_at():
    at = from_exchange(dt.datetime(2026, 3, 16, 12))
    spot, years = 671.37, (from_exchange(dt.datetime(2026, 3, 18, 16)) - at).total_seconds() / (365 * 86400)
    strikes = np.arange(666.0, 677.0)
    rows = []
    for call in (True, False):
        price = bs_price(spot, strikes, years, 0.2, call)
        rows += [{"type": "call" if call else "put", "strike": k, "expiration": pd.Timestamp("2026-03-18"),
                  "bid": p - 0.01, "ask": p + 0.01, "spot_price": 675.0} for k, p in zip(strikes, price, strict=True)]
    found, stderr = parity_spot(pd.DataFrame(rows), at)
    assert found == pytest.approx(spot, abs=1e-6) and stderr < 0.01
    assert parity_spot(pd.DataFrame(rows[:2] + rows[11:13]), at) is None  # two pairs are too few


def _expiry(years, ivs):
    x = np.array([-0.5, 0.0, 0.5])
    return _Expiry(years, x, np.array(ivs), {True: x, False: x}, {True: np.full(3, 0.01), False: np.full(3, 0.01)})


def test_the_smile_interpolates_total_variance_between_expirations_and_is_flat_beyond():
    near, far = _expiry(10 / 365, [0.30, 0.20, 0.25]), _expiry(30 / 365, [0.40, 0.30, 0.35])
    x = np.array([0.0, 0.0, 0.0, -0.5, 2.0])
    years = np.array([20 / 365, 5 / 365, 60 / 365, 10 / 365, 30 / 365])
    iv = _smile_iv([near, far], x, years)
    expected_mid = np.sqrt((0.2**2 * 10 + 0.5 * (0.3**2 * 30 - 0.2**2 * 10)) / 20)
    assert iv == pytest.approx([expected_mid, 0.20, 0.30, 0.30, 0.35])


def test_the_smile_reads_each_contract_off_its_two_expirations_only():
    """Interpolating only the smiles some contract needs gives, bit for bit, what interpolating
    every expiration's smile and picking the two around each contract gives."""
    rng = np.random.default_rng(3)
    expiries = [_Expiry(float(t), np.sort(rng.uniform(-2, 2, 9)), rng.uniform(0.1, 0.9, 9), {}, {})
                for t in np.sort(rng.uniform(1 / 365, 1.0, 7))]
    x, years = rng.uniform(-3, 3, 400), rng.uniform(0, 1.2, 400)
    listed = np.array([e.years for e in expiries])
    every = np.vstack([np.interp(x, e.smile_x, e.smile_iv) for e in expiries])
    upper = np.clip(np.searchsorted(listed, years), 1, len(listed) - 1)
    lower, each = upper - 1, np.arange(len(x))
    t1, t2, v1, v2 = listed[lower], listed[upper], every[lower, each], every[upper, each]
    t = np.clip(years, t1, t2)
    inside = np.sqrt(np.maximum(v1**2 * t1 + (t - t1) / (t2 - t1) * (v2**2 * t2 - v1**2 * t1), 0) / np.maximum(t, MIN_YEARS))
    expected = np.where(years <= t1, v1, np.where(years >= t2, v2, inside))
    assert _smile_iv(expiries, x, years).tolist() == expected.tolist()
    assert [_smile_iv(expiries, x[i:i + 1], years[i:i + 1])[0] for i in range(20)] == expected[:20].tolist()


def test_the_spread_is_the_median_of_the_nearest_listed_contracts():
    listed_x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    listed_rel = np.array([0.50, 0.02, 0.01, 0.03, 0.04, 0.90])
    assert _neighbour_spread(listed_x, listed_rel, np.array([0.1, 2.0])) == pytest.approx([0.025, 0.035])
    assert np.isnan(_neighbour_spread(np.array([]), np.array([]), np.array([0.0]))).all()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_the_row_median_is_numpys_median_bit_for_bit(k):
    rng = np.random.default_rng(k)
    values = rng.lognormal(-3, 1, (500, k))
    values[rng.random((500, k)) < 0.01] = np.nan
    values[:50] = np.round(values[:50], 2)  # ties
    assert _row_median(values).tobytes() == np.median(values, axis=1).tobytes()


def test_modelled_prices_are_cents_at_least_a_cent_apart_and_no_bid_under_a_cent():
    bid, ask = quote_prices(np.array([5.004, 0.004, 2.0]), np.array([0.05, 0.002, 0.0]))
    assert bid.tolist() == [4.98, 0.0, 1.99] or bid.tolist() == [4.98, 0.0, 2.0]
    assert ask.tolist()[1] == 0.01 and all(a - b >= 0.01 - 1e-9 for a, b in zip(ask, bid, strict=True))


def test_the_rule_spread_is_wider_for_same_day_and_far_from_the_money_contracts():
    assert rule_spread(np.array([0.5]), np.array([0.05]))[0] > rule_spread(np.array([14]), np.array([0.45]))[0]
    assert rule_spread(np.array([14]), np.array([-0.45]))[0] == rule_spread(np.array([14]), np.array([0.45]))[0]
