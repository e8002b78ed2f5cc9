"""Exceptions, grouped by how the caller must react.

- :class:`ConfigError`: stop startup; the message lists every problem.
- :class:`DataError`: a market-data file cannot be used; names the file and the problem.
- :class:`BrokerTemporaryError`: the outcome is unknown or transient; retry or resolve later.
- :class:`OrderRejected`: the broker refused an order; record the refusal and go on.
- :class:`PositionNotFound`: the broker holds no such position (close the record, send nothing).

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
