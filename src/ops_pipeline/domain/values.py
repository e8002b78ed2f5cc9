"""Value types shared by every layer: enums with wire values, money helpers, OCC option symbols.

Money and prices are :class:`decimal.Decimal` inside the domain. Premiums are dollars per share;
one option contract covers :data:`CONTRACT_MULTIPLIER` shares, so a contract costs
``premium × 100`` dollars.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

CONTRACT_MULTIPLIER = 100
EXCHANGE_TZ = ZoneInfo("America/New_York")
"""US options trade on New York time: exchange dates and times shown to traders are in this zone."""
CENT = Decimal("0.01")
ZERO = Decimal("0")


class Action(StrEnum):
    """What a recommendation asks for (wire values of the seeds' `recommendations.action`)."""

    BUY_CALL = "BUY_CALL"
    BUY_PUT = "BUY_PUT"


class StrategyType(StrEnum):
    """Holding horizon of a recommendation: ``day_trade`` buys 0–1 DTE, ``swing_trade`` 7–30 DTE."""

    DAY_TRADE = "day_trade"
    SWING_TRADE = "swing_trade"


class OptionType(StrEnum):
    CALL = "call"
    PUT = "put"


class Tier(StrEnum):
    TINY = "tiny"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class AccountState(StrEnum):
    """Trading state of an account (SPEC "Operations", seed 002): see :mod:`ops_pipeline.domain.states`.

    ``enabled`` trades; ``paused`` manages its positions but opens nothing; ``killed`` (emergency
    stop) likewise, until resumed, and may also sell everything; ``disabled`` is not run at all.
    """

    ENABLED = "enabled"
    PAUSED = "paused"
    KILLED = "killed"
    DISABLED = "disabled"


class DailyLossAction(StrEnum):
    """What the account does once its day's loss reached ``max_daily_loss`` (SPEC "The dispatcher").

    ``halt``: no new entries for the rest of the exchange day; open positions keep their exits.
    ``flatten``: the same, and every open position is also sold at the bid.
    """

    HALT = "halt"
    FLATTEN = "flatten"


class ExecutionMode(StrEnum):
    SIMULATED = "SIMULATED"
    ALPACA_PAPER = "ALPACA_PAPER"


def option_type_for(action: Action) -> OptionType:
    """Calls for ``BUY_CALL``, puts for ``BUY_PUT``."""
    return OptionType.CALL if action is Action.BUY_CALL else OptionType.PUT


def money(value: Decimal | float | int | str) -> Decimal:
    """Round a dollar amount to cents (half up), the precision stored in the database."""
    # A Decimal is its own text's value (digits and exponent): only other numbers go through text.
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(CENT, rounding=ROUND_HALF_UP)


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """Convert a float from a data file or a broker to Decimal without binary-float noise."""
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def contract_cost(premium_usd: Decimal) -> Decimal:
    """Dollars for one contract at ``premium_usd`` per share."""
    return premium_usd * CONTRACT_MULTIPLIER


_OCC_RE = re.compile(r"^(?P<root>[A-Z.]{1,6})(?P<date>\d{6})(?P<cp>[CP])(?P<strike>\d{8})$")


@functools.lru_cache(maxsize=65536)
def _parse_occ(symbol: str) -> OccSymbol:
    """:meth:`OccSymbol.parse`, remembered: the same symbols are parsed on every run (immutable result)."""
    match = _OCC_RE.match(symbol.strip().upper())
    if match is None:
        raise ValueError(f"not an OCC option symbol: {symbol!r}")
    date = dt.datetime.strptime(match["date"], "%y%m%d").date()
    option_type = OptionType.CALL if match["cp"] == "C" else OptionType.PUT
    strike = Decimal(int(match["strike"])) / 1000
    return OccSymbol(match["root"], date, option_type, strike)


@dataclass(frozen=True, slots=True)
class OccSymbol:
    """An OCC option symbol: root, expiration, call/put, strike (e.g. ``SPY260320C00660000``).

    The strike is encoded in thousandths of a dollar over eight digits (OCC symbology).
    """

    underlying: str
    expiration: dt.date
    option_type: OptionType
    strike: Decimal

    @classmethod
    def parse(cls, symbol: str) -> OccSymbol:
        """Parse ``SPY260320C00660000``.

        Raises:
            ValueError: the text is not an OCC option symbol (the message quotes it).
        """
        return _parse_occ(symbol)

    @property
    def strike_text(self) -> str:
        """The strike in plain digits without trailing zeros: ``540``, ``12.5``."""
        return format(self.strike.normalize(), "f")

    def __str__(self) -> str:
        return _occ_text(self.underlying, self.expiration, self.option_type, self.strike)


@functools.lru_cache(maxsize=65536)
def _occ_text(underlying: str, expiration: dt.date, option_type: OptionType, strike: Decimal) -> str:
    """``str(OccSymbol)``, remembered (quotes and books format the same symbols every minute)."""
    return occ_root(underlying, expiration) + occ_strike_code(option_type, strike)


def occ_root(underlying: str, expiration: dt.date) -> str:
    """The OCC symbol's first part: root and expiration (``SPY260320``)."""
    return f"{underlying}{expiration:%y%m%d}"


def occ_strike_code(option_type: OptionType, strike: Decimal) -> str:
    """The OCC symbol's last part: C or P and the strike in thousandths over eight digits (``C00660000``)."""
    thousandths = int((strike * 1000).to_integral_value(rounding=ROUND_HALF_UP))
    return f"{'C' if option_type is OptionType.CALL else 'P'}{thousandths:08d}"
