"""Validating a recommendation, wherever it comes from (SPEC "The signal engine": rows may be written
by another service or imported from a file).

:func:`parse_recommendation` takes raw field values — database values of any type, or text from a
CSV/JSON import — and returns a :class:`~ops_pipeline.domain.market.Recommendation` or an
:class:`InvalidRecommendation` listing every field at fault with its value. The rules:

- ``action`` is ``BUY_CALL`` or ``BUY_PUT``; ``strategy_type`` is ``day_trade`` or ``swing_trade``;
- ``confidence`` is a finite number in [0, 1]; ``volume_ratio`` a finite number ≥ 0;
- ``ticker`` is a normalised US symbol: upper-case letters and digits, optionally one class
  suffix (``SPY``, ``SOXL``, ``BRK.B``); ``soxl``, ``SPY,QQQ`` or `` SPY`` are refused, since a
  lower-case or composite ticker would slip past the per-ticker limits or reach the broker as two;
- ``underlying_price``, when given, is a finite number > 0;
- ``bar_ts ≤ feature_ts ≤ created_at``, all valid times (naive values are UTC, as stored).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ops_pipeline.domain.market import Recommendation
from ops_pipeline.domain.values import Action, StrategyType

TICKER_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{0,5}(\.[A-Z]{1,2})?$")
MAX_SHOWN = 40
"""Characters of a bad value quoted in a problem (a 10 KB ticker is not echoed whole)."""


@dataclass(frozen=True, slots=True)
class InvalidRecommendation:
    """A recommendation that must not trade: every problem as ``field=value: rule``."""

    id: int | None
    problems: tuple[str, ...]

    @property
    def detail(self) -> str:
        return "; ".join(self.problems)


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def _number(value: Any) -> Decimal | None:
    """A finite or non-finite Decimal from a number or numeric text; ``None`` if not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_recommendation(raw: Mapping[str, Any]) -> Recommendation | InvalidRecommendation:
    """Validate raw values (keys as the ``recommendations`` columns) into a Recommendation.

    Never raises on bad values: they come back as an :class:`InvalidRecommendation`.
    """
    problems: list[str] = []
    rec_id = raw.get("id")

    ticker = raw.get("ticker")
    if not isinstance(ticker, str) or not TICKER_PATTERN.match(ticker):
        problems.append(f"ticker={_shown(ticker)}: not a normalised symbol (upper-case letters and digits, e.g. SPY)")

    action = raw.get("action")
    if action not in {a.value for a in Action}:
        problems.append(f"action={_shown(action)}: must be BUY_CALL or BUY_PUT")
    strategy = raw.get("strategy_type")
    if strategy not in {s.value for s in StrategyType}:
        problems.append(f"strategy_type={_shown(strategy)}: must be day_trade or swing_trade")

    confidence = _number(raw.get("confidence"))
    if confidence is None or not confidence.is_finite() or not 0 <= confidence <= 1:
        problems.append(f"confidence={_shown(raw.get('confidence'))}: must be a number from 0 to 1")
    volume_ratio = _number(raw.get("volume_ratio"))
    if volume_ratio is None or not volume_ratio.is_finite() or volume_ratio < 0:
        problems.append(f"volume_ratio={_shown(raw.get('volume_ratio'))}: must be a finite number ≥ 0")
    price_raw = raw.get("underlying_price")
    price = _number(price_raw) if price_raw is not None else Decimal(0)
    if price is None or not price.is_finite() or (price_raw is not None and price <= 0):
        problems.append(f"underlying_price={_shown(price_raw)}: must be a finite number > 0 when given")

    times: dict[str, dt.datetime] = {}
    for key in ("bar_ts", "feature_ts", "created_at"):
        parsed = _time(raw.get(key))
        if parsed is None:
            problems.append(f"{key}={_shown(raw.get(key))}: not a time")
        else:
            times[key] = parsed
    for early, late in (("bar_ts", "created_at"), ("bar_ts", "feature_ts"), ("feature_ts", "created_at")):
        if early in times and late in times and times[early] > times[late]:
            problems.append(f"{early}={times[early]:%Y-%m-%d %H:%M:%S}Z is after {late}={times[late]:%Y-%m-%d %H:%M:%S}Z")

    if not isinstance(rec_id, int) or isinstance(rec_id, bool):
        problems.append(f"id={_shown(rec_id)}: not an integer")
    if problems:
        return InvalidRecommendation(rec_id if isinstance(rec_id, int) else None, tuple(problems))
    assert confidence is not None and volume_ratio is not None and price is not None and isinstance(ticker, str)
    return Recommendation(
        id=rec_id, ticker=ticker, action=Action(action), strategy_type=StrategyType(strategy),
        confidence=float(confidence), volume_ratio=float(volume_ratio),
        bar_time=times["bar_ts"], feature_time=times["feature_ts"], created_at=times["created_at"],
        underlying_price=price,
    )

