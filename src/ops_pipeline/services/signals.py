"""The built-in signal engine: a volume surge plus price momentum → BUY_CALL or BUY_PUT.

Deterministic, and computed only from bars that have closed (trailing windows, no look-ahead).
For the bar that closes at *t*:

- ``volume_ratio`` = its volume / the mean volume of the previous :data:`VOLUME_LOOKBACK` bars;
- ``momentum_z`` = its :data:`MOMENTUM_BARS`-bar return / (standard deviation of one-bar log
  returns over the previous :data:`VOL_LOOKBACK` bars × √:data:`MOMENTUM_BARS`);
- ``day_move`` = its close against the previous session's last close.

A recommendation is written when ``volume_ratio ≥`` :data:`MIN_VOLUME_RATIO` and
``|momentum_z| ≥`` :data:`MIN_Z`, at least :data:`QUIET_MINUTES` after the open and before the
close, and no earlier than :data:`SPACING_MINUTES` after the ticker's previous one. Direction:
BUY_CALL for positive momentum, BUY_PUT for negative. Strategy: ``swing_trade`` when the move
agrees with a day move of at least :data:`SWING_DAY_MOVE` (a trend), else ``day_trade``.
Confidence (0–1) = 0.40 + 0.30 × min(1, (volume_ratio − 1) / 2) + 0.30 × min(1, (|z| − MIN_Z) / 1.5).
``bar_ts`` is the time the bar closed; ``feature_ts`` the time the features were computed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.market_data.bars import BarSeries
from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, epoch_to_utc
from ops_pipeline.domain.values import Action, StrategyType

SOURCE = "signal_engine_v1"
VOLUME_LOOKBACK = 20
VOL_LOOKBACK = 30
MOMENTUM_BARS = 5
MIN_VOLUME_RATIO = 1.2
MIN_Z = 1.5
QUIET_MINUTES = 15
SPACING_MINUTES = 10
SWING_DAY_MOVE = 0.003


@dataclass(frozen=True, slots=True)
class Signal:
    ticker: str
    action: Action
    strategy_type: StrategyType
    confidence: float
    volume_ratio: float
    momentum_z: float
    day_move: float
    close: float
    bar_close_epoch: int


def compute_signals(series: BarSeries) -> list[Signal]:
    """Every signal in ``series``, in time order (vectorised; trailing windows only)."""
    if len(series) < VOL_LOOKBACK + 2:
        return []
    close = pd.Series(series.close)
    volume = pd.Series(series.volume)
    avg_volume = volume.rolling(VOLUME_LOOKBACK).mean().shift(1)
    ratio = (volume / avg_volume).to_numpy()
    log_ret = np.log(close).diff()
    sigma = log_ret.rolling(VOL_LOOKBACK).std().shift(1).to_numpy()
    ret_k = (close / close.shift(MOMENTUM_BARS) - 1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = ret_k / (sigma * np.sqrt(MOMENTUM_BARS))
    ends = series.end
    local = pd.to_datetime(ends, unit="s", utc=True).tz_convert(EXCHANGE_TZ)
    day = local.date
    minute = (local.hour * 60 + local.minute).to_numpy()
    new_day = np.concatenate(([True], day[1:] != day[:-1]))
    prev_close = pd.Series(np.where(np.roll(new_day, -1), series.close, np.nan)).shift(1).ffill().to_numpy()
    session_start = pd.Series(np.where(new_day, ends - series.interval_secs, np.nan)).ffill().to_numpy()
    minutes_in = (ends - session_start) / 60
    day_move = series.close / prev_close - 1
    ok = np.isfinite(ratio) & np.isfinite(z) & (ratio >= MIN_VOLUME_RATIO) & (np.abs(z) >= MIN_Z)
    ok &= (minutes_in >= QUIET_MINUTES) & (minute <= 16 * 60 - QUIET_MINUTES)
    signals: list[Signal] = []
    last_epoch = -10**12
    for i in np.flatnonzero(ok):
        if ends[i] - last_epoch < SPACING_MINUTES * 60:
            continue
        last_epoch = int(ends[i])
        up = z[i] > 0
        move = float(day_move[i]) if np.isfinite(day_move[i]) else 0.0
        trending = abs(move) >= SWING_DAY_MOVE and (move > 0) == up
        confidence = 0.40 + 0.30 * min(1.0, (ratio[i] - 1) / 2) + 0.30 * min(1.0, (abs(z[i]) - MIN_Z) / 1.5)
        signals.append(Signal(
            ticker=series.ticker,
            action=Action.BUY_CALL if up else Action.BUY_PUT,
            strategy_type=StrategyType.SWING_TRADE if trending else StrategyType.DAY_TRADE,
            confidence=round(float(confidence), 4),
            volume_ratio=round(float(ratio[i]), 4),
            momentum_z=round(float(z[i]), 4),
            day_move=round(move, 6),
            close=float(series.close[i]),
            bar_close_epoch=int(ends[i]),
        ))
    return signals


class SignalEngine:
    """Writes the signals whose bar closes at the clock's minute into ``recommendations``."""

    def __init__(self, db: Database, bars: dict[str, BarSeries]) -> None:
        self.db = db
        self._by_epoch: dict[int, list[Signal]] = {}
        for ticker in sorted(bars):
            for signal in compute_signals(bars[ticker]):
                self._by_epoch.setdefault(signal.bar_close_epoch, []).append(signal)

    def run(self, now: dt.datetime) -> int:
        """Write the recommendations of bars closing exactly at ``now``; returns how many."""
        return write_signals(self.db, self._by_epoch.get(int(now.timestamp()), []), now)


def write_signals(db: Database, signals: list[Signal], now: dt.datetime) -> int:
    """Store ``signals`` as recommendations computed at ``now`` (``feature_ts``, ``created_at``),
    in one transaction; one already stored for the same (ticker, bar, action) is left as it is.
    Returns how many were new."""
    if not signals:
        return 0
    written = 0
    with db.transaction() as conn:
        repo = SharedRepository(conn)
        for s in signals:
            written += repo.add_recommendation({
                "source": SOURCE, "ticker": s.ticker, "action": s.action.value,
                "strategy_type": s.strategy_type.value, "confidence": s.confidence,
                "volume_ratio": s.volume_ratio, "underlying_price": round(s.close, 4),
                "bar_ts": epoch_to_utc(s.bar_close_epoch), "feature_ts": now, "created_at": now,
                "features": {"momentum_z": s.momentum_z, "day_move": s.day_move},
            })
    return written
