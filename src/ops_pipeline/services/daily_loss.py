"""The daily loss latch, shared by the dispatcher and the position manager: whichever run first sees
the day's loss at ``max_daily_loss`` stores the latch (SPEC "The dispatcher": no new entry that
exchange day, whatever the P&L does after). The rule itself is pure
(:func:`~ops_pipeline.domain.gates.daily_loss_reached`); this module stores it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from ops_pipeline.adapters.db.repositories import AccountRepository
from ops_pipeline.adapters.market_data.calendar import exchange_date
from ops_pipeline.config.models import AccountConfig
from ops_pipeline.domain.gates import DailyLossHalt, daily_loss_reached
from ops_pipeline.domain.values import money


def loss_reached(config: AccountConfig, realized: Decimal, unrealized: Decimal) -> bool:
    """True when the day's loss (dollars) reached the account's ``max_daily_loss``: a latch must be
    set or already is. Lets callers skip the write transaction on the usual day."""
    return daily_loss_reached(realized, unrealized, Decimal(str(config.risk.max_daily_loss)))


def latch_daily_loss(repo: AccountRepository, config: AccountConfig, realized: Decimal, unrealized: Decimal,
                     now: dt.datetime, run_id: str, log: Any) -> DailyLossHalt | None:
    """Today's latch in force: the stored one, or — if the day's loss reached ``max_daily_loss`` now
    (:func:`~ops_pipeline.domain.gates.daily_loss_reached`) — a new one stored through ``repo`` (in
    the caller's transaction). ``None`` while the day is within its limit. Shared by the dispatcher
    and the position manager, so whichever run first sees the loss sets it."""
    today = exchange_date(now)
    stored = repo.daily_loss_halt(today)
    if stored is not None or not loss_reached(config, realized, unrealized):
        return stored
    halt = DailyLossHalt(now, money(realized + unrealized), money(realized), Decimal(str(config.risk.max_daily_loss)))
    stored = repo.record_daily_loss_halt(trading_date=today, halt=halt, unrealized_usd=money(unrealized),
                                         action=config.risk.daily_loss_action.value, run_id=run_id)
    log.warning("daily loss limit reached: %s; no new entries until the next exchange day (%s)",
                stored.describe(), config.risk.daily_loss_action.value)
    return stored
