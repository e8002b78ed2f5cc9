"""Parameter sweeps (SPEC "Replay"; seed 003 "Analysis & Tuning": adjust thresholds, optimise risk
percentages, find the tier breakpoints): the same replay window once per combination of the values
a grid names, each combination into its own SQLite database, in parallel processes or on a Dask
cluster, then one table comparing them.

A grid file (TOML)::

    [replay]
    bars = "5min"                          # or "1min"
    tickers = ["SPY", "QQQ"]
    start = 2026-01-05                     # exchange dates, inclusive
    end = 2026-01-09
    accounts = ["tiny-1k", "large-100k"]   # optional: only these accounts

    [grid]
    "tiny-1k.risk_pct_day" = [0.10, 0.15, 0.25]   # ACCOUNT.PARAMETER = [values]
    "*.min_quality_score" = [40, 60]               # * = every account
    "tiny-1k.initial_balance" = [1000, 3000]       # a balance: the tier breakpoint question

A parameter is any key of the tier's parameter (seed 001 ``dispatcher_config_{tier}``); it is set
in the account's tier parameter, so accounts of one tier share it (two different values for one
tier in one combination are refused). ``initial_balance`` is set in ``accounts.toml``. Every
combination's configuration is written to ``OUT/combos/NNN/config`` and validated with the
product's own loader before anything runs: a bad grid stops with every problem listed.

The replay is deterministic, so a combination gives the same rows in any process on any machine:
results do not depend on the executor. Workers of a Dask cluster must see ``OUT`` and the data
folder at the same paths (shared storage); the figures come back to the caller either way.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import json
import logging
import multiprocessing
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomlkit

from ops_pipeline.config.loader import ConfigSource, find_parameter, load_accounts, load_all, parse_parameter
from ops_pipeline.errors import ConfigError

BARS = {"1min": 1, "5min": 5}
ACCOUNT_FIELDS = ("initial_balance",)
"""Grid keys set in accounts.toml rather than in the tier's parameter."""
EVERY_ACCOUNT = "*"

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Axis:
    """One grid line: ``target`` (an account name or ``*``), ``parameter``, the ``values`` tried."""

    target: str
    parameter: str
    values: tuple[Any, ...]

    @property
    def key(self) -> str:
        return f"{self.target}.{self.parameter}"


@dataclass(frozen=True)
class Grid:
    """A sweep: the replay window and the axes whose every combination is replayed."""

    interval_minutes: int
    tickers: tuple[str, ...]
    start: dt.date
    end: dt.date
    accounts: tuple[str, ...]
    axes: tuple[Axis, ...]

    def combinations(self) -> list[dict[str, Any]]:
        """Every combination, as ``{"ACCOUNT.PARAMETER": value}``, in grid order (the last axis fastest)."""
        keys = [a.key for a in self.axes]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(a.values for a in self.axes))]


@dataclass(frozen=True)
class SweepTask:
    """One combination, ready to run anywhere the paths are visible (plain values: picklable)."""

    index: int
    label: str
    settings: dict[str, Any]
    config_dir: str
    data_dir: str
    database: str
    interval_minutes: int
    tickers: tuple[str, ...]
    start: str
    end: str
    accounts: tuple[str, ...]
    chain_cache: str | None = None
    """Where parsed option-chain days are shared between combinations (see ChainStore)."""


def load_grid(path: Path) -> Grid:
    """Read and check a grid file.

    Raises:
        ConfigError: unreadable TOML, or every problem of its ``[replay]`` and ``[grid]`` tables.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the grid {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the grid {path} is not valid TOML: {exc}") from None
    problems: list[str] = []
    replay, grid = data.get("replay", {}), data.get("grid", {})
    unknown = sorted(set(data) - {"replay", "grid"})
    if unknown:
        problems.append(f"unknown table(s) {', '.join(unknown)}: a grid has [replay] and [grid]")
    bars = replay.get("bars", "1min")
    if bars not in BARS:
        problems.append(f"[replay] bars = {bars!r}: must be 1min or 5min")
    tickers = replay.get("tickers", ["SPY", "QQQ"])
    if not isinstance(tickers, list) or not tickers or not all(isinstance(t, str) and t.isupper() for t in tickers):
        problems.append(f"[replay] tickers = {tickers!r}: a list of symbols like [\"SPY\", \"QQQ\"]")
    start, end = replay.get("start"), replay.get("end")
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            problems.append(f"[replay] {name} = {value!r}: a date like 2026-01-05 (no quotes)")
    if isinstance(start, dt.date) and isinstance(end, dt.date) and start > end:
        problems.append(f"[replay] start {start} is after end {end}")
    accounts = replay.get("accounts", [])
    if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
        problems.append(f"[replay] accounts = {accounts!r}: a list of account names")
    extra = sorted(set(replay) - {"bars", "tickers", "start", "end", "accounts"})
    if extra:
        problems.append(f"[replay] unknown key(s) {', '.join(extra)}")
    axes = []
    if not grid:
        problems.append("[grid] is empty: name at least one ACCOUNT.PARAMETER = [values]")
    for key, values in grid.items():
        target, _, parameter = key.partition(".")
        if not target or not parameter:
            problems.append(f"[grid] {key!r}: write ACCOUNT.PARAMETER (or *.PARAMETER)")
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"[grid] {key}: a non-empty list of values, got {values!r}")
            continue
        axes.append(Axis(target, parameter, tuple(values)))
    if problems:
        raise ConfigError(f"the grid {path} is invalid; nothing was run", problems)
    return Grid(BARS[bars], tuple(tickers), start, end, tuple(accounts), tuple(axes))


def _label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def prepare(grid: Grid, base: ConfigSource, out_dir: Path, data_dir: Path,
            chain_cache: Path | None = None) -> list[SweepTask]:
    """Write each combination's configuration under ``out_dir/combos/NNN/`` from the ``base``
    configuration (its accounts file, and each tier's parameter from whatever store it uses), and
    validate all of them with the product's loader. ``chain_cache``: a folder every combination
    reads parsed option-chain days from (and the first writes them to).

    Raises:
        ConfigError: unknown accounts or parameters, two values for one tier, invalid values; every
            problem of every combination listed (the first 20).
    """
    specs = {s.name: s for s in load_accounts(base.accounts_file)}
    problems = [f"[grid] {a.key}: no account {a.target!r}; accounts: {', '.join(specs)}"
                for a in grid.axes if a.target != EVERY_ACCOUNT and a.target not in specs]
    problems += [f"[replay] accounts: no account {n!r}" for n in grid.accounts if n not in specs]
    selected = [n for n in specs if not grid.accounts or n in grid.accounts]
    stored = {spec.tier: find_parameter(spec.tier, base) for spec in specs.values()}
    base_params = {tier: parse_parameter(p.text, p.name, p.source) if p else {} for tier, p in stored.items()}
    accounts_text = base.accounts_file.read_text(encoding="utf-8")
    tasks: list[SweepTask] = []
    for index, settings in enumerate(grid.combinations()):
        folder = out_dir / "combos" / f"{index:03d}"
        params = {tier: dict(values) for tier, values in base_params.items()}
        balances: dict[str, Any] = {}
        set_by: dict[tuple[str, str], tuple[str, Any]] = {}
        for key, value in settings.items():
            target, _, parameter = key.partition(".")
            for name in (selected if target == EVERY_ACCOUNT else [target] if target in specs else []):
                if parameter in ACCOUNT_FIELDS:
                    balances[name] = value
                    continue
                tier = specs[name].tier
                earlier = set_by.get((tier.value, parameter))
                if earlier is not None and earlier[1] != value:
                    problems.append(f"combination {index}: {key}={value!r} and {earlier[0]}={earlier[1]!r} set tier "
                                    f"{tier.value}'s {parameter} twice (accounts of a tier share its parameter)")
                set_by[(tier.value, parameter)] = (key, value)
                params[tier][parameter] = value
        (folder / "config" / "parameters").mkdir(parents=True, exist_ok=True)
        for tier, values in params.items():
            (folder / "config" / "parameters" / f"dispatcher_config_{tier.value}.json").write_text(
                json.dumps(values, indent=2, default=str) + "\n", encoding="utf-8")
        doc = tomlkit.parse(accounts_text)
        doc.pop("stores", None)  # a combination reads its own files, never the base's parameter store
        for table in doc.get("accounts", []):
            if table.get("name") in balances:
                table["initial_balance"] = balances[table["name"]]
        (folder / "config" / "accounts.toml").write_text(tomlkit.dumps(doc), encoding="utf-8")
        try:
            load_all(ConfigSource.from_dir(folder / "config"))
        except ConfigError as exc:
            problems += [f"combination {index} ({_label(settings)}): {p}" for p in exc.problems]
        tasks.append(SweepTask(index, _label(settings), settings, str(folder / "config"), str(data_dir),
                               str(folder / "replay.db"), grid.interval_minutes, grid.tickers, grid.start.isoformat(),
                               grid.end.isoformat(), tuple(selected),
                               str(chain_cache.resolve()) if chain_cache is not None else None))
    if problems:
        shown = problems[:20] + ([f"… and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ConfigError(f"{len(problems)} problem(s) in the grid's combinations; nothing was run", shown)
    return tasks


def _replay_settings(task: SweepTask) -> Any:  # noqa: ANN401 - ReplaySettings, imported lazily
    from ops_pipeline.replay import ReplaySettings  # noqa: PLC0415

    return ReplaySettings(data_dir=Path(task.data_dir), interval_minutes=task.interval_minutes, tickers=task.tickers,
                          start=dt.date.fromisoformat(task.start), end=dt.date.fromisoformat(task.end),
                          config_dir=Path(task.config_dir), accounts=task.accounts,
                          chain_cache=Path(task.chain_cache) if task.chain_cache else None)


def check_data(task: SweepTask) -> None:
    """Load the window's data once, as a replay would, so a ticker without data or a window without
    bars stops the sweep before any worker starts.

    Raises:
        DataError: what the replay would refuse (named).
    """
    from ops_pipeline.replay import load_inputs  # noqa: PLC0415

    load_inputs(_replay_settings(task))


def run_task(task: SweepTask) -> list[dict[str, Any]]:
    """Replay one combination into its own new SQLite file; one row per account with its figures
    (dollars, percent). Runs in a worker process (or a Dask worker); its log is ``replay.log``
    beside the database.

    Raises:
        ConfigError, DataError: the combination's configuration or data (checked before it started).
    """
    from ops_pipeline.adapters.db.database import Database, sqlite_url  # noqa: PLC0415 - worker side only
    from ops_pipeline.replay import run_replay  # noqa: PLC0415
    from ops_pipeline.reports.summary import build_report  # noqa: PLC0415

    database = Path(task.database)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    handler = logging.FileHandler(database.parent / "replay.log", mode="w", encoding="utf-8")
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        db = Database(sqlite_url(database))
        db.upgrade()
        rig, _ = run_replay(db, _replay_settings(task))
        report = build_report(db, [a.config for a in rig.accounts], {})
        db.dispose()
    finally:
        root.removeHandler(handler)
        handler.close()
    return [{"combination": task.index, "settings": task.label, "account": a["account_name"], "tier": a["tier"],
             "initial_balance": a["initial_balance"], "final_equity": a["final_equity"], "return_pct": a["return_pct"],
             "max_drawdown_pct": a["max_drawdown_pct"], "win_rate_pct": a["win_rate_pct"], "trades": a["trades"],
             "closed": a["closed_positions"], "realized_pnl": a["realized_pnl"],
             "rejections": "; ".join(f"{code}:{n}" for code, n in a["rejections"].items()),
             "limits_respected": not a["limit_violations"]}
            for a in report["accounts"]]


def run_local(tasks: Sequence[SweepTask], workers: int, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Run ``tasks`` in ``workers`` fresh processes (spawned); rows in combination order."""
    results: dict[int, list[dict[str, Any]]] = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_task, task): task.index for task in tasks}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress:
                progress(done, len(tasks))
    return [row for index in sorted(results) for row in results[index]]


def run_dask(tasks: Sequence[SweepTask], address: str, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Run ``tasks`` on the Dask distributed cluster at ``address``; rows in combination order.

    Raises:
        OSError: the scheduler cannot be reached (within 10 s).
    """
    from distributed import Client, as_completed  # noqa: PLC0415 - only for --cluster

    results: dict[int, list[dict[str, Any]]] = {}
    with Client(address, timeout=10) as client:
        futures = {client.submit(run_task, task, key=f"ops-pipeline-sweep-{task.index}-{Path(task.database).parent}",
                                 pure=False): task.index for task in tasks}
        for done, future in enumerate(as_completed(list(futures)), 1):
            results[futures[future]] = future.result()
            if progress:
                progress(done, len(tasks))
    return [row for index in sorted(results) for row in results[index]]


def task_summary(tasks: Sequence[SweepTask]) -> list[dict[str, Any]]:
    """The combinations as plain rows (for ``sweep.json``)."""
    return [{k: v for k, v in asdict(t).items() if k in ("index", "label", "settings", "database")} for t in tasks]
