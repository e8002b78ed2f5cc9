"""Position sizing: how many contracts one trade buys (SPEC "The dispatcher", Sizing).

``cost`` is one contract's price in dollars (premium × 100)::

    contracts = min(
        floor(equity × risk_pct[strategy] / cost),                        # risk budget
        floor(equity × max_risk_per_trade_pct / (cost × stop_loss_pct)), # loss at the stop
        floor((max_notional_exposure − open_exposure) / cost),           # exposure room
        floor(buying_power / cost),                                      # buying power
        max_contracts_per_trade)                                         # contract cap

Seed 003 "Test 2: Position Sizing": $1K, $2.50 premium, 25 % → 1 contract; $100K, $2.50, 1 % → 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from ops_pipeline.domain.gates import Denied, ReasonCode
from ops_pipeline.domain.values import contract_cost


def _floor(value: Decimal) -> int:
    return max(0, int(value.to_integral_value(rounding=ROUND_FLOOR)))


def risk_budget_cap(equity_usd: Decimal, risk_pct: float, cost_usd: Decimal) -> int:
    """Contracts that fit in ``equity × risk_pct`` (risk_pct a fraction)."""
    return _floor(equity_usd * Decimal(str(risk_pct)) / cost_usd)


def stop_loss_cap(equity_usd: Decimal, max_risk_per_trade_pct: float, cost_usd: Decimal, stop_loss_pct: float) -> int:
    """Contracts whose loss at the stop stays within ``equity × max_risk_per_trade_pct``."""
    loss_per_contract = cost_usd * Decimal(str(stop_loss_pct))
    return _floor(equity_usd * Decimal(str(max_risk_per_trade_pct)) / loss_per_contract)


def exposure_cap(max_notional_exposure_usd: float, open_exposure_usd: Decimal, cost_usd: Decimal) -> int:
    """Contracts that fit in the room left under ``max_notional_exposure``."""
    return _floor((Decimal(str(max_notional_exposure_usd)) - open_exposure_usd) / cost_usd)


def buying_power_cap(buying_power_usd: Decimal, cost_usd: Decimal) -> int:
    """Contracts the buying power pays for."""
    return _floor(buying_power_usd / cost_usd)


@dataclass(frozen=True, slots=True)
class Sizing:
    """The result of sizing: each cap in contracts, the minimum, and which cap bound it."""

    cost_usd: Decimal
    caps: dict[str, int]
    contracts: int
    binding: str

    def describe(self) -> str:
        parts = " ".join(f"{name}={value}" for name, value in self.caps.items())
        return f"contracts={self.contracts} cost={self.cost_usd:.2f} {parts} binding={self.binding}"


def size_position(
    *,
    premium_usd: Decimal,
    equity_usd: Decimal,
    buying_power_usd: Decimal,
    open_exposure_usd: Decimal,
    risk_pct: float,
    max_risk_per_trade_pct: float,
    stop_loss_pct: float,
    max_notional_exposure_usd: float,
    contract_cap: int,
    ignore_buying_power: bool = False,
) -> Sizing:
    """Apply the SPEC formula; ``premium_usd`` is dollars per share (> 0).

    Raises:
        ValueError: ``premium_usd`` is not positive.
    """
    if premium_usd <= 0:
        raise ValueError(f"premium must be positive, got {premium_usd}")
    cost = contract_cost(premium_usd)
    caps = {
        "risk_budget": risk_budget_cap(equity_usd, risk_pct, cost),
        "stop_loss": stop_loss_cap(equity_usd, max_risk_per_trade_pct, cost, stop_loss_pct),
        "exposure": exposure_cap(max_notional_exposure_usd, open_exposure_usd, cost),
        "contract_cap": contract_cap,
    }
    if not ignore_buying_power:
        caps["buying_power"] = buying_power_cap(buying_power_usd, cost)
    binding = min(caps, key=lambda name: caps[name])
    return Sizing(cost_usd=cost, caps=caps, contracts=caps[binding], binding=binding)


def size_gate(sizing: Sizing) -> Denied | None:
    """The last gate: the formula must allow at least one contract."""
    if sizing.contracts < 1:
        return Denied(ReasonCode.SIZE_BELOW_ONE_CONTRACT, sizing.describe())
    return None
