"""CloudWatch metrics of one account's runs on AWS (seed 000 phase 11; SPEC "Operations").

The same figures as the Prometheus sink (:class:`~ops_pipeline.services.operations.AccountsCollector`),
under the seeds' names (``positions.count``, ``exposure.dollars``, ``trades.executed``,
``gates.failed``…), namespace :data:`NAMESPACE`, dimensions ``account_name`` and ``tier`` (and
``reason`` for ``gates.failed``, seed 000 item 11.5). Published with ``PutMetricData`` after every
run of an ECS task (``OPS_PIPELINE_METRICS=cloudwatch``).

Gauges (positions, exposure, equity, today's P&L, the daily-loss latch, the run's duration, stale)
are the account's values after the run. Counters are what the run added — the difference between
the database's totals before and after it — so a CloudWatch ``Sum`` over any period equals the
database's count for the runs of that period: trades executed, gate rejections by reason, runs that
ended on an error. Timestamps are the wall clock (CloudWatch refuses data older than two weeks; a
paper exchange's market time may be months behind).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.services.operations import AccountStatus, account_statuses

NAMESPACE = "OpsPipeline"
MAX_PER_CALL = 1000
"""``PutMetricData`` takes at most 1,000 metrics per call."""

log = logging.getLogger("ops_pipeline.metrics")


def _dimensions(status: AccountStatus, **extra: str) -> list[dict[str, str]]:
    pairs = {"account_name": status.name, "tier": status.tier, **extra}
    return [{"Name": k, "Value": v} for k, v in pairs.items()]


def metric_data(before: AccountStatus | None, after: AccountStatus, at: dt.datetime) -> list[dict[str, Any]]:
    """``PutMetricData`` entries for one run of one account.

    Args:
        before: the account's status just before the run (``None``: it could not be read; the
            counters are then left out rather than counting the account's whole history again).
        after: its status just after the run.
        at: the entries' timestamp (aware; the wall clock).

    Returns:
        ``MetricData`` entries: gauges as of ``after``, counters as ``after - before`` (never negative).
    """
    def entry(name: str, value: float, unit: str, **extra: str) -> dict[str, Any]:
        return {"MetricName": name, "Dimensions": _dimensions(after, **extra), "Timestamp": at,
                "Value": float(value), "Unit": unit}

    entries = [
        entry("positions.count", after.open_positions, "Count"),
        entry("exposure.dollars", after.exposure, "None"),
        entry("pnl.today", after.pnl_today, "None"),
        entry("daily_loss.halted", 1 if after.halted_at else 0, "Count"),
        entry("health.stale", 1 if after.health == "stale" else 0, "Count"),
    ]
    if after.equity is not None:
        entries.append(entry("equity.dollars", after.equity, "None"))
    if after.last_run_secs is not None:
        entries.append(entry("runs.duration", after.last_run_secs, "Seconds"))
    if before is None:
        return entries
    entries.append(entry("trades.executed", max(0, after.trades_executed - before.trades_executed), "Count"))
    entries.append(entry("runs.errors", max(0, after.run_errors - before.run_errors), "Count"))
    for reason, count in sorted(after.gates_failed.items()):
        added = count - before.gates_failed.get(reason, 0)
        if added > 0:
            entries.append(entry("gates.failed", added, "Count", reason=reason))
    return entries


class CloudWatchMetrics:
    """Publishes entries with ``PutMetricData`` (a boto3 ``cloudwatch`` client).

    A failure is logged, never raised: the run it describes has already happened and is recorded
    in the database, which stays the source of truth.
    """

    def __init__(self, client: Any, namespace: str = NAMESPACE) -> None:
        self.client = client
        self.namespace = namespace

    def publish(self, entries: Iterable[dict[str, Any]]) -> bool:
        """Send ``entries``; ``True`` when every call succeeded."""
        batch = list(entries)
        ok = True
        for i in range(0, len(batch), MAX_PER_CALL):
            try:
                self.client.put_metric_data(Namespace=self.namespace, MetricData=batch[i:i + MAX_PER_CALL])
            except Exception as exc:  # noqa: BLE001 - botocore's errors and connection failures alike
                log.error("CloudWatch metrics not published (%s: %s)", type(exc).__name__, exc)
                ok = False
        return ok


class RunMetrics:
    """One account's metrics around each of its runs: :meth:`before` reads the account's status,
    :meth:`after` reads it again and publishes :func:`metric_data` of the two. A status that cannot
    be read is logged; the run is never failed by its metrics."""

    def __init__(self, db: Database, sink: CloudWatchMetrics, calendar: TradingCalendar) -> None:
        self.db = db
        self.sink = sink
        self.calendar = calendar
        self._before: AccountStatus | None = None

    def _status(self, config: AccountConfig, at: dt.datetime) -> AccountStatus | None:
        try:
            return account_statuses(self.db, [config], at, self.calendar)[0]
        except Exception as exc:  # noqa: BLE001 - a database failure: the run's own record says it
            log.error("[%s] status for metrics unavailable (%s: %s)", config.name, type(exc).__name__, exc)
            return None

    def before(self, config: AccountConfig) -> None:
        self._before = self._status(config, dt.datetime.now(dt.UTC))

    def after(self, config: AccountConfig, at: dt.datetime | None) -> bool:
        """Publish the run's metrics (``at``: the run's market time, for health); True when sent."""
        status = self._status(config, at or dt.datetime.now(dt.UTC))
        if status is None:
            return False
        return self.sink.publish(metric_data(self._before, status, dt.datetime.now(dt.UTC)))
