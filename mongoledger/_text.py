"""Text -> ledger values, and an account id back to text: the one set of rules the command
line (arguments), the web app (URLs, forms, filters) and the benchmarks read values with.

* ``KEY=VALUE`` pairs: an integer without leading zeros (``7``, ``-3``) is an int, ``true`` /
  ``false`` are booleans, anything else is a string (``007``, ``1.5``, ``wallet``). A bare
  ``null`` is refused as ambiguous. A prefix forces a type: ``str:7``, ``int:7``,
  ``float:1.5``, ``bool:true``, ``oid:65ab…``, ``date:2026-11-25T10:00``, ``json:"7"``
  (any JSON value; ``json:null``, objects and arrays too, where the ledger accepts them).
  Unknown prefixes are part of the string (``url=http://x`` is the string ``http://x``).
* An account ``_id``: 24 hex digits are an ObjectId, otherwise the value rules above apply
  (``42`` is the int 42, ``str:42`` the string "42"); :func:`account_id_text` writes any
  ``_id`` back in that form (the web app's URLs).
* Dates: ISO 8601 (``2026-11-25``, ``2026-11-25T10:30:00Z``); durations: ``90s``, ``30m``,
  ``12h``, ``7d``.

A text that breaks a rule raises :class:`UsageError` naming it (the command line's exit
status 2; the web app answers it as the ledger's ``InvalidArgument``).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

__all__ = [
    "UsageError",
    "account_id_text",
    "parse_account_id",
    "parse_duration",
    "parse_pair",
    "parse_value",
    "parse_when",
]

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PREFIXES = ("str", "int", "float", "bool", "oid", "date", "json")


class UsageError(ValueError):
    """A value given as text that cannot be understood (the command line's exit status 2)."""


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
