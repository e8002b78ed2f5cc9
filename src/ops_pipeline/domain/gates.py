"""The dispatcher's gates: values in, a decision out; no database, broker or clock.

Each gate returns ``None`` when it passes, or a :class:`Denied` carrying a stable reason code and
the numbers behind it (``exposure_limit: open=9200.00 new=1050.00 max=10000.00``). The order of
:func:`pre_contract_gates` and of the calls in the dispatcher is SPEC "The dispatcher":

account paused/killed → action not allowed → recommendation too old → bar/features too old →
confidence → volume ratio → ticker cooldown → trades per ticker per day → open positions →
daily loss → (contract quality) → exposure → buying power → size below one contract.

The daily loss gate is a latch (:class:`DailyLossHalt`): once the day's loss reached the limit at
any run, the account opens nothing more that exchange day, whatever the P&L does after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from ops_pipeline.config.models import RiskConfig
from ops_pipeline.domain.market import Recommendation
from ops_pipeline.domain.values import EXCHANGE_TZ, AccountState

MINUS = "\u2212"


class ReasonCode(StrEnum):
    """Why a recommendation was not executed for an account (stored in ``dispatch_decisions``)."""

    ACCOUNT_PAUSED = "account_paused"
    ACCOUNT_KILLED = "account_killed"
    ACCOUNT_DISABLED = "account_disabled"
    ACTION_NOT_ALLOWED = "action_not_allowed"
    RECOMMENDATION_STALE = "recommendation_stale"
    BAR_STALE = "bar_stale"
    FEATURES_STALE = "features_stale"
    CONFIDENCE_TOO_LOW = "confidence_too_low"
    VOLUME_RATIO_TOO_LOW = "volume_ratio_too_low"
    TICKER_COOLDOWN = "ticker_cooldown"
    TICKER_DAILY_LIMIT = "ticker_daily_limit"
    MAX_OPEN_POSITIONS = "max_open_positions"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    NO_QUALITY_CONTRACT = "no_quality_contract"
    EXPOSURE_LIMIT = "exposure_limit"
    INSUFFICIENT_BUYING_POWER = "insufficient_buying_power"
    SIZE_BELOW_ONE_CONTRACT = "size_below_one_contract"
    ORDER_REJECTED = "order_rejected"
    ORDER_EXPIRED = "order_expired"
    """The order never filled: the broker let it expire or cancelled it, or it never reached the
    broker and the recommendation was too old to send it again."""
    BROKER_ERROR = "broker_error"
    INVALID_RECOMMENDATION = "invalid_recommendation"


@dataclass(frozen=True, slots=True)
class Denied:
    """A gate's refusal: a stable code and the numbers that decided it."""

    code: ReasonCode
    detail: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account's state when a recommendation is judged; every number is this account's only.

    Attributes:
        state: enabled / paused / killed.
        daily_loss_halt: today's latched daily-loss halt, if the account has one.
        equity_usd, buying_power_usd: from the broker, dollars.
        open_positions: open or closing positions plus orders sent but not yet positioned.
        open_exposure_usd: notional of the same, dollars.
        realized_pnl_today_usd: P&L of positions closed today (exchange date), dollars.
        unrealized_pnl_usd: P&L of open positions at the latest marks, dollars.
        trades_today_by_ticker: executions placed today per underlying.
        last_trade_at_by_ticker: time of the latest execution per underlying, aware.
    """

    state: AccountState
    equity_usd: Decimal
    buying_power_usd: Decimal
    open_positions: int
    open_exposure_usd: Decimal
    realized_pnl_today_usd: Decimal
    unrealized_pnl_usd: Decimal
    trades_today_by_ticker: Mapping[str, int] = field(default_factory=dict)
    last_trade_at_by_ticker: Mapping[str, dt.datetime] = field(default_factory=dict)
    daily_loss_halt: DailyLossHalt | None = None

    @property
    def pnl_today_usd(self) -> Decimal:
        return self.realized_pnl_today_usd + self.unrealized_pnl_usd


def _signed(value: Decimal) -> str:
    return f"{MINUS}{-value:.2f}" if value < 0 else f"{value:.2f}"


@dataclass(frozen=True, slots=True)
class DailyLossHalt:
    """The latch of one account for one exchange day: set at the first run at which the day's loss
    reached the limit, kept (stored) until the next exchange day.

    Attributes:
        halted_at: the run's time, aware.
        day_pnl_usd: realized today + unrealized at that run, dollars (negative: a loss).
        realized_pnl_usd: the realized part, dollars.
        max_daily_loss_usd: the limit then in force, dollars (positive).
    """

    halted_at: dt.datetime
    day_pnl_usd: Decimal
    realized_pnl_usd: Decimal
    max_daily_loss_usd: Decimal

    def describe(self) -> str:
        """``halted 11:23 ET at day P&L −616.00, max 500.00``; when the realized loss alone reached the
        limit (an open gain offsetting it), also ``(realized −604.00)``."""
        realized = "" if self.day_pnl_usd <= -self.max_daily_loss_usd else f" (realized {_signed(self.realized_pnl_usd)})"
        return (f"halted {self.halted_at.astimezone(EXCHANGE_TZ):%H:%M} ET at day P&L {_signed(self.day_pnl_usd)}"
                f"{realized}, max {self.max_daily_loss_usd:.2f}")


def daily_loss_reached(realized_usd: Decimal, unrealized_usd: Decimal, max_daily_loss_usd: Decimal) -> bool:
    """True when the day's loss reached ``max_daily_loss_usd`` (dollars, positive).

    The day's P&L is realized today plus unrealized (SPEC). A realized loss at the limit counts on
    its own too: an unrealized gain on a position still open is not money, and must not reopen a
    day that has already lost its limit.
    """
    limit = -abs(max_daily_loss_usd)
    return realized_usd + unrealized_usd <= limit or realized_usd <= limit


def account_state_gate(state: AccountState) -> Denied | None:
    if state is AccountState.KILLED:
        return Denied(ReasonCode.ACCOUNT_KILLED, "emergency stop is active for this account")
    if state is AccountState.PAUSED:
        return Denied(ReasonCode.ACCOUNT_PAUSED, "account is paused")
    if state is AccountState.DISABLED:
        return Denied(ReasonCode.ACCOUNT_DISABLED, "account is disabled")
    return None


def action_gate(rec: Recommendation, cfg: RiskConfig) -> Denied | None:
    if rec.action not in cfg.allowed_actions:
        allowed = ",".join(a.value for a in cfg.allowed_actions)
        return Denied(ReasonCode.ACTION_NOT_ALLOWED, f"action={rec.action.value} allowed={allowed}")
    return None


def recommendation_age_gate(rec: Recommendation, cfg: RiskConfig, now: dt.datetime) -> Denied | None:
    """The recommendation must be younger than ``lookback_window_minutes`` at decision time."""
    age_min = (now - rec.created_at).total_seconds() / 60
    if age_min > cfg.lookback_window_minutes:
        return Denied(
            ReasonCode.RECOMMENDATION_STALE,
            f"age={age_min:.1f}min max={cfg.lookback_window_minutes}min",
        )
    return None


def data_freshness_gate(rec: Recommendation, cfg: RiskConfig) -> Denied | None:
    """The signal must have been computed from fresh data.

    Bar age is measured from the end of the bar to the recommendation's creation, feature age from
    the feature time to the creation: the seeds' ``max_bar_age_seconds`` (120) could never pass for
    accounts that run every 5 minutes if measured at decision time, and the age of the decision
    itself is the lookback gate's job.
    """
    bar_age = (rec.created_at - rec.bar_time).total_seconds()
    if bar_age > cfg.max_bar_age_seconds:
        return Denied(ReasonCode.BAR_STALE, f"bar_age={bar_age:.0f}s max={cfg.max_bar_age_seconds}s")
    feature_age = (rec.created_at - rec.feature_time).total_seconds()
    if feature_age > cfg.max_feature_age_seconds:
        return Denied(
            ReasonCode.FEATURES_STALE,
            f"feature_age={feature_age:.0f}s max={cfg.max_feature_age_seconds}s",
        )
    return None


def confidence_gate(rec: Recommendation, cfg: RiskConfig) -> Denied | None:
    floor = cfg.confidence_floor(rec.strategy_type)
    if rec.confidence < floor:
        return Denied(
            ReasonCode.CONFIDENCE_TOO_LOW,
            f"confidence={rec.confidence:.3f} min={floor:.2f} ({rec.strategy_type.value})",
        )
    return None


def volume_ratio_gate(rec: Recommendation, cfg: RiskConfig) -> Denied | None:
    if rec.volume_ratio < cfg.min_volume_ratio:
        return Denied(
            ReasonCode.VOLUME_RATIO_TOO_LOW,
            f"volume_ratio={rec.volume_ratio:.2f} min={cfg.min_volume_ratio:.2f}",
        )
    return None


def cooldown_gate(
    rec: Recommendation, account: AccountSnapshot, cfg: RiskConfig, now: dt.datetime
) -> Denied | None:
    last = account.last_trade_at_by_ticker.get(rec.ticker)
    if last is None:
        return None
    since_min = (now - last).total_seconds() / 60
    if since_min < cfg.ticker_cooldown_minutes:
        return Denied(
            ReasonCode.TICKER_COOLDOWN,
            f"ticker={rec.ticker} last_trade={since_min:.1f}min_ago cooldown={cfg.ticker_cooldown_minutes}min",
        )
    return None


def ticker_daily_limit_gate(rec: Recommendation, account: AccountSnapshot, cfg: RiskConfig) -> Denied | None:
    count = account.trades_today_by_ticker.get(rec.ticker, 0)
    if count >= cfg.max_trades_per_ticker_per_day:
        return Denied(
            ReasonCode.TICKER_DAILY_LIMIT,
            f"ticker={rec.ticker} trades_today={count} max={cfg.max_trades_per_ticker_per_day}",
        )
    return None


def open_positions_gate(account: AccountSnapshot, cfg: RiskConfig) -> Denied | None:
    if account.open_positions >= cfg.max_open_positions:
        return Denied(
            ReasonCode.MAX_OPEN_POSITIONS,
            f"open={account.open_positions} max={cfg.max_open_positions}",
        )
    return None


def daily_loss_gate(account: AccountSnapshot, cfg: RiskConfig) -> Denied | None:
    """No entry once today's latch is set, or when the day's loss reaches ``max_daily_loss`` now
    (the caller stores that as the latch). Every later denial quotes the latch."""
    if account.daily_loss_halt is not None:
        return Denied(ReasonCode.DAILY_LOSS_LIMIT, account.daily_loss_halt.describe())
    limit = Decimal(str(cfg.max_daily_loss))
    if daily_loss_reached(account.realized_pnl_today_usd, account.unrealized_pnl_usd, limit):
        return Denied(
            ReasonCode.DAILY_LOSS_LIMIT,
            f"day P&L {_signed(account.pnl_today_usd)} (realized {_signed(account.realized_pnl_today_usd)}, "
            f"unrealized {_signed(account.unrealized_pnl_usd)}), max {limit:.2f}",
        )
    return None


def pre_contract_gates(
    rec: Recommendation, account: AccountSnapshot, cfg: RiskConfig, now: dt.datetime
) -> Denied | None:
    """Every gate that does not need a contract, in SPEC order; the first denial wins."""
    for denial in (
        account_state_gate(account.state),
        action_gate(rec, cfg),
        recommendation_age_gate(rec, cfg, now),
        data_freshness_gate(rec, cfg),
        confidence_gate(rec, cfg),
        volume_ratio_gate(rec, cfg),
        cooldown_gate(rec, account, cfg, now),
        ticker_daily_limit_gate(rec, account, cfg),
        open_positions_gate(account, cfg),
        daily_loss_gate(account, cfg),
    ):
        if denial is not None:
            return denial
    return None


def exposure_gate(open_exposure_usd: Decimal, contract_cost_usd: Decimal, cfg: RiskConfig) -> Denied | None:
    """One more contract must fit under ``max_notional_exposure``."""
    limit = Decimal(str(cfg.max_notional_exposure))
    if open_exposure_usd + contract_cost_usd > limit:
        return Denied(
            ReasonCode.EXPOSURE_LIMIT,
            f"open={open_exposure_usd:.2f} new={contract_cost_usd:.2f} max={limit:.2f}",
        )
    return None


def buying_power_gate(buying_power_usd: Decimal, contract_cost_usd: Decimal, cfg: RiskConfig) -> Denied | None:
    """One contract must be affordable, unless ``paper_ignore_buying_power``."""
    if cfg.paper_ignore_buying_power:
        return None
    if buying_power_usd < contract_cost_usd:
        return Denied(
            ReasonCode.INSUFFICIENT_BUYING_POWER,
            f"buying_power={buying_power_usd:.2f} cost={contract_cost_usd:.2f}",
        )
    return None
