"""Black-Scholes (European, no dividends) for modelled quotes, deltas and implied volatility.

Inputs are numpy arrays or floats: spot and strike in dollars, ``years`` to expiry (calendar
days / 365), ``rate`` and ``sigma`` as annual fractions (0.04 = 4 %). Uses scipy's normal CDF.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

RISK_FREE_RATE = 0.04
"""Annual risk-free rate used for every model price (a documented constant, not market data)."""
MIN_YEARS = 1.0 / (365 * 24 * 60)
"""One minute: the floor on time to expiry so that 0-DTE prices stay finite at the close."""
IV_BOUNDS = (0.01, 5.0)


def _d1_d2(spot: NDArray, strike: NDArray, years: NDArray, rate: float, sigma: NDArray) -> tuple[NDArray, NDArray]:
    years = np.maximum(years, MIN_YEARS)
    vol_t = sigma * np.sqrt(years)
    d1 = (np.log(spot / strike) + (rate + 0.5 * sigma**2) * years) / vol_t
    return d1, d1 - vol_t


def _price(s: NDArray, k: NDArray, t: NDArray, call: NDArray, d1: NDArray, d2: NDArray, rate: float) -> NDArray:
    disc = k * np.exp(-rate * np.maximum(t, MIN_YEARS))
    call_px = s * ndtr(d1) - disc * ndtr(d2)
    put_px = disc * ndtr(-d2) - s * ndtr(-d1)
    return np.where(call, call_px, put_px)


def _delta(call: NDArray, d1: NDArray) -> NDArray:
    n = ndtr(d1)
    return np.where(call, n, n - 1.0)


def bs_price(spot: ArrayLike, strike: ArrayLike, years: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
             rate: float = RISK_FREE_RATE) -> NDArray:
    """Option price per share, dollars."""
    s, k, t, v = (np.asarray(x, dtype=float) for x in (spot, strike, years, sigma))
    d1, d2 = _d1_d2(s, k, t, rate, v)
    return _price(s, k, t, np.asarray(is_call, dtype=bool), d1, d2, rate)


def bs_delta(spot: ArrayLike, strike: ArrayLike, years: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
             rate: float = RISK_FREE_RATE) -> NDArray:
    """Delta: 0..1 for calls, -1..0 for puts."""
    s, k, t, v = (np.asarray(x, dtype=float) for x in (spot, strike, years, sigma))
    d1, _ = _d1_d2(s, k, t, rate, v)
    return _delta(np.asarray(is_call, dtype=bool), d1)


def bs_price_delta(spot: ArrayLike, strike: ArrayLike, years: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
                   rate: float = RISK_FREE_RATE) -> tuple[NDArray, NDArray]:
    """:func:`bs_price` and :func:`bs_delta` of the same contracts, d1 and d2 computed once (the
    values are those of the two calls, bit for bit)."""
    s, k, t, v = (np.asarray(x, dtype=float) for x in (spot, strike, years, sigma))
    call = np.asarray(is_call, dtype=bool)
    d1, d2 = _d1_d2(s, k, t, rate, v)
    return _price(s, k, t, call, d1, d2, rate), _delta(call, d1)


def implied_vol(price: ArrayLike, spot: ArrayLike, strike: ArrayLike, years: ArrayLike, is_call: ArrayLike,
                rate: float = RISK_FREE_RATE, iterations: int = 40) -> NDArray:
    """Implied volatility by bisection on :data:`IV_BOUNDS`; NaN where no volatility fits the price
    (below intrinsic value, or above the price at the upper bound)."""
    p, s, k, t = (np.asarray(x, dtype=float) for x in (price, spot, strike, years))
    call = np.asarray(is_call, dtype=bool)
    low = np.full(np.broadcast(p, s, k, t).shape, IV_BOUNDS[0])
    high = np.full_like(low, IV_BOUNDS[1])
    p_low = bs_price(s, k, t, low, call, rate)
    p_high = bs_price(s, k, t, high, call, rate)
    valid = (p >= p_low) & (p <= p_high) & np.isfinite(p) & (p > 0)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        above = bs_price(s, k, t, mid, call, rate) > p
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    return np.where(valid, 0.5 * (low + high), np.nan)


def bs_greeks(spot: float, strike: float, years: float, sigma: float, is_call: bool,
              rate: float = RISK_FREE_RATE) -> dict[str, float]:
    """Delta, gamma, theta (per calendar day), vega and rho (per 1 point = 0.01) of one contract."""
    years = max(years, MIN_YEARS)
    d1, d2 = _d1_d2(np.float64(spot), np.float64(strike), np.float64(years), rate, np.float64(sigma))
    pdf = float(np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi))
    disc = strike * np.exp(-rate * years)
    if is_call:
        delta, theta = float(ndtr(d1)), -spot * pdf * sigma / (2 * np.sqrt(years)) - rate * disc * float(ndtr(d2))
        rho = disc * years * float(ndtr(d2))
    else:
        delta, theta = float(ndtr(d1)) - 1, -spot * pdf * sigma / (2 * np.sqrt(years)) + rate * disc * float(ndtr(-d2))
        rho = -disc * years * float(ndtr(-d2))
    return {"delta": delta, "gamma": pdf / (spot * sigma * np.sqrt(years)), "theta": float(theta) / 365,
            "vega": spot * pdf * np.sqrt(years) / 100, "rho": float(rho) / 100}
