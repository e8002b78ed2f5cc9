"""Option-chain snapshots of ``data/option_chains`` (one gzip'd CSV per snapshot).

A file's name is its snapshot time in US/Eastern: ``20260316T114406ET_c93544c3.csv.gz``.
Columns are read by name, so every header variant works; required: ``strike``, ``bid``, ``ask``,
``expiration``, and either ``contractSymbol`` or ``ticker`` + ``type`` (the OCC symbol is then built
from ticker, expiration, type and strike). Optional: ``volume``, ``openInterest``, ``spot_price``.

Faults handled (data README): a missing or zero bid is kept as *no bid* (``bid = 0``, never
selected, never sold into); yfinance's ``impliedVolatility`` is ignored (junk ≈ 2.0 or 0.00001 for
many contracts) and implied volatility is inferred from each contract's mid price instead; rows
with no strike, expiration or ask are dropped; snapshots outside regular hours are ignored.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ops_pipeline.adapters.market_data.calendar import TradingCalendar, from_exchange
from ops_pipeline.domain.pricing import implied_vol
from ops_pipeline.errors import DataError

_NAME_RE = re.compile(r"^(\d{8}T\d{6})ET_[0-9a-f]+\.csv\.gz$")
_OCC_ROOT_RE = re.compile(r"^([A-Z.]+)\d{6}[CP]\d{8}$")
YEAR_SECS = 365.0 * 24 * 3600


@dataclass(frozen=True)
class ChainSnapshot:
    """One ticker's contracts in one snapshot, as parallel numpy arrays.

    ``expiry_close`` is the expiration day's 16:00 US/Eastern in epoch seconds; ``iv`` is inferred
    from the mid (NaN when no volatility fits); ``volume`` and ``open_interest`` are NaN when absent.
    """

    ticker: str
    taken_at: dt.datetime
    name: str
    spot: float
    symbols: np.ndarray
    is_call: np.ndarray
    strike: np.ndarray
    expiration: np.ndarray  # datetime64[D]
    expiry_close: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    volume: np.ndarray
    open_interest: np.ndarray
    iv: np.ndarray

    def atm_iv(self) -> float | None:
        """Median inferred IV of contracts within 3 % of the spot and 1–45 days out; None if none."""
        years = (self.expiry_close - self.taken_at.timestamp()) / YEAR_SECS
        near = (np.abs(self.strike / self.spot - 1) <= 0.03) & (years >= 1 / 365) & (years <= 45 / 365)
        values = self.iv[near & np.isfinite(self.iv) & (self.bid > 0)]
        return float(np.median(values)) if len(values) else None


def expiry_close_epoch(expiration: dt.date) -> float:
    """16:00 US/Eastern on the expiration date, epoch seconds (options stop trading at the close)."""
    return from_exchange(dt.datetime.combine(expiration, dt.time(16))).timestamp()


def snapshot_time(path: Path) -> dt.datetime | None:
    """Aware UTC time from a snapshot file name, ``None`` if the name does not follow the pattern."""
    match = _NAME_RE.match(path.name)
    if match is None:
        return None
    return from_exchange(dt.datetime.strptime(match[1], "%Y%m%dT%H%M%S"))


def parse_snapshot(path: Path, taken_at: dt.datetime, tickers: frozenset[str] | None = None) -> dict[str, ChainSnapshot]:
    """Read one snapshot file into one :class:`ChainSnapshot` per ticker (only ``tickers`` if given).

    Raises:
        DataError: unreadable file or a header without the required columns (names them).
    """
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: cannot read option chain ({exc})") from None
    has_symbol = "contractSymbol" in frame.columns
    required = {"strike", "bid", "ask", "expiration"} | ({"contractSymbol"} if has_symbol else {"ticker", "type"})
    missing = sorted(required - set(frame.columns))
    if missing:
        raise DataError(f"{path}: option chain lacks column(s) {', '.join(missing)}; header {list(frame.columns)}")
    if has_symbol:
        symbols = frame["contractSymbol"].astype(str).str.upper()
        if "ticker" not in frame.columns:
            frame["ticker"] = symbols.str.extract(_OCC_ROOT_RE, expand=False)
        if "type" not in frame.columns:
            frame["type"] = np.where(symbols.str[-9] == "C", "call", "put")
    for col in ("strike", "bid", "ask", "volume", "openInterest", "spot_price"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame.columns else np.nan
    frame["expiration"] = pd.to_datetime(frame["expiration"], format="%Y-%m-%d", errors="coerce")
    frame["type"] = frame["type"].astype(str).str.lower()
    keep = frame["strike"].gt(0) & frame["expiration"].notna() & frame["ask"].gt(0)
    keep &= frame["type"].isin(["call", "put"]) & frame["ticker"].notna()
    if tickers is not None:
        keep &= frame["ticker"].isin(tickers)
    frame = frame[keep].copy()
    frame["bid"] = frame["bid"].fillna(0.0).clip(lower=0.0)
    if not has_symbol:
        frame["contractSymbol"] = [
            f"{t}{e:%y%m%d}{'C' if c == 'call' else 'P'}{round(k * 1000):08d}"
            for t, e, c, k in zip(frame["ticker"], frame["expiration"], frame["type"], frame["strike"], strict=True)
        ]
    result = {}
    for ticker, rows in frame.groupby("ticker", sort=True):
        spot = rows["spot_price"].dropna()
        if spot.empty:
            continue  # without the underlying's price at the snapshot, IV and delta are unknowable
        spot_value = float(spot.iloc[0])
        expiry_day = rows["expiration"].to_numpy(dtype="datetime64[D]")
        days, inverse = np.unique(expiry_day, return_inverse=True)
        closes = np.array([expiry_close_epoch(d.astype(dt.date)) for d in days])
        expiry_close = closes[inverse]
        years = (expiry_close - taken_at.timestamp()) / YEAR_SECS
        is_call = (rows["type"] == "call").to_numpy()
        bid, ask = rows["bid"].to_numpy(float), rows["ask"].to_numpy(float)
        mid = np.where(bid > 0, (bid + ask) / 2, np.nan)
        strike = rows["strike"].to_numpy(float)
        result[str(ticker)] = ChainSnapshot(
            ticker=str(ticker), taken_at=taken_at, name=path.name, spot=spot_value,
            symbols=rows["contractSymbol"].to_numpy(str), is_call=is_call, strike=strike,
            expiration=expiry_day, expiry_close=expiry_close, bid=bid, ask=ask,
            volume=rows["volume"].to_numpy(float), open_interest=rows["openInterest"].to_numpy(float),
            iv=implied_vol(mid, spot_value, strike, years, is_call),
        )
    return result


class ChainStore:
    """Every in-hours snapshot in a folder, by ticker and time.

    Files are parsed in time order as the clock reaches them (every snapshot taken at or before the
    latest time asked about, plus the next one) and kept in memory; ``tickers`` limits parsing to
    the underlyings in play.
    """

    def __init__(self, folder: Path | None, calendar: TradingCalendar, tickers: frozenset[str] | None = None) -> None:
        self.folder = folder
        self.tickers = tickers
        self._files: list[tuple[dt.datetime, Path]] = []
        self.ignored_outside_hours: list[str] = []
        if folder is not None and folder.is_dir():
            for path in sorted(folder.glob("*.csv.gz")):
                taken_at = snapshot_time(path)
                if taken_at is None:
                    continue
                if calendar.is_open(taken_at):
                    self._files.append((taken_at, path))
                else:
                    self.ignored_outside_hours.append(path.name)
        self._files.sort()
        self._file_times = [t.timestamp() for t, _ in self._files]
        self._loaded = 0
        self._by_ticker: dict[str, list[ChainSnapshot]] = {}
        self._times: dict[str, list[float]] = {}

    @property
    def snapshot_count(self) -> int:
        return len(self._files)

    def preload(self, now: dt.datetime) -> None:
        """Parse every snapshot up to ``now`` at once (a server does it before its first answer, so
        the first order of the day does not wait seconds for it)."""
        self._load_until(now)

    def _load_until(self, now: dt.datetime) -> None:
        target = min(len(self._files), bisect.bisect_right(self._file_times, now.timestamp()) + 1)
        while self._loaded < target:
            taken_at, path = self._files[self._loaded]
            for ticker, snap in parse_snapshot(path, taken_at, self.tickers).items():
                self._by_ticker.setdefault(ticker, []).append(snap)
                self._times.setdefault(ticker, []).append(taken_at.timestamp())
            self._loaded += 1

    def latest_at_or_before(self, ticker: str, now: dt.datetime) -> ChainSnapshot | None:
        """The latest snapshot of ``ticker`` taken at or before ``now``."""
        self._load_until(now)
        snaps = self._by_ticker.get(ticker)
        if not snaps:
            return None
        i = bisect.bisect_right(self._times[ticker], now.timestamp()) - 1
        return snaps[i] if i >= 0 else None

    def nearest_with_iv(self, ticker: str, now: dt.datetime) -> tuple[ChainSnapshot, float] | None:
        """The snapshot nearest ``now`` that yields an ATM IV: the latest at or before ``now`` if
        any (no look-ahead), else the first after it; with that IV (fraction)."""
        self._load_until(now)
        snaps = self._by_ticker.get(ticker) or []
        i = bisect.bisect_right(self._times.get(ticker, []), now.timestamp())
        for snap in [*reversed(snaps[:i]), *snaps[i:]]:
            iv = snap.atm_iv()
            if iv is not None:
                return snap, iv
        return None
