"""Bar and option-chain files: every fault the data README lists, on small files we write, and
the real data's own faults."""

import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops_pipeline.adapters.market_data.bars import load_bars
from ops_pipeline.adapters.market_data.calendar import TradingCalendar, from_exchange
from ops_pipeline.adapters.market_data.chains import ChainStore, parse_snapshot
from ops_pipeline.adapters.market_data.quotes import HistoricalMarketData
from ops_pipeline.domain.market import QuoteSource
from ops_pipeline.domain.values import OccSymbol, OptionType
from ops_pipeline.errors import DataError

CAL = TradingCalendar()


def write_bars(path: Path, days: list[str], lots_from: str | None = None, extra_rows: list[str] = ()) -> Path:
    rng = np.random.default_rng(7)
    rows = ["datetime,open,high,low,close,volume"]
    for day in days:
        for minute in range(390):
            ts = dt.datetime.fromisoformat(f"{day} 09:30") + dt.timedelta(minutes=minute)
            shares = float(rng.integers(50_000, 150_000))
            volume = shares / 100 if lots_from and ts >= dt.datetime.fromisoformat(lots_from) else shares
            rows.append(f"{ts:%Y-%m-%d %H:%M:%S},100.0,100.5,99.5,100.2,{volume:.0f}")
    rows.extend(extra_rows)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_volume_in_lots_from_the_middle_of_a_day_is_converted(tmp_path):
    days = ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
    series = load_bars(write_bars(tmp_path / "ABC_1min.csv", days, lots_from="2026-03-04 10:40"), CAL, 1)
    assert series.quality.lot_segments == [("2026-03-04 10:40:00", "2026-03-06 15:59:00")]
    assert series.volume.min() >= 50_000  # every bar back in shares


def test_outside_hours_duplicates_and_invalid_rows_are_dropped_and_counted(tmp_path):
    extra = ["2026-03-02 16:00:00,100,101,99,100,5", "2026-03-02 08:00:00,100,101,99,100,5",
             "2026-03-02 10:00:00,100,101,99,100,77", "2026-03-02 10:01:00,100,99,101,100,5",
             "2026-03-07 10:00:00,100,101,99,100,5"]  # a Saturday
    series = load_bars(write_bars(tmp_path / "ABC_1min.csv", ["2026-03-02"], extra_rows=extra), CAL, 1)
    q = series.quality
    assert (q.outside_hours_dropped, q.duplicates_dropped, q.invalid_dropped) == (3, 1, 1)
    assert q.bars_kept == 390
    assert series.volume[30] == 77  # the later duplicate of 10:00 kept


def test_partial_days_are_listed_and_half_days_close_early(tmp_path):
    path = tmp_path / "ABC_5min.csv"
    rows = ["datetime,open,high,low,close,volume"]
    for day, last in (("2025-11-28", "13:30"), ("2025-12-01", "10:30")):  # day after Thanksgiving closes 13:00
        t = dt.datetime.fromisoformat(f"{day} 09:30")
        while t < dt.datetime.fromisoformat(f"{day} {last}"):
            rows.append(f"{t:%Y-%m-%d %H:%M:%S},10,11,9,10,1000")
            t += dt.timedelta(minutes=5)
    path.write_text("\n".join(rows) + "\n")
    series = load_bars(path, CAL, 5)
    assert series.quality.outside_hours_dropped == 6  # 13:00–13:25 on the half day
    assert series.quality.partial_days == ["2025-12-01 (12/78 bars)"]


def test_a_file_with_another_header_is_refused(tmp_path):
    (tmp_path / "X_1min.csv").write_text("time,price\n1,2\n")
    with pytest.raises(DataError, match="expected"):
        load_bars(tmp_path / "X_1min.csv", CAL, 1)


FULL = ("contractSymbol,lastTradeDate,strike,lastPrice,bid,ask,change,percentChange,volume,openInterest,"
        "impliedVolatility,inTheMoney,contractSize,currency,type,expiration,ticker,spot_price\n"
        "SPY260320C00660000,2026-03-16 14:00:00+00:00,660.0,5.1,5.00,5.10,0,0,120,3000,2.0,False,REGULAR,USD,call,2026-03-20,SPY,660.0\n"
        "SPY260320P00600000,2026-03-16 14:00:00+00:00,600.0,0.1,,0.05,0,0,,10,1e-05,False,REGULAR,USD,put,2026-03-20,SPY,660.0\n")
SHORT = ("ticker,type,strike,lastPrice,bid,ask,volume,openInterest,impliedVolatility,expiration,spot_price\n"
         "SPY,call,660.0,5.1,5.00,5.10,120.0,3000.0,2.0,2026-03-20,660.0\n"
         "SPY,put,600.0,0.1,0.0,0.05,,10.0,1e-05,2026-03-20,660.0\n")
SYMBOL_ONLY = ("contractSymbol,strike,bid,ask,volume,openInterest,expiration,spot_price\n"
               "SPY260320C00660000,660.0,5.00,5.10,120,3000,2026-03-20,660.0\n"
               "SPY260320P00600000,600.0,0,0.05,,10,2026-03-20,660.0\n")


@pytest.mark.parametrize("text", [FULL, SHORT, SYMBOL_ONLY], ids=["full", "short", "symbol-only"])
def test_every_chain_header_variant_gives_the_same_contracts(tmp_path, text):
    path = tmp_path / "20260316T120000ET_abc.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    snap = parse_snapshot(path, from_exchange(dt.datetime(2026, 3, 16, 12)))["SPY"]
    assert list(snap.symbols) == ["SPY260320C00660000", "SPY260320P00600000"]
    assert list(snap.bid) == [5.0, 0.0]  # missing bid → no bid
    assert 0.1 < snap.iv[0] < 0.4  # inferred from the mid, not yfinance's junk 2.0


def test_a_chain_without_required_columns_is_refused(tmp_path):
    path = tmp_path / "20260316T120000ET_abc.csv.gz"
    path.write_bytes(gzip.compress(b"ticker,strike\nSPY,1\n"))
    with pytest.raises(DataError, match="lacks column"):
        parse_snapshot(path, from_exchange(dt.datetime(2026, 3, 16, 12)))


def test_quote_is_real_when_a_snapshot_is_fresh_and_modelled_when_it_is_too_old(tmp_path):
    chains = tmp_path / "option_chains"
    chains.mkdir()
    (chains / "20260316T120000ET_abc.csv.gz").write_bytes(gzip.compress(FULL.encode()))
    bars = load_bars(write_bars(tmp_path / "SPY_1min.csv", ["2026-03-16"]), CAL, 1)
    market = HistoricalMarketData({"SPY": bars}, ChainStore(chains, CAL), CAL)
    symbol = OccSymbol.parse("SPY260320C00660000")
    at = lambda hh, mm: from_exchange(dt.datetime(2026, 3, 16, hh, mm))  # noqa: E731
    real = market.option_quote(symbol, at(12, 30))
    assert real.source is QuoteSource.REAL and real.bid == Decimal("5.00") and real.age_secs(at(12, 30)) == 1800
    modelled = market.option_quote(symbol, at(12, 31))
    assert modelled.source is QuoteSource.MODELLED and modelled.volume is None
    before = market.option_quote(symbol, at(11, 0))  # before the first snapshot: IV from the earliest after
    assert before.source is QuoteSource.MODELLED and before.iv == pytest.approx(real.iv, rel=1e-9)
    chain = market.option_chain("SPY", at(12, 5), option_type=OptionType.PUT, min_dte=0, max_dte=7)
    assert [q.has_bid for q in chain] == [False]


@pytest.mark.data
def test_real_bar_files_have_one_volume_scale_after_cleaning(data_dir):
    for interval in (1, 5):
        for path in sorted((data_dir / f"bars_{interval}min").glob("*.csv")):
            series = load_bars(path, CAL, interval)
            days = pd.to_datetime(series.start, unit="s", utc=True).tz_convert("America/New_York").date
            per_bar = pd.Series(series.volume).groupby(days).mean()
            jumps = np.abs(np.diff(np.log10(per_bar.to_numpy())))
            assert jumps.max() < 1.2, f"{path.name}: a day-to-day volume jump of 10^{jumps.max():.2f} remains"


@pytest.mark.data
def test_real_spy_lots_include_the_intraday_switch_of_2026_03_12(data_dir):
    series = load_bars(data_dir / "bars_1min" / "SPY_1min.csv", CAL, 1)
    (_, end_of_lots) = series.quality.lot_segments[-1]
    assert end_of_lots.startswith("2026-03-12 10:")


@pytest.mark.data
def test_real_chains_before_1120_are_modelled_and_after_are_real(data_dir):
    market = HistoricalMarketData({}, ChainStore(data_dir / "option_chains", CAL), CAL)
    at_noon = market.option_chain("SPY", from_exchange(dt.datetime(2026, 3, 16, 12)), option_type=OptionType.CALL,
                                  min_dte=0, max_dte=1)
    assert at_noon and all(q.source is QuoteSource.REAL for q in at_noon)
    assert all(q.snapshot.startswith("20260316T11") for q in at_noon)


@pytest.mark.data
def test_a_chain_asked_again_in_its_minute_is_the_one_each_question_gets_alone(data_dir):
    """Four accounts deciding one minute share the chain their question gets (computed once): it
    must be, quote for quote, what that question alone gets from a market that answered nothing
    before, whatever other chains (type, DTE window, ticker; real and modelled) were asked between."""
    store = ChainStore(data_dir / "option_chains", CAL)
    series = {t: load_bars(data_dir / "bars_1min" / f"{t}_1min.csv", CAL, 1) for t in ("SPY", "NVDA")}
    shared = HistoricalMarketData(series, store, CAL)
    questions = [(ticker, kind, low, high) for ticker in ("SPY", "NVDA") for kind in OptionType
                 for low, high in ((0, 1), (7, 30))]
    spy_source = {from_exchange(dt.datetime(2026, 3, 16, 12)): QuoteSource.REAL,  # a fresh snapshot
                  from_exchange(dt.datetime(2026, 3, 13, 10, 30)): QuoteSource.MODELLED}  # before the first
    for now, source in spy_source.items():
        first = {q: shared.option_chain(q[0], now, option_type=q[1], min_dte=q[2], max_dte=q[3]) for q in questions}
        for q in reversed(questions):
            again = shared.option_chain(q[0], now, option_type=q[1], min_dte=q[2], max_dte=q[3])
            alone = HistoricalMarketData(series, store, CAL).option_chain(q[0], now, option_type=q[1],
                                                                         min_dte=q[2], max_dte=q[3])
            assert again is first[q]
            assert list(again) == list(alone), (q, now)
            assert {x.symbol.option_type for x in again} <= {q[1]}
        sources = {(q[0], x.source) for q in questions for x in first[q]}
        assert sources == {("SPY", source), ("NVDA", QuoteSource.MODELLED)}, now


@pytest.mark.data
def test_realized_volatility_is_the_std_of_the_last_five_sessions_log_returns(data_dir):
    """What a contract of a ticker without chains is priced with, at each minute: computed from the
    series' log returns once, it must equal the five sessions' returns computed alone, bit for bit."""
    bars = load_bars(data_dir / "bars_1min" / "NVDA_1min.csv", CAL, 1)
    market = HistoricalMarketData({"NVDA": bars}, ChainStore(data_dir / "option_chains", CAL), CAL)
    window = 5 * 390
    for i in (0, 18, 19, 20, 1000, window, window + 1, len(bars) // 2, len(bars) - 1):
        now = dt.datetime.fromtimestamp(int(bars.start[i]) + 60, dt.UTC)
        closes = bars.close[max(0, i - window): i + 1]
        expected = float(np.std(np.diff(np.log(closes))) * np.sqrt(252 * 390)) if len(closes) >= 20 else None
        assert market.realized_vol("NVDA", now) == expected, i
    assert market.realized_vol("NVDA", dt.datetime.fromtimestamp(int(bars.start[0]), dt.UTC)) is None  # no bar closed
