"""Every gate, passing and failing, with its reason code and numbers."""

import datetime as dt
from decimal import Decimal

import pytest

from ops_pipeline.domain import gates
from ops_pipeline.domain.gates import ReasonCode
from ops_pipeline.domain.values import AccountState, Action, StrategyType, Tier
from tests.factories import NOON, rec, risk, snapshot

CFG = risk(Tier.LARGE)


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


@pytest.mark.parametrize(("state", "code"), [(AccountState.PAUSED, ReasonCode.ACCOUNT_PAUSED),
                                             (AccountState.KILLED, ReasonCode.ACCOUNT_KILLED)])
def test_paused_or_killed_account_is_denied(state, code):
    assert gates.account_state_gate(state).code is code
    assert gates.account_state_gate(AccountState.ENABLED) is None


def test_action_not_allowed():
    cfg = risk(Tier.LARGE, allowed_actions=["BUY_CALL"])
    denial = gates.action_gate(rec(action=Action.BUY_PUT), cfg)
    assert denial.code is ReasonCode.ACTION_NOT_ALLOWED and "allowed=BUY_CALL" in denial.detail
    assert gates.action_gate(rec(action=Action.BUY_CALL), cfg) is None


def test_recommendation_older_than_lookback_is_stale():
    r = rec(created_at=NOON - minutes(61))
    assert gates.recommendation_age_gate(r, CFG, NOON).code is ReasonCode.RECOMMENDATION_STALE
    assert gates.recommendation_age_gate(rec(created_at=NOON - minutes(59)), CFG, NOON) is None


def test_bar_and_feature_age_are_measured_at_creation():
    old_bar = rec(bar_time=NOON - dt.timedelta(seconds=121))
    assert gates.data_freshness_gate(old_bar, CFG).code is ReasonCode.BAR_STALE
    old_features = rec(feature_time=NOON - dt.timedelta(seconds=301))
    assert gates.data_freshness_gate(old_features, CFG).code is ReasonCode.FEATURES_STALE
    assert gates.data_freshness_gate(rec(bar_time=NOON - dt.timedelta(seconds=60)), CFG) is None


def test_confidence_floor_is_the_higher_of_tier_and_strategy():
    # day trades need max(0.45, 0.60) = 0.60; swing trades max(0.45, 0.40) = 0.45
    day = rec(strategy_type=StrategyType.DAY_TRADE, confidence=0.59)
    assert gates.confidence_gate(day, CFG).code is ReasonCode.CONFIDENCE_TOO_LOW
    assert gates.confidence_gate(rec(strategy_type=StrategyType.DAY_TRADE, confidence=0.60), CFG) is None
    assert gates.confidence_gate(rec(strategy_type=StrategyType.SWING_TRADE, confidence=0.44), CFG) is not None
    assert gates.confidence_gate(rec(strategy_type=StrategyType.SWING_TRADE, confidence=0.45), CFG) is None


def test_volume_ratio_below_tier_minimum():
    tiny = risk(Tier.TINY)
    denial = gates.volume_ratio_gate(rec(volume_ratio=1.9), tiny)
    assert denial.code is ReasonCode.VOLUME_RATIO_TOO_LOW and "min=2.00" in denial.detail
    assert gates.volume_ratio_gate(rec(volume_ratio=2.0), tiny) is None


def test_ticker_cooldown():
    account = snapshot(last_trade_at_by_ticker={"SPY": NOON - minutes(14)})
    assert gates.cooldown_gate(rec(), account, CFG, NOON).code is ReasonCode.TICKER_COOLDOWN
    later = snapshot(last_trade_at_by_ticker={"SPY": NOON - minutes(15)})
    assert gates.cooldown_gate(rec(), later, CFG, NOON) is None
    assert gates.cooldown_gate(rec(ticker="QQQ"), account, CFG, NOON) is None


def test_trades_per_ticker_per_day():
    account = snapshot(trades_today_by_ticker={"SPY": 2})
    assert gates.ticker_daily_limit_gate(rec(), account, CFG).code is ReasonCode.TICKER_DAILY_LIMIT
    assert gates.ticker_daily_limit_gate(rec(), snapshot(trades_today_by_ticker={"SPY": 1}), CFG) is None


def test_open_positions_at_limit():
    assert gates.open_positions_gate(snapshot(open_positions=5), CFG).code is ReasonCode.MAX_OPEN_POSITIONS
    assert gates.open_positions_gate(snapshot(open_positions=4), CFG) is None


def test_daily_loss_counts_realized_and_unrealized():
    hit = snapshot(realized_pnl_today_usd=Decimal("-300"), unrealized_pnl_usd=Decimal("-200"))
    denial = gates.daily_loss_gate(hit, CFG)
    assert denial.code is ReasonCode.DAILY_LOSS_LIMIT
    assert denial.detail == "day P&L \u2212500.00 (realized \u2212300.00, unrealized \u2212200.00), max 500.00"
    assert gates.daily_loss_gate(snapshot(realized_pnl_today_usd=Decimal("-499.99")), CFG) is None


def test_an_unrealized_gain_does_not_undo_a_realized_loss_past_the_limit():
    # the seen case: realized -616 by 11:23, an open position's gain lifting the total above -500
    assert gates.daily_loss_reached(Decimal("-616"), Decimal("+200"), Decimal("500"))
    assert not gates.daily_loss_reached(Decimal("-400"), Decimal("+50"), Decimal("500"))
    assert gates.daily_loss_reached(Decimal("-400"), Decimal("-100"), Decimal("500"))


def test_a_latched_day_denies_whatever_the_pnl_does_after_and_quotes_the_latch():
    halt = gates.DailyLossHalt(dt.datetime(2026, 3, 19, 15, 23, tzinfo=dt.UTC), Decimal("-616.00"), Decimal("-616.00"),
                               Decimal("500"))
    recovered = snapshot(realized_pnl_today_usd=Decimal("-616"), unrealized_pnl_usd=Decimal("+900"), daily_loss_halt=halt)
    denial = gates.daily_loss_gate(recovered, CFG)
    assert str(denial) == "daily_loss_limit: halted 11:23 ET at day P&L \u2212616.00, max 500.00"



def test_exposure_gate_reports_open_new_and_max():
    denial = gates.exposure_gate(Decimal("9200"), Decimal("1050"), CFG)
    assert str(denial) == "exposure_limit: open=9200.00 new=1050.00 max=10000.00"
    assert gates.exposure_gate(Decimal("8950"), Decimal("1050"), CFG) is None


def test_buying_power_gate_and_its_paper_override():
    assert gates.buying_power_gate(Decimal("200"), Decimal("250"), CFG).code is ReasonCode.INSUFFICIENT_BUYING_POWER
    assert gates.buying_power_gate(Decimal("250"), Decimal("250"), CFG) is None
    assert gates.buying_power_gate(Decimal("0"), Decimal("250"), risk(Tier.LARGE, paper_ignore_buying_power=True)) is None


def test_pre_contract_gates_run_in_spec_order():
    # paused AND stale AND low confidence: the account state is reported first
    r = rec(created_at=NOON - minutes(90), confidence=0.1)
    assert gates.pre_contract_gates(r, snapshot(state=AccountState.PAUSED), CFG, NOON).code is ReasonCode.ACCOUNT_PAUSED
    assert gates.pre_contract_gates(r, snapshot(), CFG, NOON).code is ReasonCode.RECOMMENDATION_STALE
    assert gates.pre_contract_gates(rec(), snapshot(), CFG, NOON) is None
