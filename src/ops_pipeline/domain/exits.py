"""Exit rules for an open long option position (seed 004; SPEC "The position manager" step 3).

- stop: the bid is at or below the stop price;
- target: the bid is at or above the target price;
- day trades: inside the last :data:`EXIT_BEFORE_CLOSE_MINUTES` minutes of the session;
- swing trades: inside the last :data:`EXIT_BEFORE_CLOSE_MINUTES` minutes of the session on or
  after the contract's expiration date.

Price exits need a bid (a contract with no bid cannot be sold); time exits do not.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum

from ops_pipeline.domain.values import StrategyType, money

EXIT_BEFORE_CLOSE_MINUTES = 15


class ExitReason(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    END_OF_DAY = "end_of_day"
    BEFORE_EXPIRY = "before_expiry"
    NOT_AT_BROKER = "not_at_broker"
    EXPIRED = "expired"
    DAILY_LOSS_FLATTEN = "daily_loss_flatten"
    """The day's loss reached the limit with ``daily_loss_action = flatten``: sold at the bid."""
    KILL_FLATTEN = "kill_flatten"
    """The account was killed with ``--flatten`` (emergency stop): sold at the bid."""


def stop_and_target(entry_usd: Decimal, stop_loss_pct: float, take_profit_pct: float) -> tuple[Decimal, Decimal]:
    """Stop and target prices (dollars per share, cents) from the entry premium.

    Seed 004: entry 4.80 with 25 % / 50 % → stop 3.60, target 7.20.
    """
    stop = money(entry_usd * (1 - Decimal(str(stop_loss_pct))))
    target = money(entry_usd * (1 + Decimal(str(take_profit_pct))))
    return stop, target


def exit_reason(
    *,
    strategy: StrategyType,
    bid_usd: Decimal | None,
    stop_usd: Decimal,
    target_usd: Decimal,
    minutes_to_close: float,
    today: dt.date,
    expiration: dt.date,
) -> ExitReason | None:
    """Decide whether to close now.

    Args:
        bid_usd: the current bid per share, ``None`` or ``0`` when there is no bid.
        minutes_to_close: minutes until the session's close (exchange time).
        today: the exchange date now.
        expiration: the contract's expiration date.
    """
    if bid_usd is not None and bid_usd > 0:
        if bid_usd <= stop_usd:
            return ExitReason.STOP_LOSS
        if bid_usd >= target_usd:
            return ExitReason.TAKE_PROFIT
    near_close = minutes_to_close <= EXIT_BEFORE_CLOSE_MINUTES
    if strategy is StrategyType.DAY_TRADE and near_close:
        return ExitReason.END_OF_DAY
    if strategy is StrategyType.SWING_TRADE and near_close and today >= expiration:
        return ExitReason.BEFORE_EXPIRY
    return None
