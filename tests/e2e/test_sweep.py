"""`ops-pipeline sweep`: one replay per combination of a grid, in worker processes or on a Dask
cluster (a local one of two worker processes here), with the same numbers whichever ran them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops_pipeline.config.loader import ConfigSource, load_all

pytestmark = [pytest.mark.data, pytest.mark.live]

GRID = """
[replay]
bars = "5min"
tickers = ["SPY", "QQQ"]
start = 2026-03-10
end = 2026-03-10
accounts = ["tiny-1k", "large-100k"]

[grid]
"tiny-1k.risk_pct_day" = [0.10, 0.25]
"tiny-1k.initial_balance" = [1000, 3000]
"""


def sweep(tmp_path: Path, data_dir: Path, out: str, *args: str) -> dict:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    result = subprocess.run([sys.executable, "-m", "ops_pipeline.cli", "sweep", str(grid), "--data", str(data_dir),
                             "--out", str(tmp_path / out), "--format", "json", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_a_sweep_replays_every_combination_and_dask_gives_the_same_numbers(tmp_path, data_dir, dask_cluster):
    local = sweep(tmp_path, data_dir, "local", "--workers", "2")
    rows = local["rows"]
    assert [(r["combination"], r["account"]) for r in rows] == [(c, a) for c in range(4) for a in ("large-100k", "tiny-1k")]
    tiny = {r["combination"]: r for r in rows if r["account"] == "tiny-1k"}
    # combination order: risk 0.10 with 1000 and 3000, then 0.25 with 1000 and 3000
    assert [tiny[c]["initial_balance"] for c in range(4)] == [1000.0, 3000.0, 1000.0, 3000.0]
    assert tiny[0]["settings"] == "tiny-1k.risk_pct_day=0.1, tiny-1k.initial_balance=1000"
    config = {c.name: c for c in load_all(ConfigSource.from_dir(tmp_path / "local" / "combos" / "002" / "config"))}
    assert config["tiny-1k"].risk.risk_pct_day == 0.25 and config["large-100k"].risk.risk_pct_day != 0.25
    assert tiny[0]["final_equity"] != tiny[2]["final_equity"]  # the parameter changed what tiny did
    large = [r for r in rows if r["account"] == "large-100k"]
    assert len({(r["final_equity"], r["trades"]) for r in large}) == 1  # tiny's settings never touch large
    assert all(r["limits_respected"] for r in rows)
    written = json.loads((tmp_path / "local" / "sweep.json").read_text())
    assert written["rows"] == rows and (tmp_path / "local" / "sweep.html").stat().st_size > 100_000
    assert (tmp_path / "local" / "sweep.csv").read_text().count("\n") == len(rows) + 1

    on_dask = sweep(tmp_path, data_dir, "dask", "--cluster", dask_cluster)
    assert on_dask["rows"] == rows


def test_a_bad_grid_lists_every_problem_and_runs_nothing(tmp_path, data_dir):
    grid = tmp_path / "bad.toml"
    grid.write_text(GRID.replace('"tiny-1k.initial_balance"', '"huge-1m.max_daily_loss"')
                    .replace("[0.10, 0.25]", "[0.10, -2]") + '"tiny-1k.risk_pct_dy" = [0.1]\n')
    result = subprocess.run([sys.executable, "-m", "ops_pipeline.cli", "sweep", str(grid), "--data", str(data_dir),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    for problem in ("no account 'huge-1m'", "risk_pct_dy: unknown key", "risk_pct_day: Input should be greater than"):
        assert problem in result.stdout, result.stdout
    assert not list((tmp_path / "out").rglob("*.db"))
    grid.write_text(GRID.replace('["SPY", "QQQ"]', '["SPY", "XYZQ"]'))
    result = subprocess.run([sys.executable, "-m", "ops_pipeline.cli", "sweep", str(grid), "--data", str(data_dir),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no 5-minute bars for XYZQ" in result.stdout, result.stdout
    assert not list((tmp_path / "out").rglob("*.db"))
