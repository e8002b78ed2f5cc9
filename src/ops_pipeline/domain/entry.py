"""One account's verdict on one recommendation: values in, :class:`Entry` or :class:`Denied` out.

The gates run in SPEC order. Contract choice: among the contracts scoring at least
``min_quality_score``, best first, the first one that passes exposure, buying power and sizing is
bought; if none passes, the best contract's denial is reported (so a $1K account is not refused a
trade because the top-scored contract costs $900 while a good $1.20 one exists).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from ops_pipeline.config.models import RiskConfig
from ops_pipeline.domain.contracts import DTE_WINDOWS, ScoredContract, candidate_contracts
from ops_pipeline.domain.gates import (
    AccountSnapshot,
    Denied,
    ReasonCode,
    buying_power_gate,
    exposure_gate,
    pre_contract_gates,
)
from ops_pipeline.domain.market import OptionQuote, Recommendation
from ops_pipeline.domain.sizing import Sizing, size_gate, size_position
from ops_pipeline.domain.values import contract_cost


@dataclass(frozen=True, slots=True)
class Entry:
    """Approved: buy ``sizing.contracts`` of ``contract`` at about its ask."""

    contract: ScoredContract
    sizing: Sizing

    @property
    def notional_usd(self) -> Decimal:
        return self.sizing.cost_usd * self.sizing.contracts


def trade_budget(account: AccountSnapshot, cfg: RiskConfig, rec: Recommendation) -> Decimal:
    """Dollars one trade of this strategy may cost: equity × risk_pct[strategy]."""
    return account.equity_usd * Decimal(str(cfg.risk_pct(rec.strategy_type)))


def decide_entry(
    rec: Recommendation,
    account: AccountSnapshot,
    cfg: RiskConfig,
    quotes: Sequence[OptionQuote],
    *,
    now: dt.datetime,
    today: dt.date,
) -> Entry | Denied:
    """Judge ``rec`` for one account.

    Args:
        quotes: the option chain of ``rec.ticker`` at ``now`` (any types and expirations): an
            :class:`~ops_pipeline.domain.market.OptionChain` or a sequence of quotes.
        now: decision time, aware. today: the exchange date at ``now``.
    """
    denial = pre_contract_gates(rec, account, cfg, now)
    if denial is not None:
        return denial
    scored = candidate_contracts(
        quotes, action=rec.action, strategy=rec.strategy_type, today=today,
        budget_usd=trade_budget(account, cfg, rec), min_quality_score=0.0,
    )
    if not scored or scored[0].score.total < cfg.min_quality_score:
        low, high = DTE_WINDOWS[rec.strategy_type]
        best = f"{scored[0].score.total:.1f}" if scored else "none"
        return Denied(
            ReasonCode.NO_QUALITY_CONTRACT,
            f"best_score={best} min={cfg.min_quality_score:.0f} eligible={len(scored)} dte={low}-{high}",
        )
    good = scored.count_at_least(cfg.min_quality_score)  # best first: these come first
    asks = scored.ask_ticks()[:good]
    first_denial: Denied | None = None
    k = 0
    while k < good:
        verdict = _cost_gates(scored[k], account, cfg, rec)
        if isinstance(verdict, Entry):
            return verdict
        first_denial = first_denial or verdict
        # Every gate left denies by cost alone and would deny any dearer contract too (see
        # _cost_gates): only a cheaper one can still pass.
        cheaper = np.flatnonzero(asks[k + 1:] < asks[k])
        k = k + 1 + int(cheaper[0]) if len(cheaper) else good
    assert first_denial is not None
    return first_denial


def _cost_gates(contract: ScoredContract, account: AccountSnapshot, cfg: RiskConfig, rec: Recommendation) -> Entry | Denied:
    """Exposure, buying power and sizing for one contract: an :class:`Entry` or the denial.

    Each gate depends on the contract only through its cost (premium × 100, dollars), and denies
    every contract dearer than one it denies: exposure and buying power compare the cost against
    a room; every sizing cap is ``floor(room / cost)`` (or the fixed contract cap), so the number of
    contracts never grows with the cost (``tests/unit/test_sizing.py`` checks it)."""
    cost = contract_cost(contract.quote.ask)
    denial = exposure_gate(account.open_exposure_usd, cost, cfg) or buying_power_gate(
        account.buying_power_usd, cost, cfg
    )
    if denial is not None:
        return denial
    sizing = size_position(
        premium_usd=contract.quote.ask,
        equity_usd=account.equity_usd,
        buying_power_usd=account.buying_power_usd,
        open_exposure_usd=account.open_exposure_usd,
        risk_pct=cfg.risk_pct(rec.strategy_type),
        max_risk_per_trade_pct=cfg.max_risk_per_trade_pct,
        stop_loss_pct=cfg.stop_loss_pct,
        max_notional_exposure_usd=cfg.max_notional_exposure,
        contract_cap=cfg.contract_cap,
        ignore_buying_power=cfg.paper_ignore_buying_power,
    )
    return size_gate(sizing) or Entry(contract, sizing)
