"""The ``mongoledger`` command, run in-process on one shared in-memory engine.

Also: the value syntax, exit codes, ``--json``, every command's ``--help``, the demo (its
printed zero-sum check must hold), and a subprocess tier against ``MONGOLEDGER_TEST_URI``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId

from mongoledger import Ledger
from mongoledger._text import UsageError, parse_value, parse_when
from mongoledger.cli import build_parser, main
from mongoledger.cli._commands import COMMANDS
from mongoledger.cli._connection import resolve
from mongoledger.cli._values import parse_account, parse_data, parse_resume_token
from mongoledger.memory import MemoryClient
from tests.conftest import REAL_URI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALICE = ["--account", "user_id=1", "--account", "type=wallet"]
BOB = ["--account", "user_id=2", "--account", "type=wallet"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs ``mongoledger`` commands in-process, all on one in-memory database."""

    def __init__(self) -> None:
        self.client = MemoryClient()
        self.db = self.client["cli"]

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), database=self.db, environ=env or {}, stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *argv: str) -> Result:
        result = self(*argv)
        assert result.code == 0, result.err
        assert result.err == ""
        return result

    def data(self, *argv: str) -> Any:
        return self.ok("--json", *argv).json()


@pytest.fixture
def cli() -> Iterator[Cli]:
    runner = Cli()
    yield runner
    runner.client.close()


# Value syntax


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", 7),
        ("-3", -3),
        ("0", 0),
        ("007", "007"),
        ("1.5", "1.5"),
        ("wallet", "wallet"),
        ("true", True),
        ("false", False),
        ("True", "True"),
        ("", ""),
        ("str:7", "7"),
        ("str:null", "null"),
        ("str:str:x", "str:x"),
        ("int:007", 7),
        ("float:1.5", 1.5),
        ("bool:false", False),
        ('json:"7"', "7"),
        ("json:null", None),
        ('json:{"a": [1, 2]}', {"a": [1, 2]}),
        ("oid:65ab12cd34ef56ab78cd90ef", ObjectId("65ab12cd34ef56ab78cd90ef")),
        ("date:2026-11-25T10:00Z", datetime(2026, 11, 25, 10, 0)),
        ("http://example.com", "http://example.com"),
    ],
)
def test_typed_values(text: str, expected: Any) -> None:
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["null", "int:x", "bool:yes", "oid:123", "json:{", "date:soon"])
def test_bad_values_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_value(text)


def test_account_references() -> None:
    assert parse_account(["user_id=7", "type=wallet"], None) == {"user_id": 7, "type": "wallet"}
    assert parse_account(["user_id=str:7"], None) == {"user_id": "7"}
    oid = "65ab12cd34ef56ab78cd90ef"
    assert parse_account(None, oid) == ObjectId(oid)
    assert parse_account([f"_id={oid}"], None) == ObjectId(oid)
    assert parse_account(None, "42") == 42
    assert parse_account(None, "str:42") == "42"
    assert parse_account(None, f"str:{oid}") == oid
    assert parse_account(None, "acct-9") == "acct-9"
    for pairs, account_id in [
        (None, None),
        (["user_id=7"], "42"),
        (["user_id"], None),
        (["=7"], None),
        (["a=1", "a=2"], None),
        (["_id=1", "a=2"], None),
        (["a=null"], None),
    ]:
        with pytest.raises(UsageError):
            parse_account(pairs, account_id)


def test_data_dates_and_tokens() -> None:
    assert parse_data(None) is None
    assert parse_data(["note=hello world", "n=3", "vip=true"]) == {
        "note": "hello world",
        "n": 3,
        "vip": True,
    }
    with pytest.raises(UsageError):
        parse_data(["note=a", "note=b"])
    assert parse_when("2026-11-25") == datetime(2026, 11, 25)
    assert parse_when("2026-11-25", end_of_day=True) == datetime(2026, 11, 25, 23, 59, 59, 999000)
    assert parse_when("2026-11-25T10:30:00+01:00") == datetime(2026, 11, 25, 9, 30)
    assert parse_when("2026-11-25T10:30Z") == datetime(2026, 11, 25, 10, 30)
    with pytest.raises(UsageError):
        parse_when("25/11/2026")
    assert parse_resume_token('{"_data": "82ab"}') == {"_data": "82ab"}
    assert parse_resume_token("82ab") == {"_data": "82ab"}
    with pytest.raises(UsageError):
        parse_resume_token("{nope")


# Commands on one shared engine


def test_a_session_of_commands_shares_one_engine(cli: Cli) -> None:
    assert "indexes ensured" in cli.ok("init").out
    opened = cli.data("open", *ALICE, "--min-balance", "0")
    assert opened["attributes"] == {"user_id": 1, "type": "wallet"}
    assert opened["min_balance"] == 0

    written = cli.data("increase", *ALICE, "5000", "--data", "note=top-up", "--data", "n=1")
    assert written["kind"] == "increase"
    [leg] = written["transactions"]
    assert (leg["amount"], leg["balance_after"], leg["data"]) == (
        5000,
        5000,
        {"note": "top-up", "n": 1},
    )

    transfer = cli.data(
        "transfer", "--from", "user_id=1", "--from", "type=wallet", *_to(BOB), "1250"
    )
    assert [t["amount"] for t in transfer["transactions"]] == [-1250, 1250]
    assert transfer["transactions"][0]["balance_after"] == 3750

    cli.ok("decrease", *BOB, "250")
    post = cli.data(
        "post",
        "--leg",
        "-300",
        "user_id=1",
        "type=wallet",
        "--leg",
        "200",
        "user_id=2",
        "type=wallet",
        "--leg",
        "100",
        "user_id=9",
        "type=commission",
        "--data",
        "order=A-17",
    )
    assert [t["amount"] for t in post["transactions"]] == [-300, 200, 100]
    assert len({t["operation_id"] for t in post["transactions"]}) == 1

    assert cli.data("balance", *ALICE)["balance"] == 3450
    assert cli.data("balance", *BOB)["balance"] == 1200
    assert cli.data("balance", *BOB, "--calculated")["balance"] == 1200

    reverted = cli.data("revert", transfer["transaction_ids"][1], "--data", "reason=mistake")
    assert [t["amount"] for t in reverted["transactions"]] == [1250, -1250]
    assert cli.data("balance", *ALICE)["balance"] == 4700

    report = cli.data("report")
    assert report["count"] == 3
    assert report["total"] == 5000 - 250  # the increase minus the decrease
    assert [a["balance"] for a in report["accounts"]] == [4700, 100, -50]
    assert cli.data("report", "--sort", "balance", "--limit", "1")["accounts"][0]["balance"] == -50
    wallets = cli.data("report", "--where", "type=wallet")
    assert {a["attributes"]["user_id"] for a in wallets["accounts"]} == {1, 2}

    stats = cli.data("stats", "--period", "day")
    [today] = stats["periods"]
    assert today["count"] == 9
    assert today["credit"] - today["debit"] == 4750
    alice_stats = cli.data("stats", *ALICE, "--period", "year")["periods"]
    assert alice_stats[0]["net"] == 4700

    verified = cli.data("verify")
    assert verified["ok"] is True
    assert cli.ok("verify").out.strip().endswith("ok")


def _to(account: list[str]) -> list[str]:
    return [arg if not arg.startswith("--") else "--to" for arg in account]


def test_history_pages_with_running_balance(cli: Cli) -> None:
    for amount in ("100", "200", "-50", "400", "25"):
        cli.ok("increase", *ALICE, amount)
    page = cli.data("history", *ALICE, "--limit", "2")
    assert [(t["amount"], t["balance_after"]) for t in page["transactions"]] == [
        (25, 675),
        (400, 650),
    ]
    assert page["next_before_seq"] == 4
    rest = cli.data("history", *ALICE, "--limit", "10", "--before-seq", "4")
    assert [t["balance_after"] for t in rest["transactions"]] == [250, 300, 100]
    assert rest["next_before_seq"] is None

    text = cli.ok("history", *ALICE, "--limit", "2").out
    assert "more: add --before-seq 4" in text
    assert "+0.25" in text
    assert "6.75" in text

    everything = cli.data("history", *ALICE, "--limit", "0")
    assert len(everything["transactions"]) == 5
    none = cli.data("history", *ALICE, "--end", "2000-01-01")
    assert none["transactions"] == []
    today = datetime.now(timezone.utc).date().isoformat()
    assert len(cli.data("history", *ALICE, "--start", today, "--end", today)["transactions"]) == 5


def test_limit_0_shows_everything_past_the_ledgers_pages(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mongoledger.cli._commands
    from mongoledger._sync import _reads

    # The ledger returns one page at a time; --limit 0 ("all") reads them all.
    monkeypatch.setattr(mongoledger.cli._commands, "_PAGE", 2)
    monkeypatch.setattr(_reads, "HISTORY_PAGE", 2)
    monkeypatch.setattr(_reads, "REPORT_PAGE", 2)
    for amount in ("1", "2", "3", "4", "5"):
        cli.ok("increase", *ALICE, amount)
    cli.ok("increase", *BOB, "1")
    cli.ok("increase", "--account", "user_id=3", "1")
    rows = cli.data("history", *ALICE, "--limit", "0")["transactions"]
    assert [t["amount"] for t in rows] == [5, 4, 3, 2, 1]
    assert len(cli.data("history", *ALICE)["transactions"]) == 5  # --limit 50 by default
    assert [t["amount"] for t in cli.data("history", *ALICE, "--limit", "3")["transactions"]] == [
        5,
        4,
        3,
    ]
    report = cli.data("report")
    assert (report["count"], report["total"]) == (3, 17)
    assert cli.data("report", "--limit", "1", "--skip", "1")["count"] == 1
    assert cli.data("report", "--skip", "1")["count"] == 2


def test_human_output_uses_currency_and_date_options(cli: Cli) -> None:
    cli.ok("increase", *ALICE, "123456789")
    cli.ok("decrease", *ALICE, "123456800")
    euro = [
        "--currency-symbol",
        " €",
        "--symbol-position",
        "after",
        "--thousands-sep",
        ".",
        "--decimal-sep",
        ",",
    ]
    assert cli.ok(*euro, "balance", *ALICE).out.strip() == "user_id=1 type=wallet: -0,11 €"
    history = cli.ok(*euro, "history", *ALICE, "--date-format", "%d/%m/%Y").out
    assert "+1.234.567,89 €" in history
    assert "-1.234.568,00 €" in history
    assert datetime.now(timezone.utc).strftime("%d/%m/%Y") in history
    dollars = cli.ok("--currency-symbol", "$", "--decimals", "0", "balance", *ALICE).out
    assert dollars.strip() == "user_id=1 type=wallet: -$11"
    mills = cli.ok("--decimals", "3", "--thousands-sep", "", "report").out
    assert "-0.011" in mills
    assert "1 account(s), total -0.011" in mills


def test_major_units_are_converted_exactly(cli: Cli) -> None:
    cli.ok("--major", "increase", *ALICE, "12.34")
    cli.ok("increase", *ALICE, "--major", "--decimals", "3", "0.001")
    assert cli.data("balance", *ALICE)["balance"] == 1235
    refused = cli("--major", "increase", *ALICE, "0.001")
    assert refused.code == 2
    assert "more than 2 decimal places" in refused.err
    assert cli.data("balance", *ALICE)["balance"] == 1235


def test_global_options_work_before_or_after_the_command(cli: Cli) -> None:
    cli.ok("increase", *ALICE, "100")
    assert cli.ok("balance", *ALICE, "--json").json()["balance"] == 100
    assert cli.ok("--json", "balance", *ALICE).json()["balance"] == 100
    assert cli.ok("balance", "--currency-symbol", "£", *ALICE).out.strip().endswith("£1.00")


def test_accounts_by_id(cli: Cli) -> None:
    written = cli.data("increase", "--account-id", "42", "700")
    assert written["transactions"][0]["account_id"] == 42
    assert cli.data("balance", "--account", "_id=42")["balance"] == 700
    string_id = cli.data("increase", "--account-id", "str:42", "5")
    assert string_id["transactions"][0]["account_id"] == "42"
    opened = cli.data("open", *ALICE)
    by_oid = cli.data("balance", "--account-id", opened["id"])
    assert by_oid["attributes"] == {"user_id": 1, "type": "wallet"}
    legs = cli.data("post", "--leg", "-5", "_id=42", "--leg", "5", f"_id={opened['id']}")
    assert [t["account_id"] for t in legs["transactions"]] == [42, opened["id"]]


def test_idempotent_retry_writes_once(cli: Cli) -> None:
    first = cli.data("increase", *ALICE, "500", "--idempotency-key", "order-1")
    again = cli.data("increase", *ALICE, "500", "--idempotency-key", "order-1")
    assert again["transaction_ids"] == first["transaction_ids"]
    assert cli.data("balance", *ALICE)["balance"] == 500
    conflict = cli("increase", *ALICE, "600", "--idempotency-key", "order-1")
    assert conflict.code == 1
    assert "IdempotencyConflict" not in conflict.err
    assert "order-1" in conflict.err


def test_no_auto_create_refuses_unknown_accounts(cli: Cli) -> None:
    refused = cli("--no-auto-create", "increase", *ALICE, "5")
    assert refused.code == 1
    assert "does not exist" in refused.err
    cli.ok("open", *ALICE)
    cli.ok("--no-auto-create", "increase", *ALICE, "5")


def test_verify_finds_and_repairs_drift(cli: Cli) -> None:
    cli.ok("increase", *ALICE, "500")
    cli.db["accounts"].update_one({"user_id": 1}, {"$inc": {"balance": 7}})
    broken = cli("verify")
    assert broken.code == 1
    assert "balance mismatch" in broken.out
    assert "calculated 5.00" in broken.out
    assert "NOT OK" in broken.out
    assert broken.err.strip() == (
        "mongoledger: error: the ledger is inconsistent; "
        "balance drift can be rebuilt with verify --repair"
    )
    assert json.loads(cli("--json", "verify").out)["ok"] is False
    repaired = cli.ok("verify", "--repair")
    assert "(repaired)" in repaired.out
    assert cli.data("verify")["ok"] is True
    assert cli.data("balance", *ALICE)["balance"] == 500


def test_verify_shows_and_repairs_running_balances(cli: Cli) -> None:
    cli.ok("increase", *ALICE, "500")
    cli.db["accounts"].update_one({"user_id": 1}, {"$inc": {"seq": 1}})  # a number lost
    cli.ok("increase", *ALICE, "100")
    broken = cli("verify")
    assert broken.code == 1
    assert "is #3 with balance after 600, should be #2 with 600" in broken.out
    repaired = cli.ok("verify", "--repair")
    assert "should be #2 with 600 (repaired)" in repaired.out
    assert cli.data("verify")["ok"] is True


def test_verify_shows_and_repairs_holds(cli: Cli) -> None:
    """verify names every anomaly it counts: a held sum that is not the pending holds', and a
    captured hold without its capture's legs."""
    cli.ok("increase", *ALICE, "500")
    hold = cli.data(
        "hold", "--from", "user_id=1", "--from", "type=wallet", "--to", "shop_id=3", "40"
    )
    cli.db["accounts"].update_one({"user_id": 1}, {"$inc": {"held": 5}})
    captured = cli.data(
        "hold", "--from", "user_id=1", "--from", "type=wallet", "--to", "shop_id=3", "10"
    )
    operation = ObjectId()
    cli.db["holds"].update_one(
        {"_id": ObjectId(captured["id"])},
        {"$set": {"status": "captured", "operation_id": operation, "captured_amount": 10}},
    )
    broken = cli("verify")
    assert broken.code == 1
    assert "2 holds" in broken.out
    assert "cached 0.55, pending holds 0.40" in broken.out
    assert f"hold {captured['id']}: captured by operation ObjectId('{operation}')" in broken.out
    assert "NOT OK" in broken.out
    repaired = cli.ok("verify", "--repair")
    # The capture that never posted is reopened first, so held is rebuilt from both holds.
    assert "cached 0.55, pending holds 0.50 (repaired)" in repaired.out
    assert f"hold {captured['id']}: captured by operation" in repaired.out
    assert "(reopened)" in repaired.out
    assert cli.data("verify")["ok"] is True
    assert cli.data("holds")["count"] == 2
    assert hold["status"] == "pending"


def test_the_ledgers_log_warnings_are_one_line_each_on_stderr(cli: Cli) -> None:
    """What the ledger logs (here: an index it has to build before a first write, on a
    collection in use) reaches the command's stderr like its other warnings."""
    cli.ok("init")
    cli.ok("increase", *ALICE, "5")
    cli.db["transactions"].drop_index("ledger_date")
    result = cli("increase", *ALICE, "5")
    assert result.code == 0
    assert result.err == (
        "mongoledger: warning: creating index 'ledger_date' on 'transactions' before the first "
        "write; on a large collection run `mongoledger init` (ensure_indexes()) at deploy time "
        "instead\n"
    )
    assert cli.ok("increase", *ALICE, "5").err == ""  # each command builds a new ledger: ok


def test_report_where_names_each_attribute_once(cli: Cli) -> None:
    cli.ok("increase", *ALICE, "5")
    result = cli("report", "--where", "type=wallet", "--where", "type=savings")
    assert result.code == 2
    assert "--where names 'type' twice" in result.err


def test_custom_collections(cli: Cli) -> None:
    layout = ["--accounts-collection", "wallets", "--transactions-collection", "moves"]
    cli.ok(*layout, "increase", *ALICE, "5")
    assert cli.db["wallets"].count_documents({}) == 1
    assert cli.db["moves"].count_documents({}) == 1
    assert cli(*layout, "balance", *BOB).code == 1
    assert cli("balance", *ALICE).code == 1  # the default collections are empty


def test_layout_flags_match_the_application_options(cli: Cli) -> None:
    bare = ["--no-balance-field", "--no-extra-account-link", "--idempotency-collection", "keys"]
    cli.ok(*bare, "increase", *ALICE, "5", "--idempotency-key", "k1")
    cli.ok(*bare, "transfer", "--from", "user_id=1", "--to", "user_id=2", "2")
    assert cli.data(*bare, "balance", *ALICE)["balance"] == 3  # summed: no cached balance
    assert cli.db["accounts"].count_documents({"balance": {"$exists": True}}) == 0
    assert cli.db["transactions"].count_documents({"extra_account_id": {"$exists": True}}) == 0
    assert cli.db["keys"].count_documents({"_id.key": "k1"}) == 1
    assert cli.db["ledger_idempotency"].count_documents({}) == 0
    linked = ["--extra-account-link-field", "counterpart"]
    result = cli(*linked, "transfer", "--from", "user_id=3", "--to", "user_id=4", "1")
    assert result.code == 0
    # The cached-balance layout needs its report index on accounts already in use: said so.
    assert "warning: creating index 'ledger_balance' on 'accounts'" in result.err
    assert cli.db["transactions"].count_documents({"counterpart": {"$exists": True}}) == 2
    # A layout that does not match the documents is refused with a pointer, not guessed:
    mixed = cli("transfer", "--from", "user_id=1", "--to", "user_id=2", "1")
    assert mixed.code == 1
    assert "has no integer 'balance' field" in mixed.err


# Exit codes


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["balance"],
        ["balance", "--account", "user_id=null"],
        ["balance", "--account", "user_id=1", "--account-id", "1"],
        ["balance", "--account", "user_id"],
        ["increase", "--account", "user_id=1", "ten"],
        ["increase", "--account", "user_id=1", "12.5"],
        ["transfer", "--from", "user_id=1", "5"],
        ["post", "--leg", "5"],
        ["history", "--account", "user_id=1", "--start", "yesterday"],
        ["history", "--account", "user_id=1", "--limit", "-1"],
        ["report", "--sort", "name"],
        ["stats", "--period", "week"],
        ["--decimals", "-1", "report"],
        ["--symbol-position", "middle", "report"],
        ["watch", "--kind", "bogus"],
        ["increase", "--account", "user_id=1", "--data", "note", "5"],
        ["hold", "--from", "a=1", "--to", "b=1", "5", "--expires-in", "0"],
        ["hold", "--from", "a=1", "--to", "b=1", "5", "--expires-in", "soon"],
        ["hold", "--from", "a=1", "--to", "b=1", "5", "--expires-at", "next week"],
        ["hold", "--from", "a=1", "--to", "b=1", "5", "--expires-in", "1d", "--expires-at", "x"],
        ["holds", "--status", "open"],
        ["holds", "--limit", "-1"],
        ["expire", "--every", "0"],
        ["expire", "--every", "5", "--now", "2100-01-01"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(*argv)
    captured = capsys.readouterr()  # argparse itself prints to sys.stderr
    assert result.code == 2
    assert "error:" in result.err + captured.err
    assert "Traceback" not in result.err + captured.err
    assert cli.db["transactions"].count_documents({}) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["balance", *ALICE], "does not exist"),
        (["revert", "65ab12cd34ef56ab78cd90ef"], "does not exist"),
        (["revert", "not-an-id"], "not a transaction id"),
        (["transfer", "--from", "user_id=1", "--to", "user_id=1", "5"], "to itself"),
        (["post", "--leg", "5", "a=1", "--leg", "-4", "a=2"], "sum"),
        (["increase", *ALICE, "0"], "amount"),
        (["increase", *ALICE, "5", "--data", "amount=3"], "amount"),
        (["capture", "65ab12cd34ef56ab78cd90ef"], "hold ObjectId('65ab12cd34ef56ab78cd90ef')"),
        (["void", "nope"], "not a hold id"),
        (["capture", "65ab12cd34ef56ab78cd90ef", "--amount", "0"], "capture amount 0"),
        (["hold", "--from", "a=1", "--to", "a=1", "5"], "to itself"),
        (["report", "--currency", "EUR"], "currency_field"),
    ],
)
def test_ledger_errors_exit_1_with_one_line(cli: Cli, argv: list[str], message: str) -> None:
    result = cli(*argv)
    assert result.code == 1
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mongoledger: error: ")
    assert message in lines[0]


def test_holds_on_the_command_line(cli: Cli) -> None:
    cli.ok("open", *ALICE, "--min-balance", "0")
    cli.ok("increase", *ALICE, "10000")
    place = ["hold", "--from", "user_id=1", "--from", "type=wallet", "--to", "shop_id=3"]
    keyed = [
        *place,
        "2500",
        "--expires-in",
        "7d",
        "--data",
        "order=A-17",
        "--idempotency-key",
        "a1",
    ]
    placed = cli.data(*keyed)
    assert (placed["amount"], placed["status"], placed["data"]) == (
        2500,
        "pending",
        {"order": "A-17"},
    )
    assert placed["expires_at"] is not None
    assert cli.data(*keyed)["id"] == placed["id"]  # a retried command holds once
    shown = cli.ok("--currency-symbol", "$", "balance", *ALICE).out
    assert shown.strip() == "user_id=1 type=wallet: $100.00 (available $75.00, held $25.00)"
    assert cli.data("balance", *ALICE) | {"account_id": None} == {
        "account_id": None,
        "attributes": {"user_id": 1, "type": "wallet"},
        "balance": 10000,
        "held": 2500,
        "available": 7500,
    }
    refused = cli("decrease", *ALICE, "7501")
    assert refused.code == 1
    assert "available balance 7500 (balance 10000, held 2500)" in refused.err

    captured = cli.data("capture", placed["id"], "--amount", "1000", "--data", "shipment=S-1")
    assert captured["kind"] == "capture"
    assert [t["amount"] for t in captured["transactions"]] == [-1000, 1000]
    assert {t["hold_id"] for t in captured["transactions"]} == {placed["id"]}
    again = cli("capture", placed["id"])
    assert again.code == 1
    assert "already captured" in again.err
    assert "balance 9000" in cli("decrease", *ALICE, "9001").err  # the rest was released

    second = cli.data(*place, "500")["id"]
    voided = cli.data("void", second, "--data", "reason=cancelled")
    assert (voided["status"], voided["void_data"]) == ("voided", {"reason": "cancelled"})
    assert "voided: hold" in cli.ok("void", cli.data(*place, "1")["id"]).out
    cli.ok(*place, "300", "--expires-at", "2100-01-01T00:00Z")
    assert cli.data("holds", *ALICE)["count"] == 1
    listing = cli.ok("holds", "--status", "all").out
    assert "4 hold(s), 33.01" in listing
    assert "shop_id=3" in listing
    assert cli.data("expire", "--now", "2099-12-31")["released"] == 0
    assert cli.data("expire", "--now", "2100-01-02") == {"released": 1}
    assert cli.ok("expire").out == "released 0 expired hold(s)\n"
    assert cli.data("holds", *ALICE)["count"] == 0
    assert cli.data("verify")["ok"] is True


def test_expire_every_runs_until_interrupted(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mongoledger._core import clock
    from mongoledger.cli import _commands

    cli.ok("increase", *ALICE, "100")
    place = ["hold", "--from", "user_id=1", "--from", "type=wallet", "--to", "shop_id=3"]
    cli.ok(*place, "40", "--expires-in", "60")
    naps: list[float] = []
    real_now = clock.utcnow

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:  # a minute passes: the hold expires
            monkeypatch.setattr(clock, "utcnow", lambda: real_now() + timedelta(minutes=2))
            return
        raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(_commands.time, "sleep", nap)
    result = cli("expire", "--every", "0.5")
    assert result.code == 130
    assert "released 1 expired hold(s)" in result.out
    assert naps == [0.5, 0.5]


def test_expire_every_ends_on_a_database_error(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from pymongo.errors import AutoReconnect

    def unreachable(self: Ledger, *args: Any, **kwargs: Any) -> int:
        raise AutoReconnect("the database is unreachable")

    def nap(seconds: float) -> None:
        raise AssertionError("a failed round is not retried by the command")

    monkeypatch.setattr(Ledger, "expire_holds", unreachable)
    monkeypatch.setattr(time, "sleep", nap)
    result = cli("expire", "--every", "5")
    assert result.code == 1
    assert result.err == "mongoledger: database error: the database is unreachable\n"


@pytest.mark.parametrize("every", ["nan", "inf"])
def test_expire_every_takes_a_finite_number_of_seconds(cli: Cli, every: str) -> None:
    result = cli("expire", "--every", every)
    assert result.code == 2
    assert "--every takes a positive number of seconds" in result.err


def test_currencies_on_the_command_line(cli: Cli) -> None:
    fx = ["--currency-field", "currency"]
    cli.ok(*fx, "increase", "--account", "user_id=1", "--account", "currency=EUR", "100")
    cli.ok(*fx, "increase", "--account", "user_id=2", "--account", "currency=USD", "70")
    mixed = cli(
        *fx,
        "transfer",
        "--from",
        "user_id=1",
        "--from",
        "currency=EUR",
        "--to",
        "user_id=2",
        "--to",
        "currency=USD",
        "5",
    )
    assert mixed.code == 1
    assert "currency mismatch" in mixed.err
    assert cli.data(*fx, "report", "--currency", "USD")["total"] == 70
    (period,) = cli.data(*fx, "stats", "--currency", "EUR")["periods"]
    assert period["credit"] == 100


def test_overdraft_refused_and_revert_twice(cli: Cli) -> None:
    cli.ok("open", *ALICE, "--min-balance", "0")
    written = cli.data("increase", *ALICE, "100")
    overdraft = cli("decrease", *ALICE, "101")
    assert overdraft.code == 1
    assert "insufficient funds" in overdraft.err
    assert cli.db["transactions"].count_documents({}) == 1
    tid = written["transaction_ids"][0]
    cli.ok("revert", tid)
    again = cli("revert", tid)
    assert again.code == 1
    assert "already reverted" in again.err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example:" in text
    assert f"mongoledger {command}" in text.split("example:", 1)[1]


def test_top_level_help_explains_the_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("json:", "str:", "--account-id", "--major", "exit status", "MONGOLEDGER_URI"):
        assert needle in text


def test_environment_supplies_uri_and_db() -> None:
    args = build_parser({"MONGOLEDGER_URI": "mongodb://db0", "MONGOLEDGER_DB": "pay"}).parse_args(
        ["init"]
    )
    assert (resolve(args).uri, args.db) == ("mongodb://db0", "pay")
    args = build_parser({}).parse_args(["--db", "other", "init"])
    assert (resolve(args).kind, args.db) == ("store", "other")


def test_memory_option_runs_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--memory", "--json", "increase", *ALICE, "5"], environ={}) == 0
    assert json.loads(capsys.readouterr().out)["transactions"][0]["amount"] == 5
    assert main(["--memory", "balance", *ALICE], environ={}) == 1  # a fresh engine each run
    assert "does not exist" in capsys.readouterr().err


def test_an_unreachable_server_is_announced_then_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mongoledger.cli._connection

    monkeypatch.setattr(mongoledger.cli._connection, "NOTICE_AFTER", 0.01)
    err = io.StringIO()
    uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"  # the user's wait is honoured
    assert main(["--uri", uri, "balance", *ALICE], environ={}, stderr=err) == 1
    lines = err.getvalue().splitlines()
    assert lines == [
        "mongoledger: connecting to 127.0.0.1:1...",
        "mongoledger: error: cannot reach MongoDB at 127.0.0.1:1 ([Errno 111] Connection "
        "refused); check --uri or MONGOLEDGER_URI (without one, commands use the embedded store)",
    ]


# Every bad connection or format value: one line naming it, exit 2, for every command.

COMMAND_ARGS = {
    "init": [],
    "open": ALICE,
    "increase": [*ALICE, "5"],
    "decrease": [*ALICE, "5"],
    "transfer": ["--from", "user_id=1", "--to", "user_id=2", "5"],
    "post": ["--leg", "5", "a=1", "--leg", "-5", "a=2"],
    "revert": ["65ab12cd34ef56ab78cd90ef"],
    "balance": ALICE,
    "history": ALICE,
    "report": [],
    "stats": [],
    "verify": [],
    "watch": [],
    "hold": ["--from", "user_id=1", "--to", "user_id=2", "5"],
    "capture": ["65ab12cd34ef56ab78cd90ef"],
    "void": ["65ab12cd34ef56ab78cd90ef"],
    "holds": [],
    "expire": [],
    "serve": [],
    "users": ["list"],
    "export": ["exported"],
    "import": ["exported"],
}
BAD_GLOBALS = [
    (["--uri", "mongodb://localhost:99999"], "'mongodb://localhost:99999'"),
    (["--uri", "mongodb://u:secret@db:70000"], "'mongodb://u:***@db:70000'"),
    (["--uri", "localhost"], "'localhost'"),
    (["--uri", "mongodb://db/?tls=maybe"], "'mongodb://db/?tls=maybe'"),
    (["--uri", "mongodb://db/?nosuchoption=1"], "'mongodb://db/?nosuchoption=1'"),
    (["--db", ""], "--db ''"),
    (["--db", "a b$"], "--db 'a b$'"),
    (["--memory", "--db", "x.y"], "--db 'x.y'"),
    (["--decimals", "-1"], "decimals -1"),
    (["--decimals", "x"], "'x'"),
    (["--thousands-sep", "5"], "'5'"),
    (["--symbol-position", "middle"], "'middle'"),
]


@pytest.mark.parametrize("command", sorted(COMMAND_ARGS))
@pytest.mark.parametrize(("options", "shown"), BAD_GLOBALS)
def test_bad_connection_and_format_options_are_one_line_exit_2(
    command: str, options: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = io.StringIO()
    for argv in (
        [*options, command, *COMMAND_ARGS[command]],
        [command, *COMMAND_ARGS[command], *options],
    ):
        assert main(argv, environ={}, stderr=err, stdout=io.StringIO()) == 2
        text = err.getvalue() + capsys.readouterr().err
        err.truncate(0)
        err.seek(0)
        assert "Traceback" not in text
        errors = [line for line in text.splitlines() if "error:" in line]
        assert len(errors) == 1, text
        assert shown in errors[0]
        assert "secret" not in text
        if options[0] in ("--decimals", "--thousands-sep") and options[1] not in ("x",):
            # a global option's error is the command's, not the subcommand's
            assert errors[0].startswith("mongoledger: error:"), text


def test_memory_watch_says_why_it_would_wait_forever() -> None:
    err = io.StringIO()
    assert main(["--memory", "watch"], environ={}, stderr=err) == 2
    assert "would wait forever" in err.getvalue()


def test_demo_json_is_one_document() -> None:
    out = io.StringIO()
    assert main(["--json", "demo"], stdout=out) == 0
    document = json.loads(out.getvalue())
    assert document["ok"] is True
    assert document["zero_sum"]["holds"] is True
    assert document["verify"]["ok"] is True
    assert len(document["accounts"]) == 10
    assert sum(a["balance"] for a in document["accounts"]) == document["zero_sum"]["total"]
    assert document["accounts"][0]["created_at"].endswith("Z")


# watch


@pytest.mark.skipif(not hasattr(Ledger, "watch"), reason="Ledger.watch() is not available yet")
def test_watch_prints_json_lines_resuming_after_a_token(cli: Cli) -> None:
    ledger = Ledger(cli.db)
    with ledger.watch() as stream:
        cli.ok("increase", *ALICE, "100")
        first = next(iter(stream))
    cli.ok("transfer", "--from", "user_id=1", "--from", "type=wallet", *_to(BOB), "40")
    cli.ok("decrease", *BOB, "15")
    token = json.dumps(first.resume_token)
    result = cli.ok("watch", "--resume-after", token, "--limit", "2")
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [e["kind"] for e in events] == ["transfer", "decrease"]
    assert [t["amount"] for t in events[0]["transactions"]] == [-40, 40]
    assert isinstance(events[0]["operation_id"], str)
    only = cli.ok("watch", "--resume-after", token, "--kind", "decrease", "--limit", "1")
    assert json.loads(only.out)["transactions"][0]["amount"] == -15
    bob = cli.ok("watch", "--resume-after", token, *BOB, "--limit", "2")
    assert [json.loads(line)["kind"] for line in bob.out.splitlines()] == ["transfer", "decrease"]


# The demo


def _money(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    return sign * int(re.sub(r"[^0-9]", "", text))


def test_demo_runs_and_its_zero_sum_check_holds() -> None:
    out = io.StringIO()
    assert main(["demo"], stdout=out) == 0
    text = out.getvalue()
    match = re.search(
        r"zero-sum check: sum of all balances (-?\d+) = net external money (-?\d+)", text
    )
    assert match is not None, text
    total, external = int(match.group(1)), int(match.group(2))
    assert total == external
    # The printed all-balances report adds up to the printed total.
    section = text.split("== 11. all balances ==", 1)[1].split("== 12.", 1)[0]
    rows = [line.split() for line in section.strip().splitlines()[2:]]
    assert len(rows) == 10
    assert sum(_money(row[1]) for row in rows) == total
    # The single-entry operations listed add up to the net external money.
    listed = re.findall(r"^  (?:increase|decrease) +\S+ +(\S+)$", text, re.MULTILINE)
    assert sum(_money(amount) for amount in listed) == external
    assert "refused: InsufficientFunds" in text
    assert "the retry returned the same transaction ids" in text
    assert re.search(r"verify\(\): .*: ok$", text, re.MULTILINE)
    stream_lines = re.findall(r"^   \[(change stream|after_write)\]", text, re.MULTILINE)
    assert len(stream_lines) >= 10


def test_demo_with_after_write_hooks_instead_of_a_stream() -> None:
    from mongoledger.demo import run_demo

    out = io.StringIO()
    assert run_demo(out=out, use_watch=False) == 0
    assert "[after_write] post: alice/virtual-money +$2.00" in out.getvalue()
    assert "[change stream]" not in out.getvalue()


def test_demo_failing_midway_leaves_no_consumer_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from mongoledger import demo

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(demo._Demo, "purchase", fail)
    with pytest.raises(RuntimeError, match="boom"):
        demo.run_demo(out=io.StringIO())
    assert not [t for t in threading.enumerate() if t.name == "demo-consumer"]


def test_demo_honours_currency_options() -> None:
    out = io.StringIO()
    argv = ["--currency-symbol", " EUR", "--symbol-position", "after", "--decimal-sep", ","]
    assert main([*argv, "--thousands-sep", ".", "demo"], stdout=out) == 0
    assert "50,00 EUR" in out.getvalue()


def test_python_dash_m_runs_the_demo() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mongoledger", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "zero-sum check" in proc.stdout


# A real server, as a subprocess


@pytest.mark.skipif(not REAL_URI, reason="no MONGOLEDGER_TEST_URI and no wire endpoint")
def test_subprocess_against_a_real_server() -> None:
    from pymongo import MongoClient

    name = f"mongoledger_cli_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "MONGOLEDGER_URI": REAL_URI or "", "MONGOLEDGER_DB": name}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mongoledger", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
            check=False,
        )

    try:
        assert run("init").returncode == 0
        assert run("open", *ALICE, "--min-balance", "0").returncode == 0
        assert run("increase", *ALICE, "500").returncode == 0
        moved = run("transfer", "--from", "user_id=1", "--from", "type=wallet", *_to(BOB), "200")
        assert moved.returncode == 0, moved.stderr
        balance = run("--json", "balance", *ALICE)
        assert balance.returncode == 0, balance.stderr
        assert json.loads(balance.stdout)["balance"] == 300
        refused = run("decrease", *ALICE, "301")
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1
        assert run("bogus").returncode == 2
        verify = run("--json", "verify")
        assert json.loads(verify.stdout)["ok"] is True
    finally:
        client: Any = MongoClient(REAL_URI)
        client.drop_database(name)
        client.close()
