# ruff: noqa: E501 - the README's queries are kept verbatim, on their long lines
"""The Node tier: ``mongosh`` (npm) runs the README's data-team queries against ``serve-db``.

Runs with ``MONGOLEDGER_NODE=1`` (CI sets it, after ``scripts/node-tools`` installed mongosh);
it skips, with the reason, only when npm cannot reach its registry.
"""

from __future__ import annotations

import datetime
import inspect
import json
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mongoledger import Ledger
from mongoledger.memory import MemoryServer
from tests.wire._node import NODE_TIER, ensure_node_tools

ROOT = Path(__file__).resolve().parents[2]

pytestmark = NODE_TIER


def _engine_options(tmp: Path) -> list[str]:
    """``--store DIR`` once the embedded store exists (``MemoryServer(path=...)``), else
    ``--memory``: the data team's queries run against what ``serve-db`` serves."""
    if "path" in inspect.signature(MemoryServer).parameters:
        return ["--store", str(tmp / "store")]
    return ["--memory"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from benchmarks.wire import serve_db

    with serve_db(*_engine_options(tmp_path_factory.mktemp("serve-db"))) as (uri, _pid):
        yield uri


@pytest.fixture(scope="module")
def shop(served: str) -> Iterator[dict[str, Any]]:
    """A ledger written by the Python library through the wire, as a service would."""
    client: Any = MongoClient(served)
    ledger = Ledger(client["shop"])
    day = datetime.datetime(2026, 11, 1, 12, tzinfo=datetime.timezone.utc)
    dated = {"value": day}
    ledger = Ledger(client["shop"], date_value=lambda: dated["value"])
    bank = ledger.open_account({"type": "bank"})
    wallets = [
        ledger.open_account({"type": "wallet", "user_id": n}, min_balance=0) for n in range(4)
    ]
    for n, wallet in enumerate(wallets):
        dated["value"] = day + datetime.timedelta(days=n % 2)
        ledger.transfer(bank, wallet, 1000 * (n + 1))
    dated["value"] = day + datetime.timedelta(days=2)
    ledger.transfer(wallets[3], wallets[0], 250, {"campaign": "black-friday"})
    ledger.transfer(wallets[2], wallets[1], 100, {"campaign": "black-friday"})
    ledger.post([(wallets[1], -30), (wallets[2], 10), (wallets[3], 20)])
    ledger.increase(wallets[0], 5)  # money entering from outside
    ledger.decrease(wallets[1], 7)
    holds = [ledger.hold(wallets[0], wallets[1], amount) for amount in [40, 30, 20, 10, 5]]
    ledger.capture(holds[0], 25)
    ledger.capture(holds[1])
    ledger.void(holds[2])
    try:
        yield {
            "client": client,
            "ledger": ledger,
            "uri": served,
            "wallets": wallets,
            "bank": bank,
            "holds": holds,
        }
    finally:
        client.close()


def mongosh(uri: str, script: str) -> Any:
    """Run ``script`` (its last expression is printed as EJSON) in mongosh on database shop."""
    shop_uri = uri.replace("/?", "/shop?")
    done = subprocess.run(
        [
            str(ensure_node_tools() / "node_modules" / ".bin" / "mongosh"),
            shop_uri,
            "--quiet",
            "--norc",
            "--eval",
            f"EJSON.stringify(({script}), {{relaxed: false}})",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


def _long(value: Any) -> int:
    """An EJSON number in canonical form ({"$numberLong": "5"}, {"$numberInt": "5"})."""
    if isinstance(value, dict):
        return int(next(iter(value.values())))
    return int(value)


def test_balance_per_account_from_the_source_of_truth(shop: dict[str, Any]) -> None:
    rows = mongosh(
        shop["uri"],
        'db.transactions.aggregate([{ $group: { _id: "$account_id", balance: { $sum: "$amount" } } }]).toArray()',
    )
    ledger = shop["ledger"]
    by_account = {json.dumps(r["_id"], sort_keys=True): _long(r["balance"]) for r in rows}
    assert len(by_account) == 5
    for account in [shop["bank"], *shop["wallets"]]:
        key = json.dumps({"$oid": str(account)})
        assert by_account[key] == ledger.balance(account)


def test_daily_credit_and_debit_totals(shop: dict[str, Any]) -> None:
    rows = mongosh(
        shop["uri"],
        """db.transactions.aggregate([
  { $group: { _id: { $dateToString: { format: "%Y-%m-%d", date: "$date" } },
              credit: { $sum: { $cond: [{ $gt: ["$amount", 0] }, "$amount", 0] } },
              debit:  { $sum: { $cond: [{ $lt: ["$amount", 0] }, { $multiply: ["$amount", -1] }, 0] } } } },
  { $sort: { _id: 1 } }]).toArray()""",
    )
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for doc in shop["client"]["shop"]["transactions"].find():
        day = doc["date"].strftime("%Y-%m-%d")
        expected[day][0 if doc["amount"] > 0 else 1] += abs(doc["amount"])
    got = {r["_id"]: [_long(r["credit"]), _long(r["debit"])] for r in rows}
    assert got == dict(expected)
    assert [r["_id"] for r in rows] == sorted(expected)


def test_transactions_of_a_campaign(shop: dict[str, Any]) -> None:
    rows = mongosh(
        shop["uri"],
        'db.transactions.find({ campaign: "black-friday" }).sort({ date: -1 }).toArray()',
    )
    assert len(rows) == 4  # two transfers, two legs each
    assert {r["campaign"] for r in rows} == {"black-friday"}
    assert sorted(_long(r["amount"]) for r in rows) == [-250, -100, 100, 250]


def test_the_ledger_is_zero_sum(shop: dict[str, Any]) -> None:
    rows = mongosh(
        shop["uri"],
        """db.transactions.aggregate([{ $match: { kind: { $in: ["transfer", "post"] } } },
                           { $group: { _id: null, total: { $sum: "$amount" } } }]).toArray()""",
    )
    assert [_long(r["total"]) for r in rows] == [0]


def test_the_largest_wallets(shop: dict[str, Any]) -> None:
    rows = mongosh(
        shop["uri"],
        'db.accounts.find({ type: "wallet" }).sort({ balance: -1 }).limit(10).toArray()',
    )
    balances = [_long(r["balance"]) for r in rows]
    assert balances == sorted(balances, reverse=True)
    assert len(balances) == 4


def test_mongosh_start_up_and_server_information(shop: dict[str, Any]) -> None:
    info = mongosh(
        shop["uri"],
        "({ hello: db.hello().isWritablePrimary, version: db.version(), "
        "collections: db.getCollectionNames().sort(), indexes: db.transactions.getIndexes().length })",
    )
    assert info["hello"] is True
    assert info["version"].startswith("7.")
    assert {"accounts", "transactions"} <= set(info["collections"])
    assert _long(info["indexes"]) >= 5


def test_pending_holds_by_age(shop: dict[str, Any]) -> None:
    oldest = mongosh(
        shop["uri"],
        'db.holds.find({ status: "pending" }).sort({ created_at: 1 }).limit(50).toArray()',
    )
    assert [r["_id"]["$oid"] for r in oldest] == [str(h) for h in shop["holds"][3:]]
    rows = mongosh(
        shop["uri"],
        """db.holds.aggregate([
  { $match: { status: "pending" } },
  { $group: { _id: { $dateToString: { format: "%Y-%m-%d", date: "$created_at" } },
              holds: { $sum: 1 }, reserved: { $sum: "$amount" } } },
  { $sort: { _id: 1 } }]).toArray()""",
    )
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for doc in shop["client"]["shop"]["holds"].find({"status": "pending"}):
        per_day = expected[doc["created_at"].strftime("%Y-%m-%d")]
        per_day[0] += 1
        per_day[1] += doc["amount"]
    got = {r["_id"]: [_long(r["holds"]), _long(r["reserved"])] for r in rows}
    assert got == dict(expected)
    assert sum(n for n, _ in got.values()) == 2
    assert sum(amount for _, amount in got.values()) == 15
    assert [r["_id"] for r in rows] == sorted(got)


def test_captured_and_voided_holds_per_day(shop: dict[str, Any]) -> None:
    rows = mongosh(
        shop["uri"],
        """db.holds.aggregate([
  { $match: { status: { $in: ["captured", "voided", "expired"] } } },
  { $group: { _id: { day: { $dateToString: { format: "%Y-%m-%d", date: "$closed_at" } },
                     status: "$status" },
              holds: { $sum: 1 }, held: { $sum: "$amount" },
              captured: { $sum: { $ifNull: ["$captured_amount", 0] } } } },
  { $sort: { "_id.day": 1, "_id.status": 1 } }]).toArray()""",
    )
    got = [
        (
            r["_id"]["day"],
            r["_id"]["status"],
            _long(r["holds"]),
            _long(r["held"]),
            _long(r["captured"]),
        )
        for r in rows
    ]
    closed = {
        doc["_id"]: doc
        for doc in shop["client"]["shop"]["holds"].find({"status": {"$ne": "pending"}})
    }
    day = next(iter(closed.values()))["closed_at"].strftime("%Y-%m-%d")
    assert got == [(day, "captured", 2, 70, 55), (day, "voided", 1, 20, 0)]


def test_an_accounts_reserved_money(shop: dict[str, Any]) -> None:
    wallet = shop["wallets"][0]
    rows = mongosh(
        shop["uri"],
        f"""db.holds.aggregate([{{ $match: {{ status: "pending", from_account_id: ObjectId("{wallet}") }} }},
                    {{ $group: {{ _id: null, held: {{ $sum: "$amount" }} }} }}]).toArray()""",
    )
    assert [_long(r["held"]) for r in rows] == [15]
    assert shop["ledger"].get_account(wallet).held == 15
