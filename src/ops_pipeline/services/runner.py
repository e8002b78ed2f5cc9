"""One scheduled run of one account: what ``ops-pipeline run``, the replay and (later) the scheduler
all call, so every entry point gets the same guarantees (SPEC "One account, one run at a time").

1. Take the account's run lock (:meth:`Database.account_lock`) for the whole run; if another run of
   the account holds it past ``lock_wait_secs``, do nothing and say so (``status = "busy"``).
2. A ``disabled`` account is not run (seed 002 "Stop tiny account": its schedule is off).
   Otherwise read the market clock once. If it cannot be read, record the failed run and stop.
3. Runs of this account still marked ``running`` belong to a dead process (the lock proves it):
   mark them ``abandoned`` and release their claims at once. Looked for at every run that takes
   the lock afresh; a process that has held it since its last look (the replay) looks once.
4. Refresh configuration and credentials (LOOP mode), run the position manager, then — unless the
   position manager could not finish, so positions may be unmanaged — the dispatcher.

Broker, market-data and configuration failures end the run with ``status = "error"`` and the
reason; the process goes on (a loop keeps running; ``--once`` exits non-zero).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import AccountRepository, SharedRepository
from ops_pipeline.clock import SystemClock
from ops_pipeline.domain.values import AccountState
from ops_pipeline.errors import BrokerError, ConfigError, MarketDataError, RunInProgress
from ops_pipeline.ports import Clock
from ops_pipeline.services.dispatcher import DispatchSummary
from ops_pipeline.services.position_manager import ManageSummary
from ops_pipeline.services.runs import account_log, run_context, run_id_for

if TYPE_CHECKING:
    from ops_pipeline.bootstrap import AccountRuntime


@dataclass
class AccountRunResult:
    """What one scheduled run of one account did.

    ``status``: ``ok``; ``error`` (``error`` says why; the run's rows record it); ``busy`` (another
    run of the account held the lock; nothing was done); ``disabled`` (the account is disabled;
    nothing was done).
    """

    account_name: str
    status: str
    at: dt.datetime | None = None
    manage: ManageSummary | None = None
    dispatch: DispatchSummary | None = None
    abandoned: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account_name, "status": self.status,
                "at": self.at.isoformat() if self.at else None,
                "positions": self.manage.as_dict() if self.manage else None,
                "dispatch": self.dispatch.as_dict() if self.dispatch else None,
                "abandoned": self.abandoned, "error": self.error}


class AccountRunner:
    """Runs one account's position manager and dispatcher under its lock.

    Args:
        lock_wait_secs: seconds to wait for a run of the same account to finish before giving up.
        wall_clock: the time used to record a run whose market clock could not be read, when the
            account has never run (else the market time last read).
    """

    def __init__(self, db: Database, runtime: AccountRuntime, *, lock_wait_secs: float = 5.0,
                 wall_clock: Clock | None = None) -> None:
        self.db = db
        self.runtime = runtime
        self.lock_wait_secs = lock_wait_secs
        self.wall_clock = wall_clock or SystemClock()
        self._last_now: dt.datetime | None = None
        self._looked_for_dead_runs = False
        self.log = account_log("runner", runtime.config.name)

    @property
    def name(self) -> str:
        return self.runtime.config.name

    def run_once(self, *, dispatch: bool = True) -> AccountRunResult:
        """One run; ``dispatch=False`` runs the position manager only (the replay's close)."""
        try:
            with self.db.account_lock(self.name, wait_secs=self.lock_wait_secs) as taken_now:
                return self._locked(dispatch, look_for_dead_runs=taken_now or not self._looked_for_dead_runs)
        except RunInProgress as exc:
            self.log.warning("%s; this run does nothing", exc)
            return AccountRunResult(self.name, "busy", error=str(exc))

    def _locked(self, dispatch: bool, *, look_for_dead_runs: bool) -> AccountRunResult:
        with self.db.read() as conn:
            registered = SharedRepository(conn).registration(self.name)
        if registered is not None and registered.state == AccountState.DISABLED.value:
            self.log.info("account is disabled: not run (`ops-pipeline accounts enable %s` starts it again)", self.name)
            return AccountRunResult(self.name, "disabled", error="account is disabled")
        try:
            now = self.runtime.dispatcher.clock.now()
        except (MarketDataError, BrokerError) as exc:
            return self._failed(self._market_time_before(), f"market clock unavailable: {exc}")
        self._last_now = now
        result = AccountRunResult(self.name, "ok", now)
        abandoned = []
        if look_for_dead_runs:
            with self.db.transaction() as conn:
                abandoned = AccountRepository(conn, self.name).abandon_running_runs(now)
            self._looked_for_dead_runs = True
        result.abandoned = len(abandoned)
        for run in abandoned:
            self.log.warning("run %s (pid %s, started %s) was left running by a dead process: abandoned, "
                             "its claims released", run.run_id, run.pid, run.started_at)
        try:
            self.runtime.before_run(now)
        except (ConfigError, BrokerError, MarketDataError) as exc:
            return self._failed(now, f"{type(exc).__name__}: {exc}", result)
        result.manage = self.runtime.position_manager.run(now)
        if result.manage.error:
            result.status, result.error = "error", f"position manager: {result.manage.error}"
            if dispatch:
                self.log.error("dispatcher not run: the position manager could not finish (%s)", result.manage.error)
            return result
        if dispatch:
            result.dispatch = self.runtime.dispatcher.run(now)
            if result.dispatch.error:
                result.status, result.error = "error", f"dispatcher: {result.dispatch.error}"
        return result

    def _market_time_before(self) -> dt.datetime:
        """When to record a run whose market clock could not be read: the market time last read (in
        this process, else the account's latest run), so the failed run sorts after the runs before
        it and not hours ahead of them when the market runs on a paper exchange's faster clock; the
        wall clock only when the account never ran."""
        if self._last_now is not None:
            return self._last_now
        with self.db.read() as conn:
            last = AccountRepository(conn, self.name).latest_run()
        return last.started_at if last is not None else self.wall_clock.now()

    def _failed(self, at: dt.datetime, error: str, result: AccountRunResult | None = None) -> AccountRunResult:
        """Record a run that could not start its services, and return it as an error."""
        self.log.error("run failed: %s", error)
        with self.db.transaction() as conn:
            repo = AccountRepository(conn, self.name)
            run_id = repo.start_run(run_id_for("run", self.name, at), "run", at, os.getpid())
            with run_context(run_id):
                repo.finish_run(run_id, at, "error", {}, error)
        result = result or AccountRunResult(self.name, "error", at)
        result.status, result.error = "error", error
        return result
