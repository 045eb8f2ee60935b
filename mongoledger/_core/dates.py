"""Dates: date arguments, returned datetimes, the ``balance_at`` shortcut
and the period buckets of ``statistics``.

Dates the ledger writes are BSON dates (``date_value=None``) or whatever a ``date_value``
gives (Decision 4: stored as given, e.g. yii2tech's integer timestamps). A date argument must
be of a kind that can compare with them in a query (Decision 8): otherwise the server compares
it with nothing and the answer is a silent 0 or an empty list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import bson

from mongoledger.errors import InvalidArgument

__all__ = [
    "DateKind",
    "check_date_argument",
    "comparable",
    "date_kind",
    "deep_utc",
    "millis",
    "naive_utc",
    "period_buckets",
    "same_stored",
    "settle_date",
    "shortcut_serves",
    "utc",
    "validate_timezone",
]

DateKind = str  # "datetime" | "number" | "string": the classes a MongoDB query compares within

_NUMBERS = (int, float, bson.Int64, bson.Decimal128)


def millis(value: datetime) -> datetime:
    """``value`` at the millisecond precision BSON stores, so what is stored is what was given."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def utc(value: Any) -> Any:
    """A datetime as timezone-aware UTC (naive ones are UTC, as BSON stores them); any other
    value unchanged."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    return value


def deep_utc(value: Any) -> Any:
    """``value`` with every datetime inside it (mappings, lists) made aware UTC."""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, Mapping):
        return {k: deep_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_utc(v) for v in value]
    return value


def comparable(value: Any) -> Any:
    """``value`` as the server stores it, for comparing in Python: datetimes aware UTC at
    millisecond precision, Int64 as int."""
    if isinstance(value, datetime):
        return millis(utc(value))
    if isinstance(value, bson.Int64):
        return int(value)
    return value


def same_stored(stored: Any, value: Any) -> bool:
    """Whether ``stored`` (as read back) is ``value`` (as written): the write path's quick
    test, exact for the usual case of a naive stored datetime and an aware UTC value."""
    if type(stored) is datetime and type(value) is datetime and stored.tzinfo is None:
        return value.tzinfo is timezone.utc and stored.replace(tzinfo=timezone.utc) == value
    return bool(stored == value) and type(stored) is type(value)


def date_kind(value: Any) -> DateKind | None:
    """The comparison class of a date value, or None for a value no date compares with."""
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, bool):
        return None
    if isinstance(value, (*_NUMBERS, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def check_date_argument(
    value: Any, *, what: str, date_value: Any, written: Any = None, require: DateKind | None = None
) -> Any:
    """Validate a date argument (``when``, ``start``, ``end``); returns it ready for a query
    (a datetime as naive UTC, which every driver and engine reads as UTC).

    The expected kind is ``require`` if given, else what the ledger writes: BSON dates when
    ``date_value`` is None, the kind of a fixed ``date_value``, and for a callable the kind of
    ``written`` (a date the account already carries) when known. Naive datetimes are UTC;
    aware ones are converted.
    """
    kind = date_kind(value)
    if kind is None or (isinstance(value, float) and math.isnan(value)):
        hint = " (a date: use datetime(y, m, d) instead)" if isinstance(value, date) else ""
        raise InvalidArgument(
            f"{what} {value!r} is a {type(value).__name__}, not a date{hint}; pass a datetime "
            "(naive datetimes are UTC)"
        )
    expected = require
    if expected is None:
        if date_value is None:
            expected = "datetime"
        elif not callable(date_value):
            expected = date_kind(date_value)
        elif written is not None:
            expected = date_kind(written)
    if expected is not None and kind != expected:
        writes = {
            "datetime": "datetimes",
            "number": "numbers (a date_value giving timestamps)",
            "string": "strings",
        }[expected]
        raise InvalidArgument(
            f"{what} {value!r} is a {type(value).__name__}, but this ledger's dates are "
            f"{writes}: it could never compare with them; pass a "
            f"{'datetime (naive datetimes are UTC)' if expected == 'datetime' else expected}"
        )
    return naive_utc(value)


def naive_utc(value: Any) -> Any:
    """A datetime as naive UTC (how BSON stores it); any other value unchanged."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def settle_date(
    date: Any, latest: Sequence[tuple[Any, Any]], *, chosen: bool
) -> tuple[Any, list[Any]]:
    """An operation's date once its accounts' dates are in order, and the accounts to update.

    ``latest`` holds each moved account's ``last_date`` as its leg's update returned it (the
    update raised it to ``date``): a later value means the account already has a later date.
    When the ledger ``chosen`` the date (its own "now"), the date moves up to the latest of
    them (a clock behind another writer's, or a writer that committed between this one's clock
    read and its write), and the accounts below it must have their ``last_date`` raised to it.
    A date given by ``date_value`` stays as given, and the accounts it backdates must record
    it in ``backdated_from``. Each account is listed once; none on the common path.
    """
    if _all_stored(date, latest):
        return date, []  # the common path: every account's dates are in order
    stamp = comparable(date)
    later = [
        comparable(last) for _, last in latest if last is not None and comparable(last) != stamp
    ]
    if not later:
        return date, []
    target = max([stamp, *(d for d in later if isinstance(d, datetime))]) if chosen else stamp
    behind: list[Any] = []
    seen: set[str] = set()
    for account_id, last in latest:
        if repr(account_id) not in seen and comparable(last) != target:
            seen.add(repr(account_id))
            behind.append(account_id)
    return (target if chosen else date), behind


def _all_stored(date: Any, latest: Sequence[tuple[Any, Any]]) -> bool:
    """Whether every ``last_date`` in ``latest`` is ``date`` as stored (:func:`same_stored`):
    the write path's test, on every write. A naive stored datetime is compared with ``date``
    made naive once, instead of each made aware (a fast answer only when it is yes)."""
    if type(date) is datetime and date.tzinfo is timezone.utc:
        naive = date.replace(tzinfo=None)
        for _, last in latest:
            if type(last) is not datetime or last.tzinfo is not None or last != naive:
                break
        else:
            return True
    return all(same_stored(last, date) for _, last in latest)


def shortcut_serves(when: Any, last_date: Any, backdated_from: Any) -> bool:
    """Whether the last leg dated at or before ``when`` (in commit order) carries the balance
    at ``when`` in its ``balance_after``.

    True unless the account was written out of date order (``backdated_from``: the earliest
    date ever written below an earlier leg's date) and ``when`` falls between that date and
    the latest date the account carries (``last_date``): before the first backdated date, or
    at or after the latest date, the legs dated at or before ``when`` are exactly a prefix of
    the commit order.
    """
    if backdated_from is None:
        return True
    when, low = comparable(when), comparable(backdated_from)
    try:
        if when < low:
            return True
        return last_date is not None and when >= comparable(last_date)
    except TypeError:  # dates of different kinds: only the aggregation knows
        return False


def validate_timezone(name: Any) -> ZoneInfo | None:
    """An IANA time zone (``"Europe/Paris"``), or None for UTC."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"timezone {name!r} is not an IANA time zone name (Europe/Paris)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f"timezone {name!r} is not an IANA time zone name (e.g. Europe/Paris, UTC)"
        ) from None


PERIOD_FORMATS = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}


def _period_start(moment: datetime, period: str) -> datetime:
    if period == "year":
        return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _next_period(start: datetime, period: str) -> datetime:
    if period == "year":
        return start.replace(year=start.year + 1)
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return (start + timedelta(days=1)).replace(hour=0)


def period_buckets(
    period: str, zone: ZoneInfo, first: datetime, last: datetime
) -> tuple[list[datetime], list[str]]:
    """The UTC boundaries of the local periods covering ``first``..``last`` in ``zone``, and
    each period's label (``"2026-11"``): boundaries has one more entry than labels."""
    local = utc(first).astimezone(zone)
    start = _period_start(local.replace(tzinfo=None), period)
    end = utc(last)
    boundaries: list[datetime] = []
    labels: list[str] = []
    while True:
        # Local wall-clock midnight to UTC (fold=0: the first of an ambiguous hour).
        boundary = start.replace(tzinfo=zone).astimezone(timezone.utc)
        boundaries.append(boundary)
        if boundary > end:
            return boundaries, labels
        labels.append(start.strftime(PERIOD_FORMATS[period]))
        start = _next_period(start, period)
