"""OHLCV bar files of ``data/bars_1min`` and ``data/bars_5min``, cleaned of the known faults.

File format: header ``datetime,open,high,low,close,volume``; ``datetime`` is the naive US/Eastern
start of the bar; prices in dollars. Faults handled (data README "Known faults"):

- **Volume units change** between 100-share lots and shares, per file, sometimes in the middle of
  a day (1-minute files switch to shares on 2026-01-22 and back to lots on 2026-03-09 until
  2026-03-12 ≈ 10:40). Units are found per bar, not per day, by :func:`lot_scale_factors`; all
  volumes returned are shares.
- **Bars outside regular hours** (some 5-minute days run before 09:30 or past 16:00; half days
  close at 13:00) are dropped and counted, as are bars on non-trading days.
- **Partial days** (the last 5-minute day ends at 10:30) are kept and listed.
- Duplicated timestamps (last one kept), rows with missing or non-positive prices, and rows whose
  high/low do not contain open and close are dropped and counted.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, TradingCalendar
from ops_pipeline.errors import DataError

COLUMNS = ["datetime", "open", "high", "low", "close", "volume"]
LOT_SIZE = 100


@dataclass
class BarQuality:
    """What cleaning one file did; shown in the replay report."""

    path: str
    rows_read: int = 0
    bars_kept: int = 0
    duplicates_dropped: int = 0
    invalid_dropped: int = 0
    outside_hours_dropped: int = 0
    lot_bars_scaled: int = 0
    lot_segments: list[tuple[str, str]] = field(default_factory=list)
    partial_days: list[str] = field(default_factory=list)
    first_date: dt.date | None = None
    """Exchange date of the file's first bar kept (None: no bar)."""
    last_date: dt.date | None = None


@dataclass
class BarSeries:
    """One ticker's regular-hours bars in time order.

    Attributes:
        start: bar start, epoch seconds (UTC), int64.
        open, high, low, close: dollars, float64.
        volume: shares, float64.
        interval_secs: bar length in seconds.
    """

    ticker: str
    interval_secs: int
    start: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quality: BarQuality

    @property
    def end(self) -> np.ndarray:
        """Bar end (the moment its close is known), epoch seconds."""
        return self.start + self.interval_secs

    def __len__(self) -> int:
        return len(self.start)

    def last_closed_index(self, now_epoch: float) -> int:
        """Index of the latest bar whose end is at or before ``now_epoch``; -1 if none.

        Searched on the integer starts (end ≤ now ⇔ start ≤ ⌊now⌋ − interval): no array is built
        or converted per call, and this is asked for every quote and every minute."""
        return int(np.searchsorted(self.start, math.floor(now_epoch) - self.interval_secs, side="right")) - 1


def lot_scale_factors(volume: np.ndarray, slot: np.ndarray, day: np.ndarray, level_window: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per-bar multipliers (1 or 100) that put every bar's volume in shares.

    Each bar is labelled *shares* or *lots* by a two-state Viterbi path over the bars in time
    order. A bar's cost in a state is the distance, in log10, between its volume (as shares, i.e.
    ×100 if lots) and the typical shares level; a change of state costs
    :data:`SWITCH_PENALTY_LOG10` (as much as 20 bars two decades off), so only a sustained ×100
    drop is read as lots. Volumes are first adjusted by the intraday profile (per time-of-day
    slot, the median of each bar's log volume less its day's median), so the opening and closing surges are not mistaken for a unit change. A
    burst of trading can never look like lots (it is *above* the shares level). The shares level
    is local (the rolling median of the corrected volumes over ``level_window`` bars, about 20
    sessions) so that months of rising or falling activity are not read as a unit change; it is
    re-estimated from the labelled bars a few times.

    Args:
        volume: regular-hours volumes in time order (mixed units).
        slot: time-of-day slot of each bar (e.g. minute of the day), same length.
        day: the bar's trading date (any hashable), same length.
        level_window: bars in the window of the local shares level.

    Returns:
        ``(factors, segments)``: segments are ``(first, last)`` index pairs of bars in lots.
    """
    n = len(volume)
    factors = np.ones(n)
    if n == 0:
        return factors, []
    x = np.log10(np.maximum(volume, 1.0))
    # The profile is taken from each bar's deviation from its own day's median, which carries no
    # unit (units change between days far more often than within one), so lots days cannot skew it.
    frame = pd.DataFrame({"x": x, "slot": slot, "day": day})
    frame["dev"] = frame["x"] - frame.groupby("day")["x"].transform("median")
    adj = x - frame.groupby("slot")["dev"].transform("median").to_numpy()
    level = np.full(n, float(np.quantile(adj, 0.9)))
    lots = np.zeros(n, dtype=bool)
    for _ in range(4):
        lots = _viterbi_lots(adj, level)
        corrected = pd.Series(adj + np.where(lots, LOT_LOG10, 0.0))
        level = corrected.rolling(level_window, center=True, min_periods=1).median().to_numpy()
    factors[lots] = LOT_SIZE
    edges = np.flatnonzero(np.diff(np.concatenate(([0], lots.astype(np.int8), [0]))))
    segments = [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return factors, segments


LOT_LOG10 = 2.0
SWITCH_PENALTY_LOG10 = 40.0


def _viterbi_lots(adj: np.ndarray, level: np.ndarray) -> np.ndarray:
    cost_shares = np.abs(adj - level)
    cost_lots = np.abs(adj + LOT_LOG10 - level)
    n = len(adj)
    came_from_switch = np.zeros((n, 2), dtype=bool)
    total_s, total_l = float(cost_shares[0]), float(cost_lots[0])
    for i in range(1, n):
        stay_s, switch_s = total_s, total_l + SWITCH_PENALTY_LOG10
        stay_l, switch_l = total_l, total_s + SWITCH_PENALTY_LOG10
        came_from_switch[i, 0] = switch_s < stay_s
        came_from_switch[i, 1] = switch_l < stay_l
        total_s = min(stay_s, switch_s) + float(cost_shares[i])
        total_l = min(stay_l, switch_l) + float(cost_lots[i])
    state = 1 if total_l < total_s else 0
    path = np.zeros(n, dtype=bool)
    for i in range(n - 1, -1, -1):
        path[i] = state == 1
        if came_from_switch[i, state]:
            state = 1 - state
    return path


def load_bars(path: Path, calendar: TradingCalendar, interval_minutes: int) -> BarSeries:
    """Read one bar file and clean it.

    Raises:
        DataError: the file is missing, has other columns, or has no usable bar.
    """
    ticker = path.name.split("_")[0].upper()
    quality = BarQuality(path=str(path))
    try:
        frame = pd.read_csv(path, dtype={"datetime": str})
    except FileNotFoundError:
        raise DataError(f"{path}: no such bar file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a CSV bar file ({exc})") from None
    if list(frame.columns) != COLUMNS:
        raise DataError(f"{path}: header is {list(frame.columns)}, expected {COLUMNS}")
    quality.rows_read = len(frame)

    frame["ts"] = pd.to_datetime(frame["datetime"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    numeric = ["open", "high", "low", "close", "volume"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    ok = frame["ts"].notna() & frame[numeric].notna().all(axis=1)
    ok &= (frame[["open", "high", "low", "close"]] > 0).all(axis=1) & (frame["volume"] >= 0)
    ok &= frame["high"] >= frame[["open", "close"]].max(axis=1)
    ok &= frame["low"] <= frame[["open", "close"]].min(axis=1)
    quality.invalid_dropped = int((~ok).sum())
    frame = frame[ok].sort_values("ts", kind="stable")
    before = len(frame)
    frame = frame.drop_duplicates("ts", keep="last")
    quality.duplicates_dropped = before - len(frame)

    local = frame["ts"].dt.tz_localize(EXCHANGE_TZ, ambiguous="NaT", nonexistent="NaT")
    start = local.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[s]").astype(np.int64)
    interval = interval_minutes * 60
    in_hours = _regular_hours_mask(start, frame["ts"].dt.date.to_numpy(), interval, calendar)
    in_hours &= local.notna().to_numpy()
    quality.outside_hours_dropped = int((~in_hours).sum())
    frame, start = frame[in_hours], start[in_hours]
    if len(frame) == 0:
        raise DataError(f"{path}: no bar inside regular trading hours")

    volume = frame["volume"].to_numpy(dtype=float)
    minute_of_day = frame["ts"].dt.hour.to_numpy() * 60 + frame["ts"].dt.minute.to_numpy()
    factors, segments = lot_scale_factors(
        volume, minute_of_day, frame["ts"].dt.date.to_numpy(), level_window=20 * 390 // interval_minutes
    )
    quality.lot_bars_scaled = int((factors > 1).sum())
    labels = frame["datetime"].to_numpy()
    quality.lot_segments = [(str(labels[a]), str(labels[b])) for a, b in segments]
    quality.partial_days = _partial_days(frame["ts"].dt.date.to_numpy(), interval_minutes, calendar)
    quality.bars_kept = len(frame)
    return BarSeries(
        ticker=ticker,
        interval_secs=interval,
        start=start.astype(np.int64),
        open=frame["open"].to_numpy(dtype=float),
        high=frame["high"].to_numpy(dtype=float),
        low=frame["low"].to_numpy(dtype=float),
        close=frame["close"].to_numpy(dtype=float),
        volume=volume * factors,
        quality=quality,
    )


def _regular_hours_mask(start: np.ndarray, dates: np.ndarray, interval: int, calendar: TradingCalendar) -> np.ndarray:
    unique = sorted(set(dates))
    bounds = {}
    for day in unique:
        session = calendar.session(day)
        bounds[day] = (
            (int(session.open.timestamp()), int(session.close.timestamp())) if session else (0, -1)
        )
    opens = np.array([bounds[d][0] for d in dates], dtype=np.int64)
    closes = np.array([bounds[d][1] for d in dates], dtype=np.int64)
    return (start >= opens) & (start + interval <= closes)


def _partial_days(dates: np.ndarray, interval_minutes: int, calendar: TradingCalendar) -> list[str]:
    days, counts = np.unique(dates, return_counts=True)
    partial = []
    for day, count in zip(days, counts, strict=True):
        session = calendar.session(day)
        expected = session.minutes // interval_minutes if session else 0
        if count < 0.9 * expected:
            partial.append(f"{day.isoformat()} ({count}/{expected} bars)")
    return partial


def bar_files(folder: Path, tickers: list[str] | None, interval_minutes: int) -> dict[str, Path]:
    """Map ticker → bar file in ``folder`` (``SPY_1min.csv``).

    Raises:
        DataError: the folder is missing, or a requested ticker has no file (the available
            tickers are listed).
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: bar folder not found")
    suffix = f"_{interval_minutes}min.csv"
    available = {p.name[: -len(suffix)].upper(): p for p in sorted(folder.glob(f"*{suffix}"))}
    if tickers is None:
        return available
    missing = [t for t in tickers if t not in available]
    if missing:
        raise DataError(
            f"{folder}: no {interval_minutes}-minute bars for {', '.join(missing)}; "
            f"available: {', '.join(available) or 'none'}"
        )
    return {t: available[t] for t in tickers}


def slice_dates(series: BarSeries, start: dt.date, end: dt.date) -> BarSeries:
    """The same series restricted to bars whose exchange date lies in [start, end]."""
    lo = int(dt.datetime.combine(start, dt.time(0), EXCHANGE_TZ).timestamp())
    hi = int(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), EXCHANGE_TZ).timestamp())
    keep = (series.start >= lo) & (series.start < hi)
    return BarSeries(
        series.ticker, series.interval_secs, series.start[keep], series.open[keep], series.high[keep],
        series.low[keep], series.close[keep], series.volume[keep], series.quality,
    )
