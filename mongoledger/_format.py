"""Presentation helpers shared by the command line and the demo (no I/O, no database).

* :class:`CurrencyFormat` renders integer minor units as money (symbol before or after,
  thousands and decimal separators, decimal places of the minor unit) and parses major-unit
  text back into minor units exactly, without floats.
* :func:`format_date` renders stored dates (naive datetimes are UTC, as PyMongo returns them).
* :func:`to_jsonable` turns documents, models and BSON values into plain JSON values.
* :func:`render_table` lays rows out in aligned columns.
* :func:`one_line` turns an error into one line of text.
* :func:`describe_event` tells a committed operation (a ``LedgerEvent``) in one line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from bson import Decimal128, ObjectId
from pydantic import BaseModel

from mongoledger.models import LedgerEvent

__all__ = [
    "DEFAULT_DATE_FORMAT",
    "CurrencyFormat",
    "describe_event",
    "format_date",
    "format_value",
    "one_line",
    "render_table",
    "to_jsonable",
]

DEFAULT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_MAJOR = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_MINOR = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class CurrencyFormat:
    """How amounts (integers in the minor unit) are shown.

    ``decimals`` is the number of decimal places of the minor unit: 2 for cents (1234 is
    12.34), 0 for whole credits, 3 for mills. The symbol is written exactly as given (include a
    space in it for ``"12.34 EUR"``); a negative sign always comes first: ``-$12.34``,
    ``-12,34 €``.
    """

    symbol: str = ""
    position: Literal["before", "after"] = "before"
    thousands_sep: str = ","
    decimal_sep: str = "."
    decimals: int = 2

    def __post_init__(self) -> None:
        if self.position not in ("before", "after"):
            raise ValueError(f"symbol position {self.position!r} is not 'before' or 'after'")
        if isinstance(self.decimals, bool) or not 0 <= self.decimals <= 18:
            raise ValueError(f"decimals {self.decimals!r} must be between 0 and 18")
        separators = self.thousands_sep + self.decimal_sep
        if (
            self.thousands_sep == self.decimal_sep
            or (self.decimals and not self.decimal_sep)
            or any(c.isdigit() or c in "+-" for c in separators)
        ):
            raise ValueError(
                f"thousands separator {self.thousands_sep!r} and decimal separator "
                f"{self.decimal_sep!r} must differ and contain no digit or sign (the decimal "
                "separator may be empty only with 0 decimals)"
            )

    def number(self, amount: int) -> str:
        """``amount`` (minor units) as a number with separators, without the symbol."""
        sign = "-" if amount < 0 else ""
        whole, fraction = divmod(abs(amount), 10**self.decimals)
        digits = f"{whole:,}".replace(",", self.thousands_sep)
        if self.decimals:
            digits += self.decimal_sep + str(fraction).rjust(self.decimals, "0")
        return sign + digits

    def format(self, amount: int | None) -> str:
        """``amount`` (minor units) as money: ``1234`` → ``$12.34`` with a ``$`` symbol."""
        if amount is None:
            return ""
        text = self.number(amount)
        sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
        if self.position == "before":
            return f"{sign}{self.symbol}{digits}"
        return f"{sign}{digits}{self.symbol}"

    def signed(self, amount: int) -> str:
        """Like :meth:`format`, with ``+`` on positive amounts (movements)."""
        text = self.format(amount)
        return text if amount < 0 else "+" + text

    def parse_major(self, text: str) -> int:
        """Major-unit text (``"12.34"``) as exact minor units (``1234``); never rounds."""
        raw = text.strip()
        if not _MAJOR.fullmatch(raw):
            raise ValueError(f"amount {text!r} is not a decimal number such as 12.34")
        try:
            value = Decimal(raw).scaleb(self.decimals)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise ValueError(f"amount {text!r} is not a decimal number") from None
        if value != value.to_integral_value():
            raise ValueError(
                f"amount {text!r} has more than {self.decimals} decimal places "
                f"(the minor unit has {self.decimals})"
            )
        return int(value)

    def parse(self, text: str, *, major: bool) -> int:
        """Command-line amount text as minor units: an integer, or major units when asked."""
        if major:
            return self.parse_major(text)
        raw = text.strip()
        if not _MINOR.fullmatch(raw):
            hint = " (pass --major for amounts in major units such as 12.34)" if "." in raw else ""
            raise ValueError(f"amount {text!r} is not an integer number of minor units{hint}")
        return int(raw)


def format_date(value: Any, fmt: str = DEFAULT_DATE_FORMAT) -> str:
    """A stored date as text (UTC; naive datetimes are taken as UTC, as PyMongo returns them)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        moment: datetime = value
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc)
        return moment.strftime(fmt)
    if isinstance(value, date):
        day: date = value
        return day.strftime(fmt)
    return str(value)


def format_value(value: Any) -> str:
    """A short human rendering of a BSON value (ids, attributes, extra data)."""
    if isinstance(value, datetime):
        return format_date(value, "%Y-%m-%dT%H:%M:%S")
    if isinstance(value, Mapping):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def to_jsonable(value: Any) -> Any:
    """Documents, models and BSON values as plain JSON values.

    ObjectIds, Decimal128 and Decimal become strings, datetimes ISO 8601 strings (UTC, with
    ``Z`` for naive ones), bytes base64 strings; models their field dictionaries.
    """
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, ObjectId | Decimal128 | Decimal | date):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Iterable[int] = (),
    indent: str = "",
) -> str:
    """Rows laid out in columns; column indexes in ``right`` are right-aligned (amounts)."""
    body = [list(row) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align_right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if i in align_right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return (indent + "  ".join(out)).rstrip()

    rule = [("-" * w) for w in widths]
    return "\n".join([line(headers), line(rule), *(line(row) for row in body)])


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a driver's may span several), or its class name."""
    return " ".join(str(exc).split()) or type(exc).__name__


def describe_event(
    event: LedgerEvent,
    *,
    name: Callable[[Any], str] = str,
    amount: Callable[[int], str] = "{:+d}".format,
    details: bool = True,
) -> str:
    """One line for an operation: what, and every leg (for a hold, void or expiry, which move no
    money: the hold's accounts and amount); with ``details``, also when, the running balances,
    the extra data and the operation id."""
    hold = event.hold
    if event.transactions:
        legs = ", ".join(
            f"{name(t.account_id)} {amount(t.amount)}"
            + ("" if not details or t.balance_after is None else f" (= {amount(t.balance_after)})")
            for t in event.transactions
        )
        data = event.transactions[0].data
    elif hold is not None:
        held = amount(hold.amount).lstrip("+")
        legs = f"{held} of {name(hold.from_account_id)} for {name(hold.to_account_id)}"
        data = hold.void_data if event.kind == "void" else hold.data
    else:  # the hold was deleted before the event was read
        legs, data = f"hold {event.hold_id}", {}
    if not details:
        return f"{event.kind}: {legs}"
    stamp = format_date(event.committed_at)
    note = f"  {data}" if data else ""
    return f"{stamp}  {event.kind}: {legs}{note}  [{event.operation_id}]"
