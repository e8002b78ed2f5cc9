"""The main job end to end on real data: the default replay into SQLite and PostgreSQL, the seeds'
SQL on its rows, determinism, the 5-minute replay with modelled quotes, the CLI."""

import datetime as dt
import json
import re
from collections import Counter

import pytest
from sqlalchemy import event, select, text
from typer.testing import CliRunner

from ops_pipeline.adapters.db.database import Database, sqlite_url
from ops_pipeline.adapters.db.repositories import AccountRepository
from ops_pipeline.adapters.db.tables import metadata
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.cli import app
from ops_pipeline.replay import ReplaySettings, run_replay
from ops_pipeline.reports.summary import build_report
from tests.conftest import ROOT, new_pg_database
from tests.seed_sql import seed_queries

pytestmark = pytest.mark.data
SEEDS = ROOT.parent / "shared" / "seeds"


def replay_into(db: Database, settings: ReplaySettings):
    rig, _ = run_replay(db, settings)
    return rig, build_report(db, [a.config for a in rig.accounts], {})


@pytest.fixture(scope="module")
def sqlite_replay(data_dir, tmp_path_factory):
    db = Database(sqlite_url(tmp_path_factory.mktemp("replay") / "replay.db"))
    db.upgrade()
    rig, report = replay_into(db, ReplaySettings(data_dir=data_dir))
    return db, rig, report


@pytest.fixture(scope="module")
def pg_replay(data_dir, postgres_server):
    db = new_pg_database(postgres_server)
    analyzed: list[str] = []

    def watch(conn, cursor, statement, *_):  # noqa: ANN001
        if statement.startswith("ANALYZE"):
            analyzed.append(statement)

    event.listen(db.engine, "before_cursor_execute", watch)
    rig, report = replay_into(db, ReplaySettings(data_dir=data_dir))
    yield db, rig, report, analyzed
    db.dispose()


def test_default_replay_trades_every_account_within_its_own_limits(sqlite_replay):
    db, rig, report = sqlite_replay
    accounts = {a["account_name"]: a for a in report["accounts"]}
    assert sum(1 for a in accounts.values() if a["trades"] > 0) >= 3
    for name, a in accounts.items():
        assert a["limit_violations"] == [], name  # the latched daily loss rule included
        assert a["inconsistencies"] == [], name
        assert a["contracts_max"] <= a["contract_cap"]
    assert report["fills_by_quote"].get("real", 0) > 0
    assert all(row["cap_respected"] for row in report["tier_validation"])
    # the rejections the report shows are the ones stored, per account
    with db.transaction() as conn:
        for name, a in accounts.items():
            assert AccountRepository(conn, name).decisions_by_reason() == a["rejections"]


def test_the_report_shows_each_accounts_worst_day_and_says_when_open_positions_took_it_past_the_limit(sqlite_replay):
    from io import StringIO

    from rich.console import Console

    from ops_pipeline.reports.render import render

    _, _, report = sqlite_replay
    halted = [a for a in report["accounts"] if a["halted_days"]]
    assert halted  # the default replay reaches the daily loss limit of several accounts
    buffer = StringIO()
    render(report, Console(file=buffer, width=240))
    text = buffer.getvalue()
    assert "Daily loss limit: each account's worst day" in text
    for a in report["accounts"]:
        worst = a["worst_day"]
        if worst["worst_pnl"] <= -a["max_daily_loss"]:  # a day at the limit was latched
            assert worst["halted_at"], a["account_name"]
    assert "positions already open then took the day to" in text


def test_the_same_replay_into_postgresql_gives_the_same_report(sqlite_replay, pg_replay):
    assert pg_replay[2] == sqlite_replay[2]


def test_postgresql_statistics_are_refreshed_each_time_the_tables_about_double(pg_replay):
    """Four sessions: ANALYZE after the first, second and fourth (1, 2, 4, 8, …), not after every
    one; the same report as SQLite's above shows the plans changed no row."""
    analyzed = pg_replay[3]
    assert len(analyzed) == 3 and all("dispatch_decisions" in a for a in analyzed)


@pytest.mark.parametrize(("label", "sql"), seed_queries(SEEDS) if SEEDS.is_dir() else [], ids=lambda v: v[:40])
def test_seed_sql_runs_unchanged_on_postgresql(pg_replay, label, sql):
    with pg_replay[0].engine.connect() as conn:
        conn.execute(text(sql.replace("%", "%%"))).all()


def test_seed_daily_summary_counts_the_replayed_executions(pg_replay):
    db, rig, *_ = pg_replay
    (daily,) = [sql for label, sql in seed_queries(SEEDS) if "Run this every morning" in label]
    day = dt.date(2026, 3, 17)
    with db.engine.connect() as conn:
        rows = conn.execute(text(daily.replace("CURRENT_DATE", f"DATE '{day}'"))).all()
        seeded = {r.account_name: r.trades for r in rows}
    expected = Counter()
    with db.transaction() as conn:
        for account in rig.accounts:
            for e in AccountRepository(conn, account.config.name).executions():
                if exchange_date(e.simulated_ts) == day:
                    expected[account.config.name] += 1
    assert seeded == dict(expected) and seeded


WALL_CLOCK = {"wall_secs"}
"""Columns that measure real time (how long a run took), not the replay's result."""


def dump(db: Database) -> dict[str, list[tuple]]:
    with db.engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(
                    select(*(c for c in t.columns if c.name not in WALL_CLOCK)).order_by(*t.primary_key.columns))]
                for t in metadata.sorted_tables}


def test_replay_is_deterministic(data_dir, tmp_path):
    settings = ReplaySettings(data_dir=data_dir, start=dt.date(2026, 3, 17), end=dt.date(2026, 3, 17))
    dumps = []
    for name in ("a", "b"):
        db = Database(sqlite_url(tmp_path / f"{name}.db"))
        db.upgrade()
        run_replay(db, settings)
        dumps.append(dump(db))
    assert dumps[0] == dumps[1]
    assert dumps[0]["dispatch_executions"]


def test_five_minute_replay_outside_the_chain_window_fills_on_modelled_quotes(data_dir, tmp_path):
    db = Database(sqlite_url(tmp_path / "five.db"))
    db.upgrade()
    settings = ReplaySettings(data_dir=data_dir, interval_minutes=5, tickers=("SPY", "QQQ", "AAPL", "NVDA", "TSLA"),
                              start=dt.date(2026, 1, 5), end=dt.date(2026, 1, 9))
    _, report = replay_into(db, settings)
    assert report["fills_by_quote"].get("modelled", 0) > 0
    assert "real" not in report["fills_by_quote"]
    assert all(a["limit_violations"] == [] for a in report["accounts"])


def test_cli_replay_prints_the_report_and_writes_json_and_csv(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["replay", "--data", str(data_dir), "--start", "2026-03-18", "--end", "2026-03-18",
                                      "--out", str(tmp_path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Tier validation (seed 002)" in result.output and "Rejections by reason code" in result.output
    assert re.search(r"Fills \(entries and exits\) by quote: real \d+, modelled \d+", result.output)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [a["account_name"] for a in report["accounts"]] == ["large-100k", "tiny-1k", "small-5k", "medium-25k"]
    assert (tmp_path / "tier_validation.csv").read_text().startswith("account_name,expected_balance")
    chart = (tmp_path / "equity.html").read_text()
    assert all(f"{name} (" in chart for name in ("large-100k", "tiny-1k", "small-5k", "medium-25k"))
    # the dashboard's pages, static, next to the CSV and JSON: relative links, plotly.js beside them
    for page in ("index.html", "compare.html", "learnings.html", "account-tiny-1k.html", "account-large-100k.html"):
        html = (tmp_path / page).read_text()
        assert '<script src="plotly.min.js">' in html and "Plotly.newPlot" in html, page
        assert not re.search(r'src="https?://', html), page
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert 'href="account-medium-25k.html"' in (tmp_path / "index.html").read_text()


def test_cli_refuses_bad_options_with_a_clear_message(tmp_path):
    result = CliRunner().invoke(app, ["replay", "--bars", "2min", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--bars must be 1min or 5min" in result.output
    result = CliRunner().invoke(app, ["replay", "--data", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "bar folder not found" in result.output


def test_paper_exchange_serve_answers_alpaca_py(data_dir):
    """`ops-pipeline paper-exchange serve` as a user starts it, then alpaca-py against it."""
    import os
    import subprocess
    import sys

    from alpaca.data.historical.option import OptionHistoricalDataClient
    from alpaca.data.historical.stock import StockHistoricalDataClient
    from alpaca.data.requests import OptionLatestQuoteRequest, OptionSnapshotRequest, StockLatestTradeRequest
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import GetOptionContractsRequest, MarketOrderRequest

    process = subprocess.Popen(
        [sys.executable, "-m", "ops_pipeline.cli", "paper-exchange", "serve", "--port", "0", "--data", str(data_dir),
         "--start", "2026-03-16 12:00", "--speed", "0", "--account", "tiny-1k:PKTINYSERVE01:1000", "--fresh"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OPS_PIPELINE_EXCHANGE_SECRET_TINY_1K": "serve-secret"})
    try:
        first = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, first + process.stdout.read() if process.poll() is not None else first
        base = url.group(0)
        client = TradingClient("PKTINYSERVE01", "serve-secret", paper=True, url_override=base)
        assert client.get_account().cash == "1000.00"
        assert client.get_clock().timestamp.astimezone(dt.UTC) == dt.datetime(2026, 3, 16, 16, 0, tzinfo=dt.UTC)
        contracts = client.get_option_contracts(GetOptionContractsRequest(
            underlying_symbols=["SPY"], type="call", expiration_date_gte=dt.date(2026, 3, 23), limit=500))
        symbols = [c.symbol for c in contracts.option_contracts]
        assert symbols and all("C" in s[9:10] and "260323" <= s[3:9] for s in symbols)
        data = OptionHistoricalDataClient("PKTINYSERVE01", "serve-secret", url_override=base)
        snapshots = data.get_option_snapshot(OptionSnapshotRequest(symbol_or_symbols=symbols[:50]))
        cheap = min((s for s in snapshots.values() if s.latest_quote.bid_price > 0.5), key=lambda s: s.latest_quote.ask_price)
        quotes = data.get_option_latest_quote(OptionLatestQuoteRequest(symbol_or_symbols=cheap.symbol))
        assert quotes[cheap.symbol].ask_price == cheap.latest_quote.ask_price and cheap.greeks.delta > 0
        spy = StockHistoricalDataClient("PKTINYSERVE01", "serve-secret", url_override=base)
        assert 600 < spy.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="SPY"))["SPY"].price < 700
        order = client.submit_order(MarketOrderRequest(symbol=cheap.symbol, qty=1, side=OrderSide.BUY,
                                                       time_in_force=TimeInForce.DAY, client_order_id="serve-1"))
        assert order.status.value == "filled" and float(order.filled_avg_price) == cheap.latest_quote.ask_price
        assert client.get_order_by_client_id("serve-1").id == order.id
        assert [p.symbol for p in client.get_all_positions()] == [cheap.symbol]
        assert client.close_position(cheap.symbol).side.value == "sell" and client.get_all_positions() == []
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_replay_hides_its_inputs_from_the_collector_and_puts_everything_back_after():
    """``long_lived_inputs``: during the loop what existed before is frozen and young objects are
    collected at a higher threshold; cyclic garbage made during it is still collected; after it the
    thresholds are the process's again and nothing stays frozen (a test run replays many times),
    also when two replays overlap in threads."""
    import gc
    import threading
    import weakref

    from ops_pipeline.replay import YOUNG_COLLECTION_OBJECTS, long_lived_inputs

    class Node:
        pass

    before = gc.get_threshold()
    with long_lived_inputs():
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (YOUNG_COLLECTION_OBJECTS, *before[1:])
        cycle = Node()
        cycle.self = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None  # garbage made inside is still found
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    # two replays at once in threads (a Dask worker's): the second to leave restores what the first found
    first_in, second_in, first_out = (threading.Event() for _ in range(3))

    def replay(entered: threading.Event, leave: threading.Event | None) -> None:
        with long_lived_inputs():
            entered.set()
            if leave is not None:
                leave.wait(10)

    one = threading.Thread(target=replay, args=(first_in, first_out))
    one.start()
    first_in.wait(10)
    two = threading.Thread(target=replay, args=(second_in, None))
    two.start()
    two.join(10)
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_OBJECTS  # the first is still replaying
    first_out.set()
    one.join(10)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
