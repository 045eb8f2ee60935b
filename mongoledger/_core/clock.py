"""The ledger's clock: every part of the ledger reads "now" here (``clock.utcnow()``), so a
test moves time for all of it in one place (``monkeypatch.setattr(clock, "utcnow", ...)``)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

__all__ = ["utcnow"]

_UTC = timezone.utc
_from_timestamp = datetime.fromtimestamp
_time_ns = time.time_ns


def utcnow() -> datetime:
    """Now in UTC, at the millisecond precision BSON stores.

    Read every write or more, so built from whole milliseconds in one step (a third of the
    time of ``datetime.now`` then ``replace``). Exact: ``ms / 1000`` is within half a
    microsecond of its value for the next two centuries, and ``fromtimestamp`` rounds to the
    nearest microsecond."""
    return _from_timestamp(_time_ns() // 1_000_000 / 1000, _UTC)
