"""Every seed report as a command, and the dashboard in a real browser, over the default replay
in PostgreSQL: the commands' numbers equal the seeds' SQL on the same rows, their CSV and JSON
say the same, and the dashboard's pages load in Debian's Chromium (Playwright, no download) with
every chart drawn and the overview's numbers equal to ``report compare``."""

import csv
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from ops_pipeline.cli import app
from ops_pipeline.replay import ReplaySettings, run_replay
from tests.conftest import IN_CI, ROOT, new_pg_database
from tests.seed_sql import seed_queries

pytestmark = [pytest.mark.data, pytest.mark.postgres]
SEEDS = ROOT.parent / "shared" / "seeds"
DAYS = [dt.date(2026, 3, 16), dt.date(2026, 3, 17), dt.date(2026, 3, 18), dt.date(2026, 3, 19)]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("OPS_PIPELINE_SCREENSHOTS", ROOT / "test-artifacts" / "dashboard"))


@pytest.fixture(scope="module")
def replay_db(data_dir, postgres_server):
    db = new_pg_database(postgres_server)
    run_replay(db, ReplaySettings(data_dir=data_dir))
    yield db
    db.dispose()


def report(db, *args: str) -> dict:
    result = CliRunner().invoke(app, ["report", *args, "--database-url", db.url, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def seed(db, label: str, day: dt.date, now: dt.datetime | None = None) -> list:
    """The seed query whose first comment is ``label``, unchanged but for CURRENT_DATE / NOW()."""
    (sql,) = [sql for name, sql in seed_queries(SEEDS) if name.endswith(label)]
    sql = sql.replace("CURRENT_DATE", f"DATE '{day}'")
    if now is not None:
        sql = sql.replace("NOW()", f"TIMESTAMPTZ '{now.isoformat()}'")
    with db.engine.connect() as conn:
        return conn.execute(text(sql.replace("%", "%%"))).mappings().all()


def close(a, b) -> bool:
    return a == pytest.approx(float(b), abs=0.006)


@pytest.mark.parametrize("day", DAYS, ids=str)
def test_daily_compare_risk_contracts_and_tier_validation_equal_the_seed_queries(replay_db, day):
    ours = {r["account_name"]: r for r in report(replay_db, "daily", "--date", str(day))["rows"]}
    rows = seed(replay_db, "Run this every morning", day)
    assert rows, "the replay trades every day"
    for s in rows:
        r = ours[s["account_name"]]
        assert (r["trades"], r["tickers_traded"]) == (s["trades"], s["tickers_traded"])
        assert close(r["capital_deployed"], s["capital_deployed"]) and close(r["avg_contracts"], s["avg_contracts"])
        first = dt.datetime.fromisoformat(s["first_trade"]).astimezone(dt.timezone(dt.timedelta(hours=-4)))
        assert r["first_trade"] == first.strftime("%Y-%m-%d %H:%M:%S")  # ET (EDT in March after the 8th)
    assert all(r["trades"] == 0 for name, r in ours.items() if name not in {s["account_name"] for s in rows})

    side = {r["account"]: r for r in report(replay_db, "compare", "--date", str(day))["rows"]}
    for s in seed(replay_db, "Daily comparison across all accounts", day):
        r = side[s["account"]]  # TOTAL is the ROLLUP row
        assert (r["trades"], r["unique_tickers"]) == (s["trades"], s["unique_tickers"]), s["account"]
        assert close(r["capital"], s["capital"]) and close(r["avg_contracts"], s["avg_contracts"])

    risk = {r["account_name"]: r for r in report(replay_db, "risk", "--date", str(day))["rows"]}
    for s in seed(replay_db, "Verify each account uses appropriate risk %", day):
        assert close(risk[s["account_name"]]["actual_avg_position"], s["actual_avg_position"])
        assert close(risk[s["account_name"]]["actual_risk_pct"], s["actual_risk_pct"])

    counts = {r["account_name"]: r for r in report(replay_db, "contracts", "--date", str(day))["rows"]}
    for s in seed(replay_db, "Verify contract counts respect tier caps", day):
        r = counts[s["account_name"]]
        assert (r["min_contracts"], r["max_contracts"], r["tier_cap"]) == (s["min_contracts"], s["max_contracts"], s["tier_cap"])
        assert close(r["avg_contracts"], s["avg_contracts"])

    tiers = report(replay_db, "tier-validation", "--date", str(day))["rows"]
    seeded = seed(replay_db, "Comprehensive validation of tier logic", day)
    assert [r["account_name"] for r in tiers] == [s["account_name"] for s in seeded]
    for r, s in zip(tiers, seeded, strict=True):
        assert (r["tier_cap"], r["max_contracts_used"], r["trades"]) == (s["tier_cap"], s["max_contracts_used"], s["trades"])
        assert close(r["avg_position_size"], s["avg_position_size"]) and close(r["actual_risk_pct"], s["actual_risk_pct"])
        assert r["cap_respected"] == (s["cap_respected"] == "✅")


def test_over_time_and_health_equal_the_seed_queries(replay_db):
    end = dt.datetime(2026, 3, 19, 20, 0, tzinfo=dt.UTC)  # 16:00 ET
    ours = {(r["account_name"], r["trade_date"]): r
            for r in report(replay_db, "over-time", "--since", "2026-03-13", "--date", "2026-03-19")["rows"]}
    seeded = seed(replay_db, "Weekly performance by account", DAYS[-1], now=end)
    assert len(seeded) == sum(1 for r in ours.values() if r["trades"]) > 0
    for s in seeded:
        r = ours[(s["account_name"], s["trade_date"].date().isoformat())]
        assert r["trades"] == s["trades"] and close(r["capital_used"], s["capital_used"])

    health = {r["account_name"]: r for r in report(replay_db, "health", "--date", "2026-03-19")["rows"]}
    for s in seed(replay_db, "Check each account had recent activity", DAYS[-1], now=end):
        r = health[s["account_name"]]
        assert r["minutes_since_last_trade"] == pytest.approx(float(s["minutes_since_last_trade"]), abs=0.1)
        assert r["status"] in s["status"].lower()


COMMANDS = [["daily"], ["compare"], ["over-time"], ["risk"], ["contracts"], ["health", "--date", "2026-03-19"],
            ["tier-validation"], ["over-trading"], ["account", "tiny-1k"], ["learnings"]]


def _csv_tables(output: str) -> list[list[dict]]:
    return [list(csv.DictReader(io.StringIO(block))) for block in output.strip().split("\n\n")]


def _same(json_value, csv_value: str) -> bool:
    if json_value is None:
        return csv_value == ""
    if isinstance(json_value, bool):
        return csv_value == str(json_value)
    if isinstance(json_value, int | float):
        return float(csv_value) == pytest.approx(json_value)
    return csv_value == str(json_value)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_report_says_the_same_in_csv_json_and_the_terminal(replay_db, command):
    runner = CliRunner()
    as_json = json.loads(runner.invoke(app, ["report", *command, "--database-url", replay_db.url, "--format", "json"]).output)
    reports = as_json if isinstance(as_json, list) else [as_json]
    as_csv = runner.invoke(app, ["report", *command, "--database-url", replay_db.url, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    tables = _csv_tables(as_csv.output)
    assert len(tables) == len(reports)
    for r, rows in zip(reports, tables, strict=True):
        assert r["rows"], r["report"]
        assert len(rows) == len(r["rows"])
        for j, c in zip(r["rows"], rows, strict=True):
            assert set(c) <= set(j)
            assert all(_same(j[k], c[k]) for k in c), (r["report"], j, c)
    terminal = runner.invoke(app, ["report", *command, "--database-url", replay_db.url], env={"COLUMNS": "200"})
    assert terminal.exit_code == 0 and reports[0]["title"] in terminal.output


def test_learnings_answer_each_seed_question_with_its_sample(replay_db):
    tables = {t["report"]: t for t in report(replay_db, "learnings")}
    answers = tables["learnings-answers"]["rows"]
    assert [a["question"].split("?")[0] for a in answers] == [
        "Is 25% too aggressive for tiny accounts", "Do different tiers need different strategies",
        "Do higher quality scores mean better outcomes", "Where should the tier breakpoints be"]
    metrics = {m["account_name"]: m for m in tables["learnings"]["rows"]}
    closed = sum(m["closed_trades"] for m in metrics.values())
    assert all(re.search(r"n = \d+ closed trades", a["sample"]) for a in answers)
    assert f"n = {closed} closed trades" in answers[1]["sample"]
    assert f"{metrics['tiny-1k']['total_return_pct']:+.2f} %" in answers[0]["answer"]
    assert metrics["tiny-1k"]["time_to_double"].startswith("not enough data (4 days")
    buckets = tables["learnings-quality"]["rows"]
    assert sum(b["trades"] for b in buckets) == closed
    tiers = {t["tier"]: t for t in tables["learnings-tiers"]["rows"]}
    assert sum(t["closed_trades"] for t in tiers.values()) == closed
    assert tiers["tiny"]["total_return_pct"] == metrics["tiny-1k"]["total_return_pct"]  # one account per tier here


def test_a_report_on_a_bad_date_or_unknown_account_is_one_line(replay_db):
    runner = CliRunner()
    bad = runner.invoke(app, ["report", "daily", "--date", "19/03/2026", "--database-url", replay_db.url])
    assert bad.exit_code == 2 and "--date must be a date like 2026-03-19" in bad.output
    unknown = runner.invoke(app, ["report", "account", "huge-1m", "--database-url", replay_db.url])
    assert unknown.exit_code == 2 and "no account huge-1m" in unknown.output


# --- the dashboard in a real browser --------------------------------------------------------------

PAGES = {"overview": "/", "tiny-1k": "/accounts/tiny-1k", "large-100k": "/accounts/large-100k", "compare": "/compare",
         "learnings": "/learnings"}


@pytest.fixture(scope="module")
def dashboard(replay_db):
    process = subprocess.Popen([sys.executable, "-m", "ops_pipeline.cli", "dashboard", "--port", "0", "--refresh", "0",
                                "--database-url", replay_db.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert match, line + process.stdout.read() if process.poll() is not None else line
    yield match.group(0)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail("Debian's chromium is not installed (scripts/test installs it as root; required under CI)")
        pytest.skip("no /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        yield chromium
        chromium.close()


@pytest.mark.browser
def test_every_dashboard_page_loads_and_draws_its_charts_in_chromium(dashboard, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    for name, path in PAGES.items():
        page.goto(dashboard + path)
        page.wait_for_selector(".js-plotly-plot .main-svg")
        plots = page.locator(".js-plotly-plot")
        assert plots.count() >= 1, name
        for i in range(plots.count()):
            assert plots.nth(i).locator("svg.main-svg").count() >= 1, f"{name}: chart {i} not drawn"
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
    assert errors == []
    assert all(u.startswith(dashboard) for u in requests), [u for u in requests if not u.startswith(dashboard)]
    assert page.goto(dashboard + "/accounts/nobody").status == 404


@pytest.mark.browser
def test_the_overview_shows_the_numbers_of_report_compare(dashboard, browser, replay_db):
    compare = {r["account"]: r for r in report(replay_db, "compare")["rows"]}
    page = browser.new_page()
    page.goto(dashboard + "/")
    rows = page.locator("#overview tr[data-row]")
    assert rows.count() == 4
    for i in range(rows.count()):
        row = rows.nth(i)
        account = row.get_attribute("data-row")
        for cell in row.locator("td[data-key]").all():
            key = cell.get_attribute("data-key")
            assert float(cell.get_attribute("data-value")) == pytest.approx(compare[account][key]), (account, key)
        equity = row.locator("td[data-key=equity]").inner_text()
        assert equity == f"${compare[account]['equity']:,.2f}"


@pytest.mark.browser
def test_an_open_overview_reloads_itself_and_shows_what_runs_write(browser, postgres_server, data_dir):
    """The dashboard follows a database being written (as under ``ops-pipeline start``): the open
    page reloads itself (``--refresh 1``) and its numbers change with no action in the browser."""
    db = new_pg_database(postgres_server)
    process = subprocess.Popen([sys.executable, "-m", "ops_pipeline.cli", "dashboard", "--port", "0", "--refresh", "1",
                                "--database-url", db.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline()).group(0)
        page = browser.new_page()
        page.goto(url + "/")
        trades = page.locator("#overview tr[data-row=large-100k] td[data-key=trades]")
        assert trades.get_attribute("data-value") == "0"
        run_replay(db, ReplaySettings(data_dir=data_dir, start=dt.date(2026, 3, 17), end=dt.date(2026, 3, 17)))
        with db.read() as conn:
            placed = conn.execute(text("SELECT COUNT(*) FROM dispatch_executions WHERE account_name = 'large-100k'")).scalar()
        assert placed > 0
        # The replay commits every simulated minute, and the page reloads every second while it runs: a
        # load may show part of the day. The page must come to show all of it with no action of ours.
        deadline, reloads = time.monotonic() + 60, 0
        while True:  # no goto: each load is the page's own refresh
            page.wait_for_event("load", timeout=15_000)
            reloads += 1
            if int(trades.get_attribute("data-value")) == placed or time.monotonic() > deadline:
                break
        assert reloads >= 1
        assert int(page.locator("#overview tr[data-row=large-100k] td[data-key=trades]").get_attribute("data-value")) == placed
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
        db.dispose()
    assert "Traceback" not in output, output[-3000:]
