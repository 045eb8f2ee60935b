"""Command-line options -> ledger values: accounts, extra data, resume tokens (the value,
id, date and duration rules themselves: :mod:`mongoledger._text`).

* Accounts: ``--account KEY=VALUE`` repeated is an attribute set; ``--account _id=ID`` or
  ``--account-id ID`` is an ``_id`` (the id rules of :mod:`mongoledger._text`).
* ``--data KEY=VALUE`` (and other repeated pairs): a key given twice is an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mongoledger._text import UsageError, parse_account_id, parse_pair, parse_value

__all__ = [
    "parse_account",
    "parse_data",
    "parse_pairs",
    "parse_resume_token",
]


def parse_account(
    pairs: Sequence[str] | None, account_id: str | None, *, option: str = "--account"
) -> Any:
    """An account reference from ``KEY=VALUE`` pairs (an attribute set) or an id."""
    pairs = list(pairs or [])
    if account_id is not None:
        if pairs:
            raise UsageError(f"give either {option} KEY=VALUE or {option}-id, not both")
        return parse_account_id(account_id)
    if not pairs:
        raise UsageError(f"name the account with {option} KEY=VALUE (repeatable) or {option}-id")
    attributes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {pair!r} is not KEY=VALUE")
        if key in attributes:
            raise UsageError(f"{option} names attribute {key!r} twice")
        attributes[key] = parse_account_id(raw) if key == "_id" else parse_value(raw, what=key)
    if "_id" in attributes:
        if len(attributes) > 1:
            raise UsageError(f"{option} _id=... names the account by id; drop the other attributes")
        return attributes["_id"]
    return attributes


def parse_pairs(pairs: Sequence[str] | None, *, option: str) -> dict[str, Any] | None:
    """A mapping from repeated ``option KEY=VALUE`` pairs (None when there are none); a key
    given twice is an error, never a silent choice between the two values."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, value = parse_pair(pair, what=option)
        if key in out:
            raise UsageError(f"{option} names {key!r} twice")
        out[key] = value
    return out


def parse_data(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """Extra data from ``--data KEY=VALUE`` pairs (None when there are none)."""
    return parse_pairs(pairs, option="--data")


def parse_resume_token(text: str) -> dict[str, Any]:
    """A resume token as printed by ``watch`` (the JSON object, or just its ``_data`` string)."""
    raw = text.strip()
    if raw.startswith("{"):
        try:
            token = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"resume token {text!r} is not valid JSON: {exc}") from None
        if not isinstance(token, dict):  # pragma: no cover - "{" starts an object
            raise UsageError(f"resume token {text!r} is not a JSON object")
        return token
    if not raw:
        raise UsageError("resume token is empty")
    return {"_data": raw}
