"""Named crash points, for the crash tests (like etcd's gofail): ``failpoint("dispatcher.after_submit")``
does nothing unless ``OPS_PIPELINE_FAILPOINTS`` names it, and then kills this process with SIGKILL
right there — no ``finally``, no flush, no rollback beyond what the database does itself.

``OPS_PIPELINE_FAILPOINTS=name[@N][,name…]``: crash at the N-th time the point is reached in this
process (default: the first). The points, at the step boundaries of an account's run:

- ``dispatcher.before_submit``: the execution row is committed, the order not yet sent;
- ``dispatcher.after_submit``: the broker answered the order, nothing of the answer is stored;
- ``position_manager.mid_create``: inside the transaction creating positions, after the first row;
- ``position_manager.before_close_submit``: the close's client_order_id is stored, the sell not sent;
- ``position_manager.after_close_submit``: the broker answered the sell, nothing of it is stored.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "OPS_PIPELINE_FAILPOINTS"
_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """Crash here if ``OPS_PIPELINE_FAILPOINTS`` arms ``name`` for this hit."""
    armed = os.environ.get(ENV)
    if not armed:
        return
    _hits[name] += 1
    for entry in armed.split(","):
        point, _, nth = entry.strip().partition("@")
        if point == name and _hits[name] == (int(nth) if nth else 1):
            os.kill(os.getpid(), signal.SIGKILL)
