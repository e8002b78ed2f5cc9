"""Changing account states: what ``ops-pipeline accounts enable|disable|pause|resume``,
``accounts pause-all|resume-all`` and ``ops-pipeline kill`` call (seed 002; rules in
:mod:`ops_pipeline.domain.states`).

A change is one transaction: ``trading_accounts.state`` (what every run reads at its start, so it
takes effect at the account's next run and survives restarts) and a row of
``account_state_changes`` with who, when (wall time, UTC) and why.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import dataclass

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.domain.states import StateChangeRefused, StateCommand, next_state
from ops_pipeline.domain.values import AccountState
from ops_pipeline.errors import ConfigError


def operator() -> str:
    """Who is changing a state when ``--by`` is not given: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:100]


@dataclass(frozen=True, slots=True)
class StateChange:
    """The outcome for one account: ``changed`` (``before`` → ``after``), ``unchanged`` or ``refused``."""

    account_name: str
    outcome: str
    before: AccountState
    after: AccountState
    detail: str = ""

    def describe(self) -> str:
        if self.outcome == "changed":
            return f"{self.account_name}: {self.before.value} → {self.after.value}{self.detail}"
        if self.outcome == "unchanged":
            return f"{self.account_name}: already {self.after.value}"
        return f"{self.account_name}: not changed, {self.detail}"


def change_states(db: Database, command: StateCommand, names: list[str] | None, *, by: str, reason: str,
                  now: dt.datetime, flatten: bool = False, only_from: AccountState | None = None) -> list[StateChange]:
    """Apply ``command`` to the accounts ``names`` (``None``: every registered account).

    ``only_from`` limits it to accounts in that state (``resume-all`` resumes paused accounts only:
    an emergency stop is lifted by name). ``flatten`` (``kill`` only) makes the killed account's
    next position-manager run sell everything it holds at the bid.

    Raises:
        ConfigError: a name is not a registered account (nothing is changed then).
    """
    with db.transaction() as conn:
        repo = SharedRepository(conn)
        registered = repo.account_states()
        unknown = [n for n in names or [] if n not in registered]
        if unknown:
            raise ConfigError(f"no account {', '.join(unknown)}; accounts: {', '.join(registered)}")
        results = []
        for name in names or list(registered):
            before = AccountState(registered[name].state)
            if only_from is not None and before is not only_from:
                results.append(StateChange(name, "unchanged", before, before))
                continue
            try:
                after = next_state(before, command)
            except StateChangeRefused as exc:
                results.append(StateChange(name, "refused", before, before, str(exc)))
                continue
            wants_flatten = flatten and command is StateCommand.KILL
            if after is before and bool(registered[name].flatten) == wants_flatten:
                results.append(StateChange(name, "unchanged", before, after))
                continue
            repo.change_state(name, to_state=after.value, flatten=wants_flatten, by=by, at=now, reason=reason)
            results.append(StateChange(name, "changed", before, after, " (sells every position)" if wants_flatten else ""))
    return results
