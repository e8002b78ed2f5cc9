"""Option-chain snapshots of ``data/option_chains`` (one gzip'd CSV per snapshot).

A file's name is the time it was written, US/Eastern: ``20260316T114406ET_c93544c3.csv.gz``.
Columns are read by name, so every header variant works; required: ``strike``, ``bid``, ``ask``,
``expiration``, and either ``contractSymbol`` or ``ticker`` + ``type`` (the OCC symbol is then built
from ticker, expiration, type and strike). Optional: ``volume``, ``openInterest``, ``spot_price``.

Faults handled (data README):

- **Quote time.** The option quotes in a file are older than its name and its ``spot_price``
  (about 30 minutes in ``../shared/data``). Each snapshot's underlying price at quote time is implied
  by put-call parity of its near-the-money pairs (:func:`parity_spot`); matched against the
  underlying's bars it gives the file's quote time (:func:`choose_lags`). Quotes are stamped, ordered
  and aged by that time, and implied volatility is inferred against that underlying price.
- A missing or zero bid is kept as *no bid* (``bid = 0``, never selected, never sold into).
- yfinance's ``impliedVolatility`` is ignored (junk ≈ 2.0 or 0.00001 for many contracts); implied
  volatility is inferred from each contract's mid instead.
- Rows with no strike, expiration or ask are dropped; files outside regular hours are ignored.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import logging
import math
import os
import pickle
import re
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ops_pipeline.adapters.market_data.bars import BarSeries
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, exchange_date, from_exchange
from ops_pipeline.domain.pricing import RISK_FREE_RATE, implied_vol
from ops_pipeline.errors import DataError

log = logging.getLogger(__name__)

_CODE = hashlib.sha256(b"".join(
    (Path(__file__).parent / name).read_bytes() for name in ("chains.py", "bars.py", "calendar.py")
) + (Path(__file__).parents[2] / "domain" / "pricing.py").read_bytes()).hexdigest()
"""The code that turns files into snapshots: a cached day is only used by the same code."""

_NAME_RE = re.compile(r"^(\d{8}T\d{6})ET_[0-9a-f]+\.csv\.gz$")
_OCC_ROOT_RE = re.compile(r"^([A-Z.]+)\d{6}[CP]\d{8}$")
YEAR_SECS = 365.0 * 24 * 3600

MAX_LAG_MINUTES = 90
"""The longest quote lag searched for, minutes before the file's time."""
PARITY_MONEYNESS = 0.01
"""Pairs with a strike within 1 % of ``spot_price`` enter the parity estimate."""
PARITY_MAX_DAYS = 4.0
"""Only expirations at most 4 days out: rates and dividends (SPY goes ex on 03-20) barely matter there."""
LAG_TOLERANCE_BP = 0.5
"""Lags whose bar close is within this many basis points of the best match fit equally well; the
one nearest the day's lag is taken."""


class LagSource:
    """How a snapshot's quote time was found (values of :attr:`SnapshotTiming.source`)."""

    PARITY = "parity"  # its own parity spot matched against bars
    DAY = "day"  # no bars to match: the lag of its day's matched snapshots
    NONE = "none"  # nothing to match on that day: the file's time


@dataclass(frozen=True)
class SnapshotTiming:
    """When one snapshot file's option quotes were taken.

    Attributes:
        name: file name.
        taken_at: the time in the file name (when the file was written), aware.
        quote_time: estimated time of its option quotes, aware; ``taken_at - lag``.
        source: a :class:`LagSource` value.
        error_bp: for ``parity``, the distance between the parity spot and the bar close at the
            chosen lag, basis points (mean over the tickers matched); else ``None``.
        tickers: the tickers whose bars were matched.
    """

    name: str
    taken_at: dt.datetime
    quote_time: dt.datetime
    source: str
    error_bp: float | None
    tickers: tuple[str, ...]

    @property
    def lag(self) -> dt.timedelta:
        return self.taken_at - self.quote_time


@dataclass(frozen=True)
class ChainSnapshot:
    """One ticker's contracts in one snapshot, as parallel numpy arrays.

    ``quote_time`` is when the quotes were taken (see :class:`SnapshotTiming`); ``spot`` the
    underlying at that time (parity-implied, else the file's ``spot_price``), ``file_spot`` the
    file's ``spot_price`` (at ``taken_at``). ``expiry_close`` is the expiration day's 16:00
    US/Eastern in epoch seconds; ``iv`` is inferred from the mid at ``quote_time`` against ``spot``
    (NaN when no volatility fits); ``volume`` and ``open_interest`` are NaN when absent.
    """

    ticker: str
    taken_at: dt.datetime
    quote_time: dt.datetime
    name: str
    spot: float
    file_spot: float
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

    @cached_property
    def years(self) -> np.ndarray:
        """Time from the quotes to each contract's expiry, years (calendar days / 365)."""
        return (self.expiry_close - self.quote_time.timestamp()) / YEAR_SECS

    def atm_iv(self) -> float | None:
        """Median inferred IV of contracts within 3 % of the spot and 1–45 days out; None if none."""
        return self._atm_iv

    @cached_property
    def _atm_iv(self) -> float | None:
        years = self.years
        near = (np.abs(self.strike / self.spot - 1) <= 0.03) & (years >= 1 / 365) & (years <= 45 / 365)
        values = self.iv[near & np.isfinite(self.iv) & (self.bid > 0)]
        return float(np.median(values)) if len(values) else None


def minute_epochs(start: dt.datetime, minutes: int) -> np.ndarray:
    """``(start + k minutes).timestamp()`` for k in 0..minutes-1, bit for bit (float64)."""
    if start.microsecond == 0:  # whole seconds: every value an integer, exact in a float
        return start.timestamp() + 60.0 * np.arange(minutes)
    return np.array([(start + dt.timedelta(minutes=k)).timestamp() for k in range(minutes)])


def expiry_close_epoch(expiration: dt.date) -> float:
    """16:00 US/Eastern on the expiration date, epoch seconds (options stop trading at the close)."""
    return from_exchange(dt.datetime.combine(expiration, dt.time(16))).timestamp()


def snapshot_time(path: Path) -> dt.datetime | None:
    """Aware UTC time from a snapshot file name, ``None`` if the name does not follow the pattern."""
    match = _NAME_RE.match(path.name)
    if match is None:
        return None
    return from_exchange(dt.datetime.strptime(match[1], "%Y%m%dT%H%M%S"))


CHAIN_COLUMNS = frozenset({"contractSymbol", "ticker", "type", "strike", "expiration", "bid", "ask", "volume", "openInterest",
                           "spot_price"})
"""The columns of a snapshot file the product reads (the others are not parsed)."""


def read_chain(path: Path, tickers: frozenset[str] | None = None) -> dict[str, pd.DataFrame]:
    """One snapshot file's usable rows per ticker (only ``tickers`` if given), columns
    ``contractSymbol, type, strike, expiration, bid, ask, volume, openInterest, spot_price``;
    tickers without a ``spot_price`` are left out.

    Raises:
        DataError: unreadable file or a header without the required columns (names them).
    """
    try:
        frame = pd.read_csv(path, usecols=lambda column: column in CHAIN_COLUMNS)
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
    return {str(ticker): rows for ticker, rows in frame.groupby("ticker", sort=True) if rows["spot_price"].notna().any()}


def _expiry_closes(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    expiry_day = rows["expiration"].to_numpy(dtype="datetime64[D]")
    days, inverse = np.unique(expiry_day, return_inverse=True)
    closes = np.array([expiry_close_epoch(d.astype(dt.date)) for d in days])
    return expiry_day, closes[inverse]


def parity_spot(rows: pd.DataFrame, at: dt.datetime) -> tuple[float, float] | None:
    """The underlying price implied by put-call parity, ``S = C - P + K e^(-rT)``, over call/put
    pairs with both bids, a strike within :data:`PARITY_MONEYNESS` of ``spot_price`` and at most
    :data:`PARITY_MAX_DAYS` to expiry (measured from ``at``).

    Returns:
        (median over the pairs, dollars; its standard error, basis points), or ``None`` with
        fewer than 3 pairs.
    """
    file_spot = float(rows["spot_price"].dropna().iloc[0])
    expiry_day, expiry_close = _expiry_closes(rows)
    years = (expiry_close - at.timestamp()) / YEAR_SECS
    strike, bid = rows["strike"].to_numpy(float), rows["bid"].to_numpy(float)
    near = (bid > 0) & (np.abs(strike / file_spot - 1) <= PARITY_MONEYNESS) & (years > 0) & (years <= PARITY_MAX_DAYS / 365)
    mid = (bid + rows["ask"].to_numpy(float)) / 2
    is_call = (rows["type"] == "call").to_numpy()
    # pair each call with the put of the same expiration and strike (a contract is listed once per file)
    key = expiry_day.astype(np.int64) * 100_000_000 + np.round(strike * 1000).astype(np.int64)
    calls, puts = np.flatnonzero(near & is_call), np.flatnonzero(near & ~is_call)
    _, ci, pi = np.intersect1d(key[calls], key[puts], assume_unique=False, return_indices=True)
    if len(ci) < 3:
        return None
    c, p = calls[ci], puts[pi]
    implied = mid[c] - mid[p] + strike[c] * np.exp(-RISK_FREE_RATE * years[c])
    spot = float(np.median(implied))
    stderr = float(1.2533 * np.std(implied) / math.sqrt(len(implied)) / spot * 1e4)
    return spot, stderr


def build_snapshot(ticker: str, rows: pd.DataFrame, name: str, taken_at: dt.datetime,
                   quote_time: dt.datetime, spot: float) -> ChainSnapshot:
    """A :class:`ChainSnapshot` of ``rows`` (from :func:`read_chain`) with quotes at ``quote_time``
    against the underlying price ``spot`` (dollars); infers each contract's IV from its mid."""
    expiry_day, expiry_close = _expiry_closes(rows)
    years = (expiry_close - quote_time.timestamp()) / YEAR_SECS
    is_call = (rows["type"] == "call").to_numpy()
    bid, ask = rows["bid"].to_numpy(float), rows["ask"].to_numpy(float)
    mid = np.where(bid > 0, (bid + ask) / 2, np.nan)
    strike = rows["strike"].to_numpy(float)
    return ChainSnapshot(
        ticker=ticker, taken_at=taken_at, quote_time=quote_time, name=name, spot=spot,
        file_spot=float(rows["spot_price"].dropna().iloc[0]),
        symbols=rows["contractSymbol"].to_numpy(str), is_call=is_call, strike=strike,
        expiration=expiry_day, expiry_close=expiry_close, bid=bid, ask=ask,
        volume=rows["volume"].to_numpy(float), open_interest=rows["openInterest"].to_numpy(float),
        iv=implied_vol(mid, spot, strike, years, is_call),
    )


def parse_snapshot(path: Path, taken_at: dt.datetime, tickers: frozenset[str] | None = None,
                   lag: dt.timedelta = dt.timedelta(0)) -> dict[str, ChainSnapshot]:
    """Read one snapshot file into one :class:`ChainSnapshot` per ticker, quotes at ``taken_at - lag``.

    Raises:
        DataError: unreadable file or a header without the required columns (names them).
    """
    quote_time = taken_at - lag
    result = {}
    for ticker, rows in read_chain(path, tickers).items():
        parity = parity_spot(rows, quote_time)
        spot = parity[0] if parity else float(rows["spot_price"].dropna().iloc[0])
        result[ticker] = build_snapshot(ticker, rows, path.name, taken_at, quote_time, spot)
    return result


def lag_errors(spot: float, bars: BarSeries, taken_at: dt.datetime, max_lag_minutes: int = MAX_LAG_MINUTES) -> np.ndarray:
    """Distance between ``spot`` and the close of the bar in force ``lag`` minutes before
    ``taken_at``, basis points, for lag = 0..``max_lag_minutes``; NaN where no bar of the same
    session had closed by then."""
    at = taken_at.timestamp() - 60.0 * np.arange(max_lag_minutes + 1)
    idx = np.searchsorted(bars.end, at, side="right") - 1
    errors = np.full(len(at), np.nan)
    if len(bars) == 0:
        return errors
    session_start = from_exchange(dt.datetime.combine(exchange_date(taken_at), dt.time(0))).timestamp()
    ok = idx >= 0
    ok[ok] = bars.start[idx[ok]] >= session_start
    errors[ok] = np.abs(bars.close[idx[ok]] / spot - 1) * 1e4
    return errors


def choose_lags(curves: list[np.ndarray | None], tolerances_bp: list[float]) -> list[tuple[int, str, float | None]]:
    """Each snapshot's quote lag in minutes, for one day's snapshots.

    ``curves[i]`` is snapshot *i*'s error by lag (:func:`lag_errors`, averaged over its tickers) or
    ``None`` when it has no bars to match. The day's lag is the minimum of the median curve. A
    snapshot takes, among the lags within its tolerance (``max(LAG_TOLERANCE_BP, tolerances_bp[i])``)
    of its own best, the one nearest the day's lag: a flat market matches many lags equally, and
    the collection's delay changes little within a day.

    Returns:
        per snapshot (lag minutes, :class:`LagSource` value, error at that lag in bp or None).
    """
    known = [c for c in curves if c is not None and np.isfinite(c).any()]
    day_lag = None
    if known:
        median = np.nanmedian(np.vstack(known), axis=0) if len(known) > 1 else known[0]
        day_lag = int(np.nanargmin(median))
    result: list[tuple[int, str, float | None]] = []
    for curve, tol in zip(curves, tolerances_bp, strict=True):
        if curve is None or not np.isfinite(curve).any():
            result.append((day_lag, LagSource.DAY, None) if day_lag is not None else (0, LagSource.NONE, None))
            continue
        best = np.nanmin(curve)
        candidates = np.flatnonzero(curve <= best + max(LAG_TOLERANCE_BP, tol))
        lag = int(candidates[np.argmin(np.abs(candidates - (day_lag if day_lag is not None else 0)))])
        result.append((lag, LagSource.PARITY, float(curve[lag])))
    return result


class ChainStore:
    """Every in-hours snapshot in a folder, by ticker and quote time.

    Files are parsed a whole exchange day at a time as the clock reaches that day (a day's lags are
    chosen together, see :func:`choose_lags`) and kept in memory; ``tickers`` limits parsing to the
    underlyings in play; ``bars`` (ticker → 1- or 5-minute bars) are what quote times are matched
    against. Without bars for any ticker of a day, that day's quotes keep their files' times.

    ``cache_dir``: where a parsed day is kept (compressed pickle) and read back by later stores. A
    day's key covers everything its result depends on: each file's path, size and modification
    time, ``tickers``, the bars of that day that quote times are matched against, and this
    module's code (and the pricing, bar and calendar code it calls). A cache file that cannot be
    read is parsed again and replaced; writes are atomic, so parallel sweeps may share a folder.
    """

    def __init__(self, folder: Path | None, calendar: TradingCalendar, tickers: frozenset[str] | None = None,
                 bars: Mapping[str, BarSeries] | None = None, cache_dir: Path | None = None) -> None:
        self.folder = folder
        self.tickers = tickers
        self.bars = dict(bars or {})
        self.cache_dir = cache_dir
        self.cache_hits = 0
        self.ignored_outside_hours: list[str] = []
        files: dict[dt.date, list[tuple[dt.datetime, Path]]] = {}
        if folder is not None and folder.is_dir():
            for path in sorted(folder.glob("*.csv.gz")):
                taken_at = snapshot_time(path)
                if taken_at is None:
                    continue
                if calendar.is_open(taken_at):
                    files.setdefault(exchange_date(taken_at), []).append((taken_at, path))
                else:
                    self.ignored_outside_hours.append(path.name)
        self._files = {day: sorted(entries) for day, entries in files.items()}
        self._days = sorted(self._files)
        self._loaded_days = 0
        self._by_ticker: dict[str, list[ChainSnapshot]] = {}
        self._times: dict[str, list[float]] = {}
        self._listings: dict[str, tuple[list[float], list[float]]] = {}
        self._first_listed = math.inf
        """The earliest quote time (epoch seconds) of any listing loaded: before it, none is listed."""
        self._timings: list[SnapshotTiming] = []

    @property
    def snapshot_count(self) -> int:
        return sum(len(entries) for entries in self._files.values())

    def preload(self, now: dt.datetime) -> None:
        """Parse every snapshot of the days up to ``now`` at once (a server does it before its first
        answer, so the first order of the day does not wait seconds for it)."""
        self._load_until(now)

    def timings(self, *, parse_all: bool = True) -> list[SnapshotTiming]:
        """Every file's quote timing, in file order; only the files parsed so far unless ``parse_all``."""
        while parse_all and self._loaded_days < len(self._days):
            self._load_next_day()
        return sorted(self._timings, key=lambda t: t.taken_at)

    def _load_until(self, now: dt.datetime) -> None:
        day = exchange_date(now)
        while self._loaded_days < len(self._days) and self._days[self._loaded_days] <= day:
            self._load_next_day()

    def _load_next_day(self) -> None:
        day = self._days[self._loaded_days]
        entries = self._files[day]
        cache = self._cache_path(day, entries) if self.cache_dir is not None else None
        loaded = _read_cached_day(cache) if cache is not None else None
        if loaded is None:
            loaded = self._parse_day(entries)
            if cache is not None:
                _write_cached_day(cache, loaded)
        else:
            self.cache_hits += 1
        timings, snaps = loaded
        self._timings.extend(timings)
        snaps = sorted(snaps, key=lambda s: s.quote_time)
        for snap in snaps:
            self._by_ticker.setdefault(snap.ticker, []).append(snap)
            self._times.setdefault(snap.ticker, []).append(snap.quote_time.timestamp())
        self._add_listings(snaps)
        self._loaded_days += 1

    def _add_listings(self, snaps: list[ChainSnapshot]) -> None:
        """Append each contract's (quote time, implied volatility) of ``snaps`` (in quote-time
        order) to :attr:`_listings`, where the volatility is finite: in snapshot order, then row
        order, as a loop over the rows would; grouped by contract with one stable sort (a day holds
        about 400,000 rows of 10,000 contracts)."""
        if not snaps:
            return
        iv = np.concatenate([snap.iv for snap in snaps]).astype(float, copy=False)
        epoch = np.concatenate([np.full(len(snap.iv), snap.quote_time.timestamp()) for snap in snaps])
        symbols = np.concatenate([np.asarray(snap.symbols, dtype=object) for snap in snaps])
        keep = np.isfinite(iv)
        if keep.any():
            self._first_listed = min(self._first_listed, float(epoch[keep].min()))
        codes, names = pd.factorize(symbols[keep])
        order = np.argsort(codes, kind="stable")
        times, ivs = epoch[keep][order].tolist(), iv[keep][order].tolist()
        ends = np.cumsum(np.bincount(codes, minlength=len(names))).tolist()
        start = 0
        for name, end in zip(names.tolist(), ends, strict=True):
            listed = self._listings.get(name)
            if listed is None:
                self._listings[name] = (times[start:end], ivs[start:end])
            else:
                listed[0].extend(times[start:end])
                listed[1].extend(ivs[start:end])
            start = end

    def _cache_path(self, day: dt.date, entries: list[tuple[dt.datetime, Path]]) -> Path:
        assert self.cache_dir is not None
        key = hashlib.sha256(_CODE.encode())
        key.update(repr(sorted(self.tickers) if self.tickers is not None else None).encode())
        for _, path in entries:
            stat = path.stat()
            key.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        # lag_errors reads the bars of the file's exchange day that started by its time
        first = from_exchange(dt.datetime.combine(day, dt.time(0))).timestamp()
        last = entries[-1][0].timestamp()
        for ticker in sorted(self.bars):
            series = self.bars[ticker]
            lo = int(np.searchsorted(series.start, first, side="left"))
            hi = int(np.searchsorted(series.start, last, side="right"))
            key.update(f"{ticker}|{series.interval_secs}|".encode())
            key.update(series.start[lo:hi].tobytes())
            key.update(series.close[lo:hi].tobytes())
        return self.cache_dir / f"chains-{day:%Y%m%d}-{key.hexdigest()[:32]}.pkl.z"

    def _parse_day(self, entries: list[tuple[dt.datetime, Path]]) -> tuple[list[SnapshotTiming], list[ChainSnapshot]]:
        chains = [(taken_at, path, read_chain(path, self.tickers)) for taken_at, path in entries]
        curves, tolerances, matched = [], [], []
        for taken_at, _, rows_by_ticker in chains:
            per_ticker, tol, names = [], 0.0, []
            for ticker, rows in rows_by_ticker.items():
                parity = parity_spot(rows, taken_at) if ticker in self.bars else None
                if parity is None:
                    continue
                errors = lag_errors(parity[0], self.bars[ticker], taken_at)
                if np.isfinite(errors).any():
                    per_ticker.append(errors)
                    tol = max(tol, 2 * parity[1])
                    names.append(ticker)
            curves.append(np.nanmean(np.vstack(per_ticker), axis=0) if per_ticker else None)
            tolerances.append(tol)
            matched.append(tuple(names))
        snaps: list[ChainSnapshot] = []
        timings: list[SnapshotTiming] = []
        for (taken_at, path, rows_by_ticker), (lag, source, error), names in zip(chains, choose_lags(curves, tolerances), matched, strict=True):
            quote_time = taken_at - dt.timedelta(minutes=lag)
            timings.append(SnapshotTiming(path.name, taken_at, quote_time, source, error, names if source == LagSource.PARITY else ()))
            for ticker, rows in rows_by_ticker.items():
                parity = parity_spot(rows, quote_time)
                spot = parity[0] if parity else float(rows["spot_price"].dropna().iloc[0])
                snaps.append(build_snapshot(ticker, rows, path.name, taken_at, quote_time, spot))
        return timings, snaps

    def latest_at_or_before(self, ticker: str, now: dt.datetime) -> ChainSnapshot | None:
        """The snapshot of ``ticker`` with the latest quote time at or before ``now``."""
        self._load_until(now)
        snaps = self._by_ticker.get(ticker)
        if not snaps:
            return None
        i = bisect.bisect_right(self._times[ticker], now.timestamp()) - 1
        return snaps[i] if i >= 0 else None

    def first_after(self, ticker: str, now: dt.datetime) -> ChainSnapshot | None:
        """The snapshot of ``ticker`` with the earliest quote time after ``now`` (look-ahead: for
        volatility and spreads before the first chain only)."""
        while True:
            times = self._times.get(ticker, [])
            i = bisect.bisect_right(times, now.timestamp())
            if i < len(times):
                return self._by_ticker[ticker][i]
            if self._loaded_days >= len(self._days):
                return None
            self._load_next_day()

    def listing_iv(self, symbol: str, now: dt.datetime) -> tuple[float, float] | None:
        """The contract's implied volatility (fraction) in the latest snapshot at or before ``now``
        that lists it with a bid, and that snapshot's quote time (epoch seconds); ``None`` if none."""
        self._load_until(now)
        found = self._listings.get(symbol)
        if found is None:
            return None
        times, ivs = found
        i = bisect.bisect_right(times, now.timestamp()) - 1
        return (ivs[i], times[i]) if i >= 0 else None

    def listing_ivs(self, symbols: Sequence[str], now: dt.datetime) -> list[float | None]:
        """:meth:`listing_iv`'s volatility of each of ``symbols`` (``None`` where none), the files
        up to ``now`` loaded once."""
        self._load_until(now)
        at, listings = now.timestamp(), self._listings
        if at < self._first_listed:  # before every listing loaded (a replay's months before the chains)
            return [None] * len(symbols)
        found: list[float | None] = []
        for symbol in symbols:
            listed = listings.get(symbol)
            i = bisect.bisect_right(listed[0], at) - 1 if listed is not None else -1
            found.append(listed[1][i] if i >= 0 else None)  # type: ignore[index]
        return found

    def listing_iv_each_minute(self, symbol: str, start: dt.datetime, minutes: int) -> np.ndarray:
        """:meth:`listing_iv`'s volatility at ``start`` and each whole minute after it, ``minutes``
        times in all, all on ``start``'s exchange day; NaN where none. The same bisection as at
        each time alone (:func:`minute_epochs`), on the snapshots loaded for that day."""
        self._load_until(start)
        epochs = minute_epochs(start, minutes)
        found = self._listings.get(symbol)
        if found is None:
            return np.full(minutes, np.nan)
        i = np.searchsorted(np.asarray(found[0]), epochs, side="right") - 1
        return np.where(i >= 0, np.asarray([*found[1], np.nan])[i], np.nan)

    def nearest_with_iv_each_minute(self, ticker: str, start: dt.datetime,
                                    minutes: int) -> tuple[np.ndarray, list[tuple[ChainSnapshot, float] | None]]:
        """:meth:`nearest_with_iv` at ``start`` and each whole minute after it, ``minutes`` times in
        all, on ``start``'s exchange day: ``(which, found)``, ``found[which[k]]`` the answer at
        minute ``k``. The answer changes only where a snapshot's quote time is passed, so it is
        asked once per run of minutes between two quote times, at the run's first minute."""
        self._load_until(start)
        passed = np.searchsorted(np.asarray(self._times.get(ticker, []), dtype=float), minute_epochs(start, minutes),
                                 side="right")
        firsts = np.flatnonzero(np.r_[True, passed[1:] != passed[:-1]])
        found = [self.nearest_with_iv(ticker, start + dt.timedelta(minutes=k)) for k in firsts.tolist()]
        return np.repeat(np.arange(len(firsts)), np.diff(np.r_[firsts, minutes])), found

    def nearest_with_iv(self, ticker: str, now: dt.datetime, *, allow_later: bool = True) -> tuple[ChainSnapshot, float] | None:
        """The snapshot nearest ``now`` that yields an ATM IV: the latest at or before ``now`` if
        any (no look-ahead), else (if ``allow_later``) the first after it; with that IV (fraction)."""
        self._load_until(now)
        snaps = self._by_ticker.get(ticker) or []
        i = bisect.bisect_right(self._times.get(ticker, []), now.timestamp())
        for k in range(i - 1, -1, -1):  # latest first, without copying the day's snapshots
            iv = snaps[k].atm_iv()
            if iv is not None:
                return snaps[k], iv
        while allow_later and (snap := self.first_after(ticker, now)) is not None:
            iv = snap.atm_iv()
            if iv is not None:
                return snap, iv
            now = snap.quote_time
        return None

    def tickers_loaded(self) -> list[str]:
        """Tickers with at least one snapshot (parses every file)."""
        self.timings()
        return sorted(self._by_ticker)

    def snapshots(self, ticker: str) -> list[ChainSnapshot]:
        """Every snapshot of ``ticker`` in quote-time order (parses every file)."""
        self.timings()
        return list(self._by_ticker.get(ticker, []))


def _read_cached_day(path: Path) -> tuple[list[SnapshotTiming], list[ChainSnapshot]] | None:
    """A day written by :func:`_write_cached_day`, or None (absent, or unreadable: parsed again)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("chain cache %s unreadable (%s): parsing the files again", path, exc)
        return None
    try:
        timings, snaps = pickle.loads(zlib.decompress(blob))  # noqa: S301 - our own cache folder
        return list(timings), list(snaps)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is a miss, never an error
        log.warning("chain cache %s damaged (%s): parsing the files again", path, exc)
        return None


def _write_cached_day(path: Path, day: tuple[list[SnapshotTiming], list[ChainSnapshot]]) -> None:
    """Write a parsed day atomically (temporary file, then rename); a failure only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = zlib.compress(pickle.dumps(day, protocol=pickle.HIGHEST_PROTOCOL), 1)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("chain cache %s not written (%s)", path, exc)
