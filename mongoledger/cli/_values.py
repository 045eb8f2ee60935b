"""Command-line text → ledger values: typed values, accounts, extra data, amounts, dates.

The rules (also printed by ``mongoledger --help``):

* ``KEY=VALUE`` pairs: an integer without leading zeros (``7``, ``-3``) is an int, ``true`` /
  ``false`` are booleans, anything else is a string (``007``, ``1.5``, ``wallet``). A bare
  ``null`` is refused as ambiguous. A prefix forces a type: ``str:7``, ``int:7``,
  ``float:1.5``, ``bool:true``, ``oid:65ab…``, ``date:2026-11-25T10:00``, ``json:"7"``
  (any JSON value; ``json:null``, objects and arrays too, where the ledger accepts them).
  Unknown prefixes are part of the string (``url=http://x`` is the string ``http://x``).
* Accounts: ``--account KEY=VALUE`` repeated is an attribute set; ``--account _id=ID`` or
  ``--account-id ID`` is an ``_id``: 24 hex digits are an ObjectId, otherwise the value rules
  above apply (``42`` is the int 42, ``str:42`` the string "42").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

__all__ = [
    "UsageError",
    "account_id_text",
    "parse_account",
    "parse_account_id",
    "parse_data",
    "parse_duration",
    "parse_pair",
    "parse_pairs",
    "parse_resume_token",
    "parse_value",
    "parse_when",
]

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PREFIXES = ("str", "int", "float", "bool", "oid", "date", "json")


class UsageError(ValueError):
    """A command-line value that cannot be understood (exit status 2)."""


def parse_value(text: str, *, what: str = "value") -> Any:
    """One typed value (see the module docstring for the rules)."""
    prefix, sep, rest = text.partition(":")
    if sep and prefix in _PREFIXES:
        return _typed(prefix, rest, what)
    if text == "null":
        raise UsageError(
            f"{what} null is ambiguous: write str:null for the string or json:null for null"
        )
    if _INT.fullmatch(text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _typed(prefix: str, text: str, what: str) -> Any:
    try:
        if prefix == "str":
            return text
        if prefix == "int":
            return int(text)
        if prefix == "float":
            return float(text)
        if prefix == "bool":
            if text not in ("true", "false"):
                raise ValueError("expected true or false")
            return text == "true"
        if prefix == "oid":
            return ObjectId(text)
        if prefix == "date":
            return parse_when(text)
        return json.loads(text)
    except (ValueError, TypeError, InvalidId) as exc:
        raise UsageError(f"{what} {prefix}:{text!r} is not a valid {prefix}: {exc}") from None


def parse_pair(text: str, *, what: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"{what} {text!r} is not KEY=VALUE")
    return key, parse_value(raw, what=f"{what} {key}")


def parse_account_id(text: str) -> Any:
    """An account ``_id``: 24 hex digits are an ObjectId, else the typed-value rules."""
    if len(text) == 24 and ObjectId.is_valid(text):
        return ObjectId(text)
    return parse_value(text, what="account id")


def account_id_text(account_id: Any) -> str:
    """An account ``_id`` as text that :func:`parse_account_id` reads back as the same value.

    ``ObjectId`` → its 24 hex digits, ``7`` → ``"7"``, the string ``"7"`` → ``"str:7"``; the
    web pages' URLs (``/user/{account_id}/balance``) use this form.
    """
    if isinstance(account_id, ObjectId):
        return str(account_id)
    if isinstance(account_id, bool):
        return f"bool:{'true' if account_id else 'false'}"
    if isinstance(account_id, int):
        return str(int(account_id))
    if isinstance(account_id, float):
        return f"float:{account_id!r}"
    if isinstance(account_id, str):
        try:
            plain = parse_account_id(account_id)
        except UsageError:
            plain = None
        return account_id if type(plain) is str and plain == account_id else f"str:{account_id}"
    if isinstance(account_id, datetime):
        return f"date:{account_id.isoformat()}"
    return f"json:{json.dumps(account_id, default=str)}"


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


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """A positive duration: seconds (``90``), or a number with a unit (``90s``, ``30m``,
    ``12h``, ``7d``)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"{what} {text!r} is not a positive duration such as 90s, 30m, 12h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date or date-time as a naive UTC datetime (how MongoDB stores dates).

    A date-time without an offset is UTC. A bare date is its first millisecond, or its last
    with ``end_of_day`` (so ``--end 2026-11-30`` includes that whole day).
    """
    raw = text.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(day, time(23, 59, 59, 999000) if end_of_day else time())
        if raw.endswith(("Z", "z")):
            raw = raw[:-1] + "+00:00"
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(
            f"date {text!r} is not ISO 8601 (2026-11-25 or 2026-11-25T10:30:00Z)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


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
