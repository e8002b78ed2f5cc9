"""Builders of domain values for tests, with sensible defaults and keyword overrides."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from ops_pipeline.config.models import AccountConfig, AccountSpec, RiskConfig, Schedule, merge_risk_config
from ops_pipeline.domain.gates import AccountSnapshot
from ops_pipeline.domain.market import OptionQuote, QuoteSource, Recommendation
from ops_pipeline.domain.values import AccountState, Action, OccSymbol, OptionType, StrategyType, Tier

# Monday 2026-03-16 12:00 US/Eastern (16:00 UTC, DST in force).
NOON = dt.datetime(2026, 3, 16, 16, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 3, 16)


def risk(tier: Tier = Tier.LARGE, **overrides: Any) -> RiskConfig:
    return merge_risk_config(tier, overrides, source="test")


def account_config(name: str = "large-100k", tier: Tier = Tier.LARGE, balance: int = 100_000,
                   schedule: Schedule | None = None, **overrides: Any) -> AccountConfig:
    spec = AccountSpec(name=name, tier=tier, initial_balance=Decimal(balance), schedule=schedule or Schedule(every_minutes=1))
    return AccountConfig(account=spec, risk=risk(tier, **overrides), parameter_source="test")


def rec(**overrides: Any) -> Recommendation:
    values: dict[str, Any] = {
        "id": 1, "ticker": "SPY", "action": Action.BUY_CALL, "strategy_type": StrategyType.SWING_TRADE,
        "confidence": 0.75, "volume_ratio": 2.5, "bar_time": NOON, "feature_time": NOON, "created_at": NOON,
        "underlying_price": Decimal("660.00"),
    }
    values.update(overrides)
    return Recommendation(**values)


def snapshot(**overrides: Any) -> AccountSnapshot:
    values: dict[str, Any] = {
        "state": AccountState.ENABLED, "equity_usd": Decimal("100000"), "buying_power_usd": Decimal("100000"),
        "open_positions": 0, "open_exposure_usd": Decimal("0"), "realized_pnl_today_usd": Decimal("0"),
        "unrealized_pnl_usd": Decimal("0"),
    }
    values.update(overrides)
    return AccountSnapshot(**values)


def quote(symbol: str = "SPY260327C00660000", bid: str = "2.46", ask: str = "2.50", *, volume: int | None = 5000,
          open_interest: int | None = 20000, delta: float | None = 0.45, at: dt.datetime = NOON,
          source: QuoteSource = QuoteSource.REAL) -> OptionQuote:
    return OptionQuote(
        symbol=OccSymbol.parse(symbol), bid=Decimal(bid), ask=Decimal(ask), volume=volume, open_interest=open_interest,
        iv=0.2, delta=delta, underlying_price=Decimal("660"), quote_time=at, source=source,
        snapshot="test" if source is QuoteSource.REAL else None,
    )


def occ(underlying: str, expiration: dt.date, option_type: OptionType, strike: str) -> str:
    return str(OccSymbol(underlying, expiration, option_type, Decimal(strike)))
