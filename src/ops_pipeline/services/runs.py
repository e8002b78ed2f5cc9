"""What the dispatcher and the position manager share: run ids, day boundaries, account logs.

Every log record of a run carries ``account_name`` and ``run_id`` (:class:`RunContextFilter`), so
a log shared by several accounts or processes reads one event per line, each with its owner.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, exchange_date

_RUN_ID: ContextVar[str | None] = ContextVar("ops_pipeline_run_id", default=None)
_ACCOUNT: ContextVar[str | None] = ContextVar("ops_pipeline_account", default=None)


def run_id_for(kind: str, account_name: str, now: dt.datetime) -> str:
    """Deterministic run id from kind, account and time to the second (``dispatcher-tiny-1k-20260316T143100``)."""
    return f"{kind}-{account_name}-{_utc_run_stamp(now) if now.tzinfo is dt.UTC else _run_stamp(now)}"


def _run_stamp(now: dt.datetime) -> str:
    """``now`` as exchange time to the second, ``YYYYmmddTHHMMSS``."""
    return f"{now.astimezone(EXCHANGE_TZ):%Y%m%dT%H%M%S}"


@lru_cache(maxsize=256)
def _utc_run_stamp(now: dt.datetime) -> str:
    """:func:`_run_stamp` of a UTC time, remembered (every account's runs of a minute share it)."""
    return _run_stamp(now)


def day_start(now: dt.datetime) -> dt.datetime:
    """Midnight US/Eastern of ``now``'s trading date, aware: where "today" starts for daily limits."""
    return dt.datetime.combine(exchange_date(now), dt.time(0), EXCHANGE_TZ)


@contextmanager
def run_context(run_id: str, account_name: str | None = None) -> Iterator[None]:
    """Log records emitted inside the block carry ``run_id`` (and ``account_name`` if given)."""
    run_token = _RUN_ID.set(run_id)
    account_token = _ACCOUNT.set(account_name) if account_name else None
    try:
        yield
    finally:
        _RUN_ID.reset(run_token)
        if account_token is not None:
            _ACCOUNT.reset(account_token)


class RunContextFilter(logging.Filter):
    """Give every record ``account_name`` and ``run_id`` attributes (``-`` when none applies)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.account_name = getattr(record, "account_name", None) or _ACCOUNT.get() or "-"
        record.run_id = getattr(record, "run_id", None) or _RUN_ID.get() or "-"
        return True


class AccountLog(logging.LoggerAdapter):
    """Prefixes every message with the account, and sets ``record.account_name`` for handlers."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {})["account_name"] = self.extra["account_name"]
        return f"[{self.extra['account_name']}] {msg}", kwargs


def account_log(component: str, account_name: str) -> AccountLog:
    return AccountLog(logging.getLogger(f"ops_pipeline.{component}"), {"account_name": account_name})
