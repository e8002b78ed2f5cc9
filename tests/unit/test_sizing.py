"""The sizing formula of SPEC, each cap, and seed 003's examples."""

from decimal import Decimal

import pytest

from ops_pipeline.domain.gates import ReasonCode
from ops_pipeline.domain.sizing import size_gate, size_position


def size(**overrides):
    values = dict(premium_usd=Decimal("2.50"), equity_usd=Decimal("100000"), buying_power_usd=Decimal("100000"),
                  open_exposure_usd=Decimal("0"), risk_pct=0.01, max_risk_per_trade_pct=0.05, stop_loss_pct=0.25,
                  max_notional_exposure_usd=10000, contract_cap=10)
    values.update(overrides)
    return size_position(**values)


def test_seed_003_tiny_account_at_25_percent_buys_one_contract():
    sizing = size(equity_usd=Decimal("1000"), buying_power_usd=Decimal("1000"), risk_pct=0.25,
                  max_risk_per_trade_pct=0.10, max_notional_exposure_usd=1500, contract_cap=2)
    assert sizing.contracts == 1
    assert sizing.cost_usd == Decimal("250.00")


def test_seed_003_large_account_at_1_percent_buys_four_contracts():
    sizing = size(risk_pct=0.01)
    assert sizing.contracts == 4
    assert sizing.binding == "risk_budget"


@pytest.mark.parametrize(
    ("overrides", "binding", "contracts"),
    [
        ({"risk_pct": 0.02}, "risk_budget", 8),
        ({"risk_pct": 1.0, "max_risk_per_trade_pct": 0.001}, "stop_loss", 1),  # 100 / (250 × 0.25) = 1.6
        ({"risk_pct": 1.0, "open_exposure_usd": Decimal("9000")}, "exposure", 4),
        ({"risk_pct": 1.0, "buying_power_usd": Decimal("760")}, "buying_power", 3),
        ({"risk_pct": 1.0}, "contract_cap", 10),
    ],
)
def test_each_cap_binds_when_it_is_the_smallest(overrides, binding, contracts):
    sizing = size(**overrides)
    assert (sizing.binding, sizing.contracts) == (binding, contracts)


def test_ignoring_buying_power_drops_that_cap():
    sizing = size(risk_pct=1.0, buying_power_usd=Decimal("0"), ignore_buying_power=True)
    assert "buying_power" not in sizing.caps
    assert sizing.contracts == 10


def test_size_gate_denies_below_one_contract_with_the_numbers():
    sizing = size(equity_usd=Decimal("1000"), risk_pct=0.15)  # 150 / 250 → 0
    denial = size_gate(sizing)
    assert denial is not None and denial.code is ReasonCode.SIZE_BELOW_ONE_CONTRACT
    assert "risk_budget=0" in denial.detail and "cost=250.00" in denial.detail


def test_non_positive_premium_is_an_error():
    with pytest.raises(ValueError, match="premium must be positive"):
        size(premium_usd=Decimal("0"))


@pytest.mark.parametrize("seed", range(5))
def test_contracts_never_grow_with_the_premium(seed):
    """The entry decision skips every contract dearer than one sizing (or exposure, or buying
    power) denied; that holds only while the contract count never grows with the premium."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for _ in range(40):
        equity = Decimal(int(rng.integers(500, 150_000)))
        account = dict(equity_usd=equity, buying_power_usd=Decimal(int(rng.integers(0, int(equity) + 1))),
                       open_exposure_usd=Decimal(int(rng.integers(0, int(equity) + 1))),
                       risk_pct=float(rng.choice([0.01, 0.05, 0.15, 0.25])),
                       max_risk_per_trade_pct=float(rng.choice([0.01, 0.05, 0.10])),
                       stop_loss_pct=float(rng.choice([0.15, 0.25, 0.5])),
                       max_notional_exposure_usd=float(rng.integers(500, 200_000)),
                       contract_cap=int(rng.integers(1, 20)), ignore_buying_power=bool(rng.integers(0, 2)))
        counts = [size(premium_usd=Decimal(cents) / 100, **account).contracts for cents in range(1, 5001, 7)]
        assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)), account
