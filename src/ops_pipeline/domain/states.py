"""Account states and the commands that change them (seed 002 "Start/Stop Specific Account",
"Pause/Resume All Accounts", "Emergency Stop Single Account"; SPEC "Operations").

======== ===================================== =========================================
state    runs                                  new entries
======== ===================================== =========================================
enabled  position manager and dispatcher       yes
paused   position manager and dispatcher       no (``account_paused``); exits go on
killed   position manager and dispatcher       no (``account_killed``); exits go on, and
                                               with *flatten* every position is sold at
                                               the bid; stays killed until resumed
disabled none (the seed's schedule DISABLED)    —
======== ===================================== =========================================

:func:`next_state` is the whole rule: which command moves which state where, and which it
refuses. A refusal says why, so ``pause-all`` can skip an account and say so. Two rules are
deliberate: an emergency stop is lifted only by ``resume`` of that account (not by ``enable``,
``disable`` or ``resume-all``), so a kill cannot be undone by a command meant for something else;
and ``pause``/``resume`` do not touch a disabled account, which ``enable`` starts again.
"""

from __future__ import annotations

from enum import StrEnum

from ops_pipeline.domain.values import AccountState


class StateCommand(StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"
    PAUSE = "pause"
    RESUME = "resume"
    KILL = "kill"


class StateChangeRefused(ValueError):
    """The command does not apply to the account's current state; the message says what would."""


def next_state(current: AccountState, command: StateCommand) -> AccountState:
    """The state ``command`` moves an account in ``current`` to (possibly ``current``: no change).

    Raises:
        StateChangeRefused: the command does not apply (e.g. ``enable`` of a killed account).
    """
    S, C = AccountState, StateCommand
    if command is C.KILL:
        return S.KILLED
    if current is S.KILLED and command is not C.RESUME:
        raise StateChangeRefused("killed (emergency stop): it stays killed until `accounts resume` of this account")
    if command is C.ENABLE:
        if current in (S.ENABLED, S.DISABLED):
            return S.ENABLED
        raise StateChangeRefused(f"{current.value}: `accounts resume` lifts a pause")
    if command is C.DISABLE:
        return S.DISABLED
    if current is S.DISABLED:
        raise StateChangeRefused("disabled: `accounts enable` starts it again")
    if command is C.PAUSE:
        return S.PAUSED
    return S.ENABLED  # resume of enabled, paused or killed
