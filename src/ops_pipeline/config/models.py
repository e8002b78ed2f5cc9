"""Configuration models: tier defaults, the per-tier risk parameters, accounts.

Every model is frozen and forbids unknown keys: a typo must stop startup, not fall back to a
default (SPEC "Per-tier configuration"). Fractions are fractions (0.25 = 25 %), dollars are
dollars, times are minutes or seconds as the key says.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ops_pipeline.domain.recommendations import TICKER_PATTERN
from ops_pipeline.domain.values import AccountState, Action, DailyLossAction, StrategyType, Tier
from ops_pipeline.errors import ConfigError

Fraction = Annotated[float, Field(gt=0, le=1)]
"""A fraction in (0, 1]: 0.25 means 25 %."""
Probability = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveDollars = Annotated[float, Field(gt=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# Tier defaults in code: seed 001 ("Account Tier Definitions", the latest), small and medium filled
# in between (SPEC "Tiers"), plus the per-tier parameter-store values of seed 000 so that a missing
# parameter falls back to the same numbers the shipped parameter files hold.
TIER_DEFAULTS: dict[Tier, dict[str, Any]] = {
    Tier.TINY: {
        "max_size": 2000, "risk_pct_day": 0.15, "risk_pct_swing": 0.08, "max_contracts": 1,
        "min_confidence": 0.45, "min_volume_ratio": 2.0,
        "max_notional_exposure": 1500, "max_open_positions": 2, "max_daily_loss": 100,
        "max_risk_per_trade_pct": 0.10,
    },
    Tier.SMALL: {
        "max_size": 5000, "risk_pct_day": 0.12, "risk_pct_swing": 0.06, "max_contracts": 3,
        "min_confidence": 0.45, "min_volume_ratio": 1.6,
        "max_notional_exposure": 4000, "max_open_positions": 3, "max_daily_loss": 200,
        "max_risk_per_trade_pct": 0.08,
    },
    Tier.MEDIUM: {
        "max_size": 25000, "risk_pct_day": 0.04, "risk_pct_swing": 0.03, "max_contracts": 5,
        "min_confidence": 0.45, "min_volume_ratio": 1.4,
        "max_notional_exposure": 15000, "max_open_positions": 4, "max_daily_loss": 300,
        "max_risk_per_trade_pct": 0.06,
    },
    Tier.LARGE: {
        "max_size": None, "risk_pct_day": 0.01, "risk_pct_swing": 0.02, "max_contracts": 10,
        "min_confidence": 0.45, "min_volume_ratio": 1.2,
        "max_notional_exposure": 10000, "max_open_positions": 5, "max_daily_loss": 500,
        "max_risk_per_trade_pct": 0.05,
    },
}

# The same for every tier (SPEC "Per-tier configuration", "All tiers").
ALL_TIER_DEFAULTS: dict[str, Any] = {
    "ticker_cooldown_minutes": 15,
    "confidence_min_options_swing": 0.40,
    "confidence_min_options_daytrade": 0.60,
    "allowed_actions": ["BUY_CALL", "BUY_PUT"],
    "paper_ignore_buying_power": False,
    "max_signals_per_run": 10,
    "max_trades_per_ticker_per_day": 2,
    "lookback_window_minutes": 60,
    "processing_ttl_minutes": 10,
    "max_bar_age_seconds": 120,
    "max_feature_age_seconds": 300,
    "stop_loss_pct": 0.25,
    "take_profit_pct": 0.50,
    "min_quality_score": 40.0,
    "daily_loss_action": "halt",
}


class RiskConfig(_Frozen):
    """The effective risk parameters of one account: tier defaults merged with the parameter store.

    ``max_contracts_per_trade`` (parameter store) overrides the tier's ``max_contracts`` when set
    (seed 000: tiny "can execute 1–2 contract trades"); read :attr:`contract_cap`.
    """

    account_tier: Tier
    # tier defaults (seed 001)
    max_size: PositiveDollars | None = Field(description="largest equity for this tier, dollars; None = unlimited")
    risk_pct_day: Fraction
    risk_pct_swing: Fraction
    max_contracts: PositiveInt
    min_confidence: Probability
    min_volume_ratio: Annotated[float, Field(gt=0)]
    # parameter store (seed 000 / seed 001 "SSM Configuration Schema")
    max_notional_exposure: PositiveDollars
    max_open_positions: PositiveInt
    max_contracts_per_trade: PositiveInt | None = None
    max_daily_loss: PositiveDollars
    max_risk_per_trade_pct: Fraction
    ticker_cooldown_minutes: Annotated[int, Field(ge=0)]
    confidence_min_options_swing: Probability
    confidence_min_options_daytrade: Probability
    allowed_actions: tuple[Action, ...]
    paper_ignore_buying_power: bool
    max_signals_per_run: PositiveInt
    max_trades_per_ticker_per_day: PositiveInt
    lookback_window_minutes: PositiveInt
    processing_ttl_minutes: PositiveInt
    max_bar_age_seconds: PositiveInt
    max_feature_age_seconds: PositiveInt
    stop_loss_pct: Fraction
    take_profit_pct: Fraction
    min_quality_score: Annotated[float, Field(ge=0, le=100)]
    daily_loss_action: DailyLossAction = Field(
        DailyLossAction.HALT, description="halt: no new entries once the day's loss reached max_daily_loss; "
                                          "flatten: also sell every open position at the bid")

    @field_validator("daily_loss_action", mode="before")
    @classmethod
    def _daily_loss_action(cls, value: Any) -> Any:
        if isinstance(value, str) and value in {a.value for a in DailyLossAction}:
            return DailyLossAction(value)
        if isinstance(value, DailyLossAction):
            return value
        raise ValueError(f"must be halt or flatten, not {value!r}")

    @field_validator("allowed_actions", mode="before")
    @classmethod
    def _actions(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("must list at least one of BUY_CALL, BUY_PUT")
            unknown = [v for v in value if v not in {a.value for a in Action}]
            if unknown:
                raise ValueError(f"unknown actions {unknown}; allowed: BUY_CALL, BUY_PUT")
            return tuple(Action(v) for v in value)
        return value

    @property
    def contract_cap(self) -> int:
        """Most contracts one trade may buy."""
        return self.max_contracts_per_trade or self.max_contracts

    def risk_pct(self, strategy: StrategyType) -> float:
        """Fraction of equity a trade of this strategy may cost (seed 001 ``risk_pct_*``)."""
        return self.risk_pct_day if strategy is StrategyType.DAY_TRADE else self.risk_pct_swing

    def confidence_floor(self, strategy: StrategyType) -> float:
        """max(tier ``min_confidence``, the strategy's options threshold) (SPEC "The dispatcher")."""
        by_strategy = (
            self.confidence_min_options_daytrade
            if strategy is StrategyType.DAY_TRADE
            else self.confidence_min_options_swing
        )
        return max(self.min_confidence, by_strategy)


def merge_risk_config(tier: Tier, parameters: dict[str, Any], *, source: str) -> RiskConfig:
    """Merge code defaults for ``tier`` with ``parameters`` (parameters win) and validate.

    Raises:
        ConfigError: listing every violation at once, each naming its key and ``source``.
    """
    merged: dict[str, Any] = {**ALL_TIER_DEFAULTS, **TIER_DEFAULTS[tier], **parameters}
    declared = merged.get("account_tier", tier.value)
    if declared != tier.value:
        raise ConfigError(
            f"{source}: account_tier is {declared!r} but this account's tier is {tier.value!r}"
        )
    merged["account_tier"] = tier
    try:
        return RiskConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, source=source) from None


class Schedule(_Frozen):
    """When an account's runs fire: every ``every_minutes`` minutes at ``offset_minutes`` past.

    Seed 002 "Stagger Schedulers": large every minute; tiny, small, medium every 5 minutes at
    offsets 0, 1, 2.
    """

    every_minutes: Annotated[int, Field(gt=0, le=60)] = 5
    offset_minutes: Annotated[int, Field(ge=0, lt=60)] = 0

    @model_validator(mode="after")
    def _offset_inside_period(self) -> Schedule:
        if self.offset_minutes >= self.every_minutes:
            raise ValueError(
                f"offset_minutes ({self.offset_minutes}) must be below every_minutes ({self.every_minutes})"
            )
        return self

    def fires_at(self, minute_of_day: int) -> bool:
        """True when a run is due at ``minute_of_day`` (minutes since midnight, exchange time)."""
        return minute_of_day % self.every_minutes == self.offset_minutes


class SignalSettings(_Frozen):
    """The live signal engine's settings: the accounts file's ``[signals]`` table.

    ``tickers``: the symbols whose 1-minute bars it reads every minute (default SPY and QQQ, the
    replay's default).
    """

    tickers: Annotated[tuple[str, ...], Field(min_length=1, max_length=50)] = ("SPY", "QQQ")

    @field_validator("tickers", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("tickers")
    @classmethod
    def _normalised(cls, tickers: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in tickers if not TICKER_PATTERN.match(t)]
        if bad:
            raise ValueError(f"not normalised symbols (upper-case, e.g. SPY): {', '.join(map(repr, bad))}")
        if len(set(tickers)) != len(tickers):
            raise ValueError("a ticker is listed twice")
        return tickers


class AccountSpec(_Frozen):
    """One account as the accounts file declares it."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,48}$")]
    tier: Tier
    initial_balance: Annotated[Decimal, Field(gt=0)]
    schedule: Schedule = Schedule()
    state: str = "enabled"
    """The state the account starts in when first registered; afterwards the database's state
    (``ops-pipeline accounts …``, ``kill``) is the one in force."""
    notes: str = ""

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, value: Any) -> Any:
        valid = [t.value for t in Tier]
        if value not in valid:
            raise ValueError(f"unknown tier {value!r}; valid tiers: {', '.join(valid)}")
        return Tier(value)

    @field_validator("initial_balance", mode="before")
    @classmethod
    def _balance(cls, value: Any) -> Any:
        return Decimal(str(value)) if isinstance(value, int | float) else value

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        if value not in {s.value for s in AccountState}:
            raise ValueError("state must be enabled, paused, killed or disabled")
        return value


class AccountConfig(_Frozen):
    """What one account's runs need: who it is and its effective risk parameters."""

    account: AccountSpec
    risk: RiskConfig
    parameter_source: str
    parameter_version: str | None = None
    parameter_keys: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.account.name

    def expected_tier_for(self, equity_usd: Decimal) -> Tier:
        """The tier the equity says the account should be in (tiny ≤ $2K, small ≤ $5K, …)."""
        for tier in (Tier.TINY, Tier.SMALL, Tier.MEDIUM):
            if equity_usd <= Decimal(str(TIER_DEFAULTS[tier]["max_size"])):
                return tier
        return Tier.LARGE
