"""A parsed option-chain day read back from the cache is the day parsing gives, and anything the
day depends on (a file, the bars its quote times are matched against, the tickers) changing makes
it be parsed again. A damaged cache file costs speed, never a wrong quote."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ops_pipeline.adapters.market_data.bars import load_bars, slice_dates
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.adapters.market_data.chains import ChainStore

DAY = dt.date(2026, 3, 18)
TICKERS = frozenset({"SPY", "QQQ"})


@pytest.fixture
def setup(data_dir: Path, tmp_path: Path):
    folder = tmp_path / "chains"
    folder.mkdir()
    for path in sorted((data_dir / "option_chains").glob(f"{DAY:%Y%m%d}T*.csv.gz"))[:6]:
        shutil.copy2(path, folder / path.name)  # copies: the test changes files
    calendar = TradingCalendar()
    bars = {t: slice_dates(load_bars(data_dir / "bars_1min" / f"{t}_1min.csv", calendar, 1), DAY, DAY) for t in TICKERS}
    return folder, calendar, bars, tmp_path / "cache"


def load(folder, calendar, bars, cache, tickers=TICKERS) -> ChainStore:
    store = ChainStore(folder, calendar, tickers, bars, cache_dir=cache)
    store.timings()  # parses (or reads) every day
    return store


def same(a: ChainStore, b: ChainStore) -> None:
    assert a.timings() == b.timings()
    for ticker in TICKERS:
        for x, y in zip(a.snapshots(ticker), b.snapshots(ticker), strict=True):
            assert (x.ticker, x.taken_at, x.quote_time, x.name, x.spot) == (y.ticker, y.taken_at, y.quote_time, y.name, y.spot)
            for field in ("symbols", "strike", "bid", "ask", "expiry_close", "iv"):
                np.testing.assert_array_equal(getattr(x, field), getattr(y, field))


def test_a_cached_day_is_the_parsed_day(setup):
    folder, calendar, bars, cache = setup
    parsed = load(folder, calendar, bars, None)
    first = load(folder, calendar, bars, cache)
    assert first.cache_hits == 0 and len(list(cache.iterdir())) == 1
    again = load(folder, calendar, bars, cache)
    assert again.cache_hits == 1
    same(parsed, again)
    assert {t.source for t in again.timings()} == {"parity"}  # quote times came from matching the bars


def test_a_changed_file_other_bars_or_other_tickers_parse_the_day_again(setup):
    folder, calendar, bars, cache = setup
    load(folder, calendar, bars, cache)
    victim = sorted(folder.iterdir())[0]
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 1_000_000_000))
    assert load(folder, calendar, bars, cache).cache_hits == 0
    assert load(folder, calendar, bars, cache).cache_hits == 1
    shifted = {t: s for t, s in bars.items()}
    spy = bars["SPY"]
    close = spy.close.copy()
    close[60] *= 1.01  # 10:30 ET: a bar the 11:23–11:46 files are matched against
    shifted["SPY"] = type(spy)(**{**{f: getattr(spy, f) for f in spy.__dataclass_fields__}, "close": close})
    assert load(folder, calendar, shifted, cache).cache_hits == 0
    later = spy.close.copy()
    later[-1] *= 1.01  # 15:59 ET: after every file, so it cannot change the day: the cached day stands
    shifted["SPY"] = type(spy)(**{**{f: getattr(spy, f) for f in spy.__dataclass_fields__}, "close": later})
    assert load(folder, calendar, shifted, cache).cache_hits == 1
    assert load(folder, calendar, bars, cache, frozenset({"SPY"})).cache_hits == 0
    assert len(list(cache.iterdir())) == 4


def test_a_damaged_cache_file_is_parsed_again_and_replaced(setup, caplog):
    folder, calendar, bars, cache = setup
    parsed = load(folder, calendar, bars, cache)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not a cached day")
    damaged = load(folder, calendar, bars, cache)
    assert damaged.cache_hits == 0 and "damaged" in caplog.text
    same(parsed, damaged)
    assert load(folder, calendar, bars, cache).cache_hits == 1
