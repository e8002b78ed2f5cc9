"""OCC symbols and Black-Scholes."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from ops_pipeline.domain.pricing import bs_delta, bs_price, implied_vol
from ops_pipeline.domain.values import OccSymbol, OptionType


def test_occ_symbol_round_trip():
    symbol = OccSymbol.parse("SPY260320C00660000")
    assert symbol == OccSymbol("SPY", dt.date(2026, 3, 20), OptionType.CALL, Decimal("660"))
    assert str(symbol) == "SPY260320C00660000"
    assert str(OccSymbol.parse("SOXL260320P00012500")) == "SOXL260320P00012500"
    assert OccSymbol.parse("SOXL260320P00012500").strike == Decimal("12.5")
    assert OccSymbol.parse("SPY260316C00540000").strike_text == "540"  # never "5.4E+2"


def test_occ_symbol_rejects_garbage():
    with pytest.raises(ValueError, match="not an OCC option symbol"):
        OccSymbol.parse("SPY 660 C")


def test_black_scholes_textbook_value_and_parity():
    # Hull: S=42, K=40, r=10 %, σ=20 %, T=0.5 → call 4.76, put 0.81
    call = float(bs_price(42, 40, 0.5, 0.2, True, rate=0.10))
    put = float(bs_price(42, 40, 0.5, 0.2, False, rate=0.10))
    assert call == pytest.approx(4.76, abs=0.01) and put == pytest.approx(0.81, abs=0.01)
    assert call - put == pytest.approx(42 - 40 * np.exp(-0.05), abs=1e-9)
    assert float(bs_delta(42, 40, 0.5, 0.2, True, rate=0.10)) == pytest.approx(0.779, abs=0.001)


def test_implied_vol_inverts_the_price_and_flags_impossible_prices():
    prices = bs_price(660, [640, 660, 680], 10 / 365, 0.22, [True, False, True])
    assert implied_vol(prices, 660, [640, 660, 680], 10 / 365, [True, False, True]) == pytest.approx([0.22] * 3, abs=1e-6)
    below_intrinsic = implied_vol(10.0, 660, 640, 10 / 365, True)
    assert np.isnan(below_intrinsic)
