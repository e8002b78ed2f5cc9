"""Score the option-quote model against the real chains, the way a replay uses it (issue 9).

For every real snapshot (the *target*, at its quote time *q*), each listed contract with a bid is
modelled by :meth:`HistoricalMarketData.model` from the chains quoted at or before ``q - horizon``
only (no later chain), against the underlying price at *q* (the 1-minute close where bars exist,
else the snapshot's own parity price), and compared with its real bid, ask and mid.

Figures, per DTE bucket and |delta| band (the real quote's delta):

- mid error: ``|model mid - real mid| / real mid``, median and 90th percentile, percent;
- bias: the median signed mid error, percent (positive: the model is dearer);
- inside: the share of real mids within the modelled bid–ask, percent;
- spread: the mean real and modelled ask − bid, and their difference, dollars per contract (100
  shares) — what the spread alone adds to or takes from a round trip;
- round trip: buy at the ask in the target snapshot, sell at the bid in the ticker's last snapshot
  of the same day (at least an hour later); the modelled P&L minus the real one, dollars per
  contract, median absolute and mean.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ops_pipeline.adapters.market_data.bars import BarSeries, bar_files, load_bars
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date
from ops_pipeline.adapters.market_data.chains import ChainSnapshot, ChainStore, SnapshotTiming, read_chain
from ops_pipeline.adapters.market_data.quotes import (
    DELTA_BANDS,
    DTE_BUCKETS,
    HistoricalMarketData,
    delta_band,
    dte_bucket,
)
from ops_pipeline.domain.pricing import bs_delta
from ops_pipeline.errors import DataError

SHARES_PER_CONTRACT = 100
ROUND_TRIP_MIN_HOLD = dt.timedelta(hours=1)
TARGET_DTE = "7-30"
TARGET_DELTA = "0.30-0.60"

ProgressFn = Callable[[int, int], None]


def _spot_at(market: HistoricalMarketData, snap: ChainSnapshot) -> tuple[float, str]:
    """The underlying price at the snapshot's quote time: the bar close if a bar of that session
    closed within 5 minutes before it, else the snapshot's parity price."""
    series = market.bars.get(snap.ticker)
    if series is not None:
        i = series.last_closed_index(snap.quote_time.timestamp())
        if i >= 0 and snap.quote_time.timestamp() - float(series.end[i]) <= 300:
            return float(series.close[i]), "bars"
    return snap.spot, "parity"


def observations(market: HistoricalMarketData, horizon: dt.timedelta, progress: ProgressFn | None = None) -> pd.DataFrame:
    """One row per (target snapshot, contract with a bid): real and modelled quotes, dollars per
    share, with ``dte``, ``dte_bucket``, ``delta_band``, ``vol_source``, ``rule_spread``, ``spot_source``."""
    snaps = [s for ticker in sorted(market.chains.tickers_loaded()) for s in market.chains.snapshots(ticker)]
    frames = []
    for done, snap in enumerate(snaps, 1):
        if progress:
            progress(done, len(snaps))
        years = snap.years
        keep = (snap.bid > 0) & (years > 0)
        if not keep.any():
            continue
        spot, spot_source = _spot_at(market, snap)
        idx = np.flatnonzero(keep)
        modelled = market.model(snap.ticker, snap.symbols[idx].tolist(), snap.strike[idx], snap.expiry_close[idx],
                                snap.is_call[idx], spot, snap.quote_time, known_at=snap.quote_time - horizon,
                                allow_later=False)
        if modelled is None:
            continue
        real_delta = bs_delta(snap.spot, snap.strike[idx], years[idx], snap.iv[idx], snap.is_call[idx])
        real_delta = np.where(np.isfinite(real_delta), real_delta, modelled.delta)
        frames.append(pd.DataFrame({
            "ticker": snap.ticker, "snapshot": snap.name, "quote_time": snap.quote_time, "day": exchange_date(snap.quote_time),
            "symbol": snap.symbols[idx], "dte": years[idx] * 365,
            "dte_bucket": np.array(DTE_BUCKETS)[dte_bucket(years[idx] * 365)],
            "delta_band": np.array(DELTA_BANDS)[delta_band(real_delta)],
            "real_bid": snap.bid[idx], "real_ask": snap.ask[idx],
            "model_bid": modelled.bid, "model_ask": modelled.ask, "model_price": modelled.price,
            "vol_source": modelled.vol_source, "rule_spread": modelled.rule_spread, "spot_source": spot_source,
        }))
    if not frames:
        return pd.DataFrame()
    obs = pd.concat(frames, ignore_index=True)
    obs["real_mid"] = (obs["real_bid"] + obs["real_ask"]) / 2
    obs["model_mid"] = (obs["model_bid"] + obs["model_ask"]) / 2
    obs["error"] = (obs["model_mid"] - obs["real_mid"]) / obs["real_mid"]
    obs["inside"] = (obs["real_mid"] >= obs["model_bid"]) & (obs["real_mid"] <= obs["model_ask"])
    obs["spread_error"] = SHARES_PER_CONTRACT * ((obs["model_ask"] - obs["model_bid"]) - (obs["real_ask"] - obs["real_bid"]))
    return _with_round_trips(obs)


def _with_round_trips(obs: pd.DataFrame) -> pd.DataFrame:
    """Add ``round_trip_error``: modelled minus real P&L of buying at the ask here and selling at the
    bid in the ticker's last snapshot of the day, dollars per contract (NaN if held under an hour)."""
    last = obs.groupby(["ticker", "day"])["quote_time"].transform("max")
    exits = obs[obs["quote_time"] == last][["symbol", "day", "quote_time", "real_bid", "model_bid"]]
    merged = obs.merge(exits, on=["symbol", "day"], how="left", suffixes=("", "_exit"))
    held = (merged["quote_time_exit"] - merged["quote_time"]) >= ROUND_TRIP_MIN_HOLD
    real = merged["real_bid_exit"] - merged["real_ask"]
    model = merged["model_bid_exit"] - merged["model_ask"]
    merged["round_trip_error"] = np.where(held, SHARES_PER_CONTRACT * (model - real), np.nan)
    return merged.drop(columns=["quote_time_exit", "real_bid_exit", "model_bid_exit"])


def summarize(obs: pd.DataFrame) -> pd.DataFrame:
    """The figures of the module docstring per ``dte_bucket`` × ``delta_band``, in bucket order."""
    if obs.empty:
        return pd.DataFrame()
    rows = []
    for (bucket, band), g in obs.groupby(["dte_bucket", "delta_band"]):
        rows.append(_figures(g) | {"dte_bucket": bucket, "delta_band": band})
    table = pd.DataFrame(rows)
    table["_b"] = table["dte_bucket"].map(DTE_BUCKETS.index)
    table["_d"] = table["delta_band"].map(DELTA_BANDS.index)
    return table.sort_values(["_b", "_d"]).drop(columns=["_b", "_d"]).reset_index(drop=True)


def _figures(g: pd.DataFrame) -> dict[str, float]:
    abs_error = g["error"].abs() * 100
    trips = g["round_trip_error"].dropna()
    return {
        "n": len(g),
        "median_error_pct": float(abs_error.median()),
        "p90_error_pct": float(abs_error.quantile(0.9)),
        "bias_pct": float(g["error"].median() * 100),
        "inside_pct": float(g["inside"].mean() * 100),
        "real_spread": float(((g["real_ask"] - g["real_bid"]) * SHARES_PER_CONTRACT).mean()),
        "model_spread": float(((g["model_ask"] - g["model_bid"]) * SHARES_PER_CONTRACT).mean()),
        "spread_bias": float(g["spread_error"].mean()),
        "round_trips": len(trips),
        "round_trip_median_abs": float(trips.abs().median()) if len(trips) else float("nan"),
        "round_trip_bias": float(trips.mean()) if len(trips) else float("nan"),
        "modelled_vol_pct": float((g["vol_source"] != "listing").mean() * 100),
    }


def target_band(obs: pd.DataFrame) -> dict[str, float]:
    """The figures for the band the product trades: |delta| 0.30–0.60, 7–30 DTE."""
    band = obs[(obs["dte_bucket"] == TARGET_DTE) & (obs["delta_band"] == TARGET_DELTA)]
    return _figures(band) if len(band) else {}


def measured_spreads(market: HistoricalMarketData) -> pd.DataFrame:
    """Median relative spread (percent of the mid) of the real chains per ticker, DTE bucket and
    |delta| band: the measurement behind the rule spread of tickers without a chain."""
    rows = []
    for ticker in sorted(market.chains.tickers_loaded()):
        for snap in market.chains.snapshots(ticker):
            quoted = (snap.bid > 0) & np.isfinite(snap.iv) & (snap.years > 0)
            delta = bs_delta(snap.spot, snap.strike[quoted], snap.years[quoted], snap.iv[quoted], snap.is_call[quoted])
            mid = (snap.bid[quoted] + snap.ask[quoted]) / 2
            rows.append(pd.DataFrame({
                "ticker": ticker, "dte_bucket": np.array(DTE_BUCKETS)[dte_bucket(snap.years[quoted] * 365)],
                "delta_band": np.array(DELTA_BANDS)[delta_band(delta)],
                "relative": (snap.ask[quoted] - snap.bid[quoted]) / mid * 100,
            }))
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows).groupby(["ticker", "dte_bucket", "delta_band"])["relative"].median().unstack("delta_band")
    return table.reindex(columns=[b for b in DELTA_BANDS if b in table.columns])


@dataclass(frozen=True)
class LagSummary:
    """The quote lags of a folder's snapshots, minutes."""

    snapshots: int
    by_parity: int
    median: float
    p10: float
    p90: float


def lag_summary(timings: list[SnapshotTiming]) -> LagSummary:
    lags = np.array([t.lag.total_seconds() / 60 for t in timings]) if timings else np.array([np.nan])
    return LagSummary(len(timings), sum(t.source == "parity" for t in timings), float(np.nanmedian(lags)),
                      float(np.nanpercentile(lags, 10)), float(np.nanpercentile(lags, 90)))


def chain_tickers(folder: Path) -> list[str]:
    """Tickers in a chain folder: those of each day's first snapshot."""
    firsts: dict[str, Path] = {}
    for path in sorted(folder.glob("*.csv.gz")):
        firsts.setdefault(path.name[:8], path)
    return sorted({t for path in firsts.values() for t in read_chain(path)})


def load_check_market(data_dir: Path, calendar: TradingCalendar) -> HistoricalMarketData:
    """The chains of ``data_dir/option_chains`` with the bars of their tickers: 1-minute bars where a
    file exists, else 5-minute bars (realized volatility only: they end before the chains).

    Raises:
        DataError: no chain folder or no snapshot in it.
    """
    folder = data_dir / "option_chains"
    if not folder.is_dir() or not any(folder.glob("*.csv.gz")):
        raise DataError(f"{folder}: no option-chain snapshots (*.csv.gz)")
    tickers = chain_tickers(folder)
    bars: dict[str, BarSeries] = {}
    for interval in (1, 5):
        bar_folder = data_dir / f"bars_{interval}min"
        if not bar_folder.is_dir():
            continue
        for ticker, path in bar_files(bar_folder, None, interval).items():
            if ticker in tickers and ticker not in bars:
                bars[ticker] = load_bars(path, calendar, interval)
    return HistoricalMarketData(bars, ChainStore(folder, calendar, None, bars), calendar)


def by_vol_source(obs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The target band's figures per volatility source (listing, smile, atm, realized)."""
    band = obs[(obs["dte_bucket"] == TARGET_DTE) & (obs["delta_band"] == TARGET_DELTA)] if len(obs) else obs
    return {str(source): _figures(g) for source, g in band.groupby("vol_source")} if len(band) else {}
