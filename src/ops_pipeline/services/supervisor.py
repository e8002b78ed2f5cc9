"""``ops-pipeline start``: every account on its schedule, each in its own process, supervised
(SPEC "Operations"; seed 002 "Stagger Schedulers", "Separate Log Groups").

The supervisor owns the schedule, the workers own the runs:

- **One OS process per account** (and one for the signal engine), started once and kept: a
  *worker* (``ops-pipeline worker``) builds the account's services at start (seed 001's startup
  lines go to the account's log) and then does one run per request it reads on stdin, answering a
  line of JSON on stdout. An account's hung broker call, crash or memory leak stays in its process.
- **Market time**: due minutes come from :mod:`ops_pipeline.services.schedule` on the clock the
  workers trade on (the broker's ``/v2/clock``), so a paper exchange at ``--speed 60`` is followed.
  Outside market hours the supervisor waits for the next session.
- **At a due minute** the signal engine runs first (for at most :data:`SIGNAL_WAIT_SECS`, a quarter
  of a market minute at most), so the accounts see the bar that just closed; then every account due
  at that minute. An account whose previous run is still going skips the minute (logged), so a slow
  account never queues runs or delays another.
- **Deadlines**: a run that takes longer than ``run_deadline_secs`` real seconds gets its worker
  killed (broker calls have their own timeouts; this is the last line). The account's next run
  cleans up after it (abandoned run, claims released, orders settled by ``client_order_id``).
- **Crashes**: a worker that dies is started again after a backoff (1, 2, 4 … 60 s), logged; the
  backoff starts over after a successful run.
- **Stop** (SIGINT, SIGTERM): no new run starts; the runs in progress finish; the workers are told
  to exit (stdin closed) and waited for. Workers run in their own session, so a Ctrl-C in the
  terminal reaches only the supervisor and never cuts a run in half.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.config.models import Schedule
from ops_pipeline.domain.values import EXCHANGE_TZ
from ops_pipeline.errors import BrokerError, MarketDataError
from ops_pipeline.services.schedule import MINUTE, MarketTimer, floor_minute, is_due, next_due

log = logging.getLogger("ops_pipeline.supervisor")

SIGNALS = "signals"
SIGNAL_WAIT_SECS = 2.0
TICK_SECS = 0.2
MAX_BACKOFF_SECS = 60.0
STOP_WAIT_SECS = 15.0


@dataclass(frozen=True)
class Job:
    """What the supervisor runs: an account (``name`` = account name) or the signal engine."""

    name: str
    schedule: Schedule
    argv: list[str]


@dataclass
class Worker:
    """One job's process and what the supervisor knows of it."""

    job: Job
    events: queue.Queue[tuple[str, int, dict[str, Any]]]
    env: dict[str, str] | None = None
    process: subprocess.Popen[str] | None = None
    generation: int = 0
    ready: bool = False
    busy_minute: dt.datetime | None = None
    busy_since: float = 0.0
    restart_at: float | None = None
    backoff: float = 1.0
    runs: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.generation += 1
        self.ready, self.busy_minute, self.restart_at = False, None, None
        self.process = subprocess.Popen(self.job.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        bufsize=1, env=self.env, start_new_session=True)
        threading.Thread(target=self._read, args=(self.process, self.generation), daemon=True,
                         name=f"worker-{self.job.name}").start()

    def _read(self, process: subprocess.Popen[str], generation: int) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "noise", "line": line.strip()[:200]}
            self.events.put((self.job.name, generation, event))
        self.events.put((self.job.name, generation, {"event": "exit", "code": process.wait()}))

    def send(self, minute: dt.datetime, now: float) -> bool:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"minute": minute.isoformat()}) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.busy_minute, self.busy_since = minute, now
        return True

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()

    def close(self, wait_secs: float) -> None:
        """Tell the worker to exit once idle (stdin closed) and wait for it; kill it if it does not."""
        if self.process is None:
            return
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=wait_secs)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class SupervisorSettings:
    run_deadline_secs: float = 120.0
    calendar: TradingCalendar = field(default_factory=TradingCalendar)
    env: dict[str, str] | None = None


def _hhmm(minute: dt.datetime) -> str:
    return f"{minute.astimezone(EXCHANGE_TZ):%H:%M}"


class Supervisor:
    """Runs ``jobs`` on their schedules until :meth:`stop` (thread- and signal-safe) is called.

    Args:
        timer: market time (the broker's clock).
        on_result: called with each finished run's answer (the CLI prints it).
    """

    def __init__(self, jobs: list[Job], timer: MarketTimer, settings: SupervisorSettings,
                 on_result: Callable[[str, dict[str, Any]], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.events: queue.Queue[tuple[str, int, dict[str, Any]]] = queue.Queue()
        self.workers = {j.name: Worker(j, self.events, settings.env) for j in jobs}
        self.timer, self.settings, self.on_result, self.monotonic = timer, settings, on_result, monotonic
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Until stopped. Returns after the runs in progress have finished and the workers exited."""
        for worker in self.workers.values():
            worker.start()
        target: dt.datetime | None = None
        try:
            try:
                self.timer.calibrate(self._wait)
            except (BrokerError, MarketDataError) as exc:
                log.error("market clock unavailable (%s); trying again", exc)
            while not self.stopping.is_set():
                self._housekeeping()
                if target is None:
                    target = self._next_target()
                    if target is None:
                        continue
                remaining = self.timer.real_secs_until(target)
                if remaining > 0:
                    self._wait(min(remaining, TICK_SECS))
                    continue
                now = self._read_clock()
                if now is None or now < target:
                    continue
                if now >= target + MINUTE:
                    log.warning("market time jumped from %s to %s ET: the minutes between are skipped",
                                _hhmm(target), _hhmm(now))
                    late = floor_minute(now)
                    target = late if any(is_due(w.job.schedule, late, self.settings.calendar)
                                         for w in self.workers.values()) else None
                    if target is None:
                        continue
                self._fire(target)
                target = None
        finally:
            self._shutdown()

    def _next_target(self) -> dt.datetime | None:
        now = self._read_clock()
        if now is None:
            return None
        target = next_due([w.job.schedule for w in self.workers.values()], now, self.settings.calendar)
        if target is None:
            log.error("no trading session in the next weeks after %s; waiting", now)
            self._wait(60)
            return None
        if target - now > dt.timedelta(minutes=2):
            log.info("market closed at %s ET; next run at %s ET", f"{now.astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M}",
                     f"{target.astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M}")
        return target

    def _read_clock(self) -> dt.datetime | None:
        try:
            return self.timer.read()
        except (BrokerError, MarketDataError) as exc:
            log.error("market clock unavailable (%s); trying again", exc)
            self._wait(1.0)
            return None

    def _wait(self, secs: float) -> None:
        """Sleep up to ``secs`` real seconds, handling worker events and deadlines as they come."""
        self._pump(self.monotonic() + secs, lambda: self.stopping.is_set(), housekeeping=True)

    def _pump(self, deadline: float, done: Callable[[], bool], housekeeping: bool = False) -> None:
        """Handle worker events until ``done()`` or the real-time ``deadline``."""
        while not done():
            left = deadline - self.monotonic()
            if left <= 0:
                return
            try:
                self._handle(*self.events.get(timeout=min(left, TICK_SECS)))
            except queue.Empty:
                pass
            if housekeeping:
                self._housekeeping()

    # --- firing a minute --------------------------------------------------------------------------
    def _fire(self, minute: dt.datetime) -> None:
        due = [w for w in self.workers.values() if is_due(w.job.schedule, minute, self.settings.calendar)]
        signals = next((w for w in due if w.job.name == SIGNALS), None)
        if signals is not None and self._send(signals, minute):
            minute_real = 60 / max(self.timer.speed, 1e-9)
            self._pump(self.monotonic() + min(SIGNAL_WAIT_SECS, minute_real / 4),
                       lambda: signals.busy_minute is None or self.stopping.is_set())
        for worker in due:
            if worker is not signals:
                self._send(worker, minute)

    def _send(self, worker: Worker, minute: dt.datetime) -> bool:
        name = worker.job.name
        if not worker.alive or not worker.ready:
            log.warning("[%s] run for %s ET skipped: its process is %s", name, _hhmm(minute),
                        "starting" if worker.alive else "down (restarting)")
            return False
        if worker.busy_minute is not None:
            log.warning("[%s] run for %s ET skipped: the %s ET run is still going (%.1fs)", name, _hhmm(minute),
                        _hhmm(worker.busy_minute), self.monotonic() - worker.busy_since)
            return False
        return worker.send(minute, self.monotonic())

    # --- events, deadlines, restarts --------------------------------------------------------------
    def _housekeeping(self) -> None:
        while True:
            try:
                self._handle(*self.events.get_nowait())
            except queue.Empty:
                break
        now = self.monotonic()
        for worker in self.workers.values():
            if worker.busy_minute is not None and now - worker.busy_since > self.settings.run_deadline_secs:
                log.error("[%s] the %s ET run passed its deadline of %.0fs: its process is killed and restarted",
                          worker.job.name, _hhmm(worker.busy_minute), self.settings.run_deadline_secs)
                worker.busy_minute = None
                worker.kill()
            if worker.restart_at is not None and now >= worker.restart_at and not self.stopping.is_set():
                log.info("[%s] starting its process again", worker.job.name)
                worker.start()

    def _handle(self, name: str, generation: int, event: dict[str, Any]) -> None:
        worker = self.workers[name]
        if generation != worker.generation:
            return
        kind = event.get("event")
        if kind == "ready":
            worker.ready = True
        elif kind == "done":
            worker.busy_minute = None
            worker.runs += 1
            if event.get("status") in ("ok", "disabled", "busy"):
                worker.backoff = 1.0
            if self.on_result:
                self.on_result(name, event)
        elif kind == "failed":
            log.error("[%s] could not start: %s", name, event.get("error"))
        elif kind == "exit":
            was = f" during the {_hhmm(worker.busy_minute)} ET run" if worker.busy_minute else ""
            worker.busy_minute, worker.ready = None, False
            if self.stopping.is_set():
                return
            code = event.get("code")
            how = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else f"exited with code {code}"
            log.error("[%s] its process %s%s; starting it again in %.0fs", name, how, was, worker.backoff)
            worker.restart_at = self.monotonic() + worker.backoff
            worker.backoff = min(MAX_BACKOFF_SECS, worker.backoff * 2)

    def _shutdown(self) -> None:
        busy = [w for w in self.workers.values() if w.busy_minute is not None and w.alive]
        if busy:
            log.info("stopping: waiting for the runs in progress (%s)", ", ".join(w.job.name for w in busy))
        self._pump(self.monotonic() + self.settings.run_deadline_secs,
                   lambda: not any(w.busy_minute is not None and w.alive for w in self.workers.values()))
        for worker in self.workers.values():
            worker.close(STOP_WAIT_SECS)
        log.info("stopped")
