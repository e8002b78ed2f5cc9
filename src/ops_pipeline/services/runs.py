"""What the dispatcher and the position manager share: run ids, day boundaries, account logs."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ops_pipeline.adapters.market_data.calendar import EXCHANGE_TZ, exchange_date


def run_id_for(kind: str, account_name: str, now: dt.datetime) -> str:
    """Deterministic run id from kind, account and time to the second (``dispatcher-tiny-1k-20260316T143100``)."""
    return f"{kind}-{account_name}-{now.astimezone(EXCHANGE_TZ):%Y%m%dT%H%M%S}"


def day_start(now: dt.datetime) -> dt.datetime:
    """Midnight US/Eastern of ``now``'s trading date, aware: where "today" starts for daily limits."""
    return dt.datetime.combine(exchange_date(now), dt.time(0), EXCHANGE_TZ)


class AccountLog(logging.LoggerAdapter):
    """Prefixes every message with the account, and sets ``record.account_name`` for handlers."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {})["account_name"] = self.extra["account_name"]
        return f"[{self.extra['account_name']}] {msg}", kwargs


def account_log(component: str, account_name: str) -> AccountLog:
    return AccountLog(logging.getLogger(f"ops_pipeline.{component}"), {"account_name": account_name})
