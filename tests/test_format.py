"""Money, date, JSON and table formatting shared by the command line and the demo."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from bson import Decimal128, ObjectId

from mongoledger._format import CurrencyFormat, format_date, render_table, to_jsonable
from mongoledger.cli._progress import progress
from mongoledger.models import Account

DOLLAR = CurrencyFormat(symbol="$")
EURO = CurrencyFormat(symbol=" €", position="after", thousands_sep=".", decimal_sep=",")


@pytest.mark.parametrize(
    ("fmt", "amount", "expected"),
    [
        (CurrencyFormat(), 0, "0.00"),
        (CurrencyFormat(), 5, "0.05"),
        (CurrencyFormat(), -5, "-0.05"),
        (CurrencyFormat(), 1234, "12.34"),
        (CurrencyFormat(), 123456789, "1,234,567.89"),
        (CurrencyFormat(), -123456789, "-1,234,567.89"),
        (DOLLAR, 123456, "$1,234.56"),
        (DOLLAR, -123456, "-$1,234.56"),
        (DOLLAR, 100, "$1.00"),
        (EURO, 123456, "1.234,56 €"),
        (EURO, -123456, "-1.234,56 €"),
        (CurrencyFormat(symbol="€", position="after"), 250, "2.50€"),
        (CurrencyFormat(decimals=0), 123456, "123,456"),
        (CurrencyFormat(decimals=0), -7, "-7"),
        (CurrencyFormat(decimals=0, symbol=" credits", position="after"), 1500, "1,500 credits"),
        (CurrencyFormat(decimals=3), 1234567, "1,234.567"),
        (CurrencyFormat(decimals=3), -1, "-0.001"),
        (CurrencyFormat(decimals=3, symbol="BD "), 1000, "BD 1.000"),
        (CurrencyFormat(thousands_sep=""), 123456789, "1234567.89"),
        (CurrencyFormat(thousands_sep=" ", decimal_sep=","), 123456789, "1 234 567,89"),
        (CurrencyFormat(thousands_sep="'"), -100000000, "-1'000'000.00"),
        (CurrencyFormat(), 2**63 - 1, "92,233,720,368,547,758.07"),
        (CurrencyFormat(), -(2**63), "-92,233,720,368,547,758.08"),
    ],
)
def test_currency_format(fmt: CurrencyFormat, amount: int, expected: str) -> None:
    assert fmt.format(amount) == expected


def test_signed_and_missing_amounts() -> None:
    assert DOLLAR.signed(100) == "+$1.00"
    assert DOLLAR.signed(-100) == "-$1.00"
    assert EURO.signed(5) == "+0,05 €"
    assert DOLLAR.format(None) == ""


@pytest.mark.parametrize(
    ("decimals", "text", "expected"),
    [
        (2, "12.34", 1234),
        (2, "12", 1200),
        (2, "12.3", 1230),
        (2, "-0.5", -50),
        (2, "+.5", 50),
        (2, "0.10", 10),
        (2, "92233720368547758.07", 2**63 - 1),
        (0, "12", 12),
        (0, "12.0", 12),
        (3, "1.234", 1234),
    ],
)
def test_parse_major_is_exact(decimals: int, text: str, expected: int) -> None:
    assert CurrencyFormat(decimals=decimals).parse_major(text) == expected


@pytest.mark.parametrize(
    ("decimals", "text"),
    [(2, "12.345"), (0, "12.5"), (2, "1e3"), (2, "12,34"), (2, ""), (2, "nan"), (2, "1_000")],
)
def test_parse_major_refuses_what_it_would_round_or_guess(decimals: int, text: str) -> None:
    with pytest.raises(ValueError, match="amount"):
        CurrencyFormat(decimals=decimals).parse_major(text)


def test_parse_minor_units() -> None:
    fmt = CurrencyFormat()
    assert fmt.parse("1234", major=False) == 1234
    assert fmt.parse("-5", major=False) == -5
    assert fmt.parse("12.34", major=True) == 1234
    with pytest.raises(ValueError, match="--major"):
        fmt.parse("12.34", major=False)
    with pytest.raises(ValueError, match="integer"):
        fmt.parse("ten", major=False)


def test_invalid_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="position"):
        CurrencyFormat(position="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decimals"):
        CurrencyFormat(decimals=-1)


def test_format_date() -> None:
    naive = datetime(2026, 11, 25, 9, 5, 3, 120000)
    assert format_date(naive) == "2026-11-25 09:05:03"
    assert format_date(naive, "%d/%m/%Y") == "25/11/2026"
    aware = datetime(2026, 11, 25, 10, 5, tzinfo=timezone(timedelta(hours=1)))
    assert format_date(aware, "%H:%M") == "09:05"  # shown in UTC
    assert format_date(None) == ""
    assert format_date("not a date") == "not a date"


def test_to_jsonable() -> None:
    oid = ObjectId()
    account = Account(id=oid, balance=5, attributes={"user_id": 7})
    document = {
        "id": oid,
        "when": datetime(2026, 11, 25, 9, 0),
        "aware": datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=1))),
        "blob": b"\x00\x01",
        "price": Decimal128("1.10"),
        "nested": [account, {"n": 1, "ok": True, "none": None}],
    }
    out = to_jsonable(document)
    json.dumps(out)  # plain JSON values only
    assert out["id"] == str(oid)
    assert out["when"] == "2026-11-25T09:00:00Z"
    assert out["aware"] == "2026-11-25T09:00:00Z"
    assert out["blob"] == "AAE="
    assert out["price"] == "1.10"
    assert out["nested"][0]["id"] == str(oid)
    assert out["nested"][0]["attributes"] == {"user_id": 7}
    assert out["nested"][1] == {"n": 1, "ok": True, "none": None}


def test_render_table_aligns_columns() -> None:
    text = render_table(["name", "amount"], [["alice", "$1.00"], ["bob", "-$12.50"]], right=[1])
    assert text.splitlines() == [
        "name    amount",
        "-----  -------",
        "alice    $1.00",
        "bob    -$12.50",
    ]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_quiet_unless_a_terminal() -> None:
    plain = io.StringIO()
    with progress("working", stream=plain):
        time.sleep(0.15)
    assert plain.getvalue() == ""
    tty = _Tty()
    with progress("working", stream=tty, enabled=False):
        time.sleep(0.15)
    assert tty.getvalue() == ""


def test_progress_spins_on_a_terminal_and_erases_itself() -> None:
    tty = _Tty()
    with progress("verifying", stream=tty):
        time.sleep(0.35)
    text = tty.getvalue()
    assert "verifying" in text
    assert text.endswith("\r")
