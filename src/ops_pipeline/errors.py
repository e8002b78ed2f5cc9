"""Exceptions, grouped by how the caller must react.

- :class:`ConfigError`: stop startup; the message lists every problem.
- :class:`DataError`: a market-data file cannot be used; names the file and the problem.
- :class:`BrokerTemporaryError`: the outcome is unknown or transient; retry or resolve later.
- :class:`OrderRejected`: the broker refused an order; record the refusal and go on.
- :class:`PositionNotFound`: the broker holds no such position (close the record, send nothing).
- :class:`MarketDataError`: quotes, chains or the market clock cannot be read now; the run ends
  cleanly (claims released, error recorded) and the next run tries again.
- :class:`DatabaseError`: the database URL or file cannot be used; stop, naming it.
- :class:`RunInProgress`: another run of the same account holds its lock; this one does nothing.

A gate's denial is not an exception: it is a :class:`~ops_pipeline.domain.gates.Denied` value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class OpsPipelineError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(OpsPipelineError):
    """Configuration is missing or invalid; startup must stop.

    Attributes:
        problems: one line per violation, each naming the key and where it came from.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message if problems is None else message + "\n  - " + "\n  - ".join(problems))

    @classmethod
    def from_validation(cls, exc: ValidationError, *, source: str) -> ConfigError:
        """Turn every pydantic error into one line ``key: message`` (values are not echoed)."""
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(root)"
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key (not a configuration parameter; check the spelling)"
            problems.append(f"{key}: {message}")
        return cls(f"invalid configuration in {source} ({len(problems)} problem(s))", problems)


class DataError(OpsPipelineError):
    """A market-data file or folder cannot be used as given."""


class BrokerError(OpsPipelineError):
    """Base class for broker failures."""


class BrokerTemporaryError(BrokerError):
    """Transient or ambiguous broker failure (timeout, 5xx, rate limit): the order may or may not
    exist; look it up by ``client_order_id`` before doing anything else."""


class OrderRejected(BrokerError):
    """The broker refused the order for a stated reason.

    Attributes:
        code: a stable reason code, e.g. ``insufficient_buying_power``, ``market_closed``.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


class PositionNotFound(BrokerError):
    """The broker has no position in the symbol ("position does not exist")."""


class MarketDataError(OpsPipelineError):
    """Market data (quotes, option chains, the underlying's price, the market clock) could not be
    read: a timeout, a refused or failed request. Transient: end the run cleanly, retry next run."""


class DatabaseError(OpsPipelineError):
    """The database cannot be used as given: a malformed or unsupported URL, a missing file where
    one must exist, a server that refuses the connection. The message names the (redacted) URL."""


class RunInProgress(OpsPipelineError):
    """Another run of the same account holds its lock (SPEC: one account, one run at a time)."""
