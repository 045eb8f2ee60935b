"""The ledger's clock: every part of the ledger reads "now" here (``clock.utcnow()``), so a
test moves time for all of it in one place (``monkeypatch.setattr(clock, "utcnow", ...)``)."""

from __future__ import annotations

from datetime import datetime, timezone

from mongoledger._core.dates import millis

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Now in UTC, at the millisecond precision BSON stores."""
    return millis(datetime.now(timezone.utc))
