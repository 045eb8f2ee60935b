"""Amounts: integers in the smallest unit, within int64 (so every movement can be reverted),
the floors accounts keep, and the sums the server computes over them."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from mongoledger._core.schema import INT64_MAX, INT64_MIN
from mongoledger.errors import InvalidAmount

__all__ = [
    "NO_FLOOR",
    "NoFloor",
    "check_balanced",
    "checked_total",
    "int64_total",
    "validate_amount",
    "validate_min_balance",
    "validate_positive",
]


class NoFloor:
    """The type of :data:`NO_FLOOR`."""

    _instance: NoFloor | None = None

    def __new__(cls) -> NoFloor:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_FLOOR"

    def __reduce__(self) -> str:
        return "NO_FLOOR"


NO_FLOOR = NoFloor()
"""``open_account(..., min_balance=NO_FLOOR)``: an account without a floor, even where the
ledger has a ``default_min_balance`` (system accounts that go negative by design)."""


def validate_amount(value: object, *, what: str = "amount") -> int:
    """Return ``value`` as a non-zero int64 whose negation is an int64 too (every movement can
    be reverted), or raise ``InvalidAmount`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        kind = type(value).__name__
        hint = ""
        if isinstance(value, float | Decimal):
            hint = "; amounts are integers in the smallest unit (cents, credits)"
        raise InvalidAmount(f"{what} {value!r} is a {kind}, not an integer{hint}")
    if value == 0:
        raise InvalidAmount(f"{what} 0 would move nothing; amounts must be non-zero")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAmount(f"{what} {value!r} is outside the signed 64-bit range")
    if value == INT64_MIN:
        raise InvalidAmount(
            f"{what} {value!r} has no negation in the signed 64-bit range, so it could never be "
            f"reverted; amounts lie within ±{INT64_MAX}"
        )
    return int(value)


def validate_positive(value: object, *, what: str, hint: str = "") -> int:
    """:func:`validate_amount`, and positive: the amount of a transfer, a hold or a capture."""
    amount = validate_amount(value, what=what)
    if amount < 0:
        raise InvalidAmount(f"{what} {amount!r} must be positive{hint}")
    return amount


def validate_min_balance(value: object) -> int | None:
    if value is None or isinstance(value, NoFloor):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"min_balance {value!r} is not an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidAmount(f"min_balance {value!r} is outside the signed 64-bit range")
    return int(value)


def check_balanced(kind: str, amounts: Sequence[int]) -> None:
    total = sum(amounts)
    if total != 0:
        raise InvalidAmount(
            f"{kind} legs must sum to zero (double entry); amounts {list(amounts)} sum to {total}"
        )


def int64_total(value: Any) -> int | None:
    """A sum the server computed, as an int, or None when it is not an int64: a ``$sum`` of
    int64 values that overflows comes back as a double (a server) or an integer outside int64
    (an engine), and ``int()`` would silently truncate it (``verify`` reports such a sum)."""
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        return None
    return int(value)


def checked_total(value: Any, *, what: str) -> int:
    """A sum the server computed, as an int, or ``InvalidAmount`` when it is not an int64 (see
    :func:`int64_total`): what the reads answer with."""
    total = int64_total(value)
    if total is None:
        raise InvalidAmount(
            f"{what} is {value!r}, outside the signed 64-bit range: the amounts sum past int64 "
            "(possible with balance_field=None, where no cached balance guards it)"
        )
    return total
