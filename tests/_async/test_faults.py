"""Faults: transient errors are retried, persistent ones surface cleanly, nothing is lost.

Faults come from MongoDB's ``failCommand`` fail point (emulated by the memory engine; on a
real replica set it needs ``enableTestCommands``, so the ``real`` variants skip without it).
On the memory engine a fail point is also armed at the n-th command an operation sends inside
its DB transaction, so every step of every operation kind fails once.

The non-transactional path (plain mongomock, sync only) has no rollback: a failure between the
writes of one operation is compensated when the database is still reachable, and otherwise
leaves drift that ``verify()`` reports and a repair fixes from the transactions.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pymongo.client_session_shared
import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError

import mongoledger.memory._session
from mongoledger import (
    AlreadyReverted,
    AsyncLedger,
    BalanceMismatch,
    InsufficientFunds,
    InvalidAccount,
    LedgerError,
    WriteRetriesExhausted,
)
from mongoledger._async import _holds as holds_module
from mongoledger._async._io import to_list
from tests._async.stored import snapshot
from tests.conftest import NO_TXN, REAL_URI, SKIP_REAL

_IS_SYNC = False

ALICE = {"user_id": 1}  # opened with min_balance=0
BOB = {"user_id": 2}
CAROL = {"user_id": 3}  # created by the post under test
TRANSIENT: dict[str, Any] = {"error_code": 112, "error_labels": ["TransientTransactionError"]}

# Commands each operation sends inside its DB transaction, in order (the module docstring of
# the ledger). The revert undoes the setup's transfer of 30.
STEPS = {
    "increase": ["findAndModify", "insert", "commitTransaction"],
    "decrease": ["findAndModify", "insert", "commitTransaction"],
    "transfer": ["findAndModify", "findAndModify", "insert", "commitTransaction"],
    # CAROL is new: her guarded $inc matches nothing, she is created at zero, then moved.
    "post": [
        "findAndModify",
        "findAndModify",
        "findAndModify",
        "update",
        "findAndModify",
        "insert",
        "commitTransaction",
    ],
    "revert": ["update", "findAndModify", "findAndModify", "insert", "commitTransaction"],
}
# Balances after the operation; the setup leaves ALICE at 70 and BOB at 80.
AFTER = {
    "increase": {"ALICE": 80, "BOB": 80, "CAROL": None},
    "decrease": {"ALICE": 60, "BOB": 80, "CAROL": None},
    "transfer": {"ALICE": 60, "BOB": 90, "CAROL": None},
    "post": {"ALICE": 60, "BOB": 84, "CAROL": 6},
    "revert": {"ALICE": 100, "BOB": 50, "CAROL": None},
}
NAMED = {"ALICE": ALICE, "BOB": BOB, "CAROL": CAROL}
SETUP_TRANSACTIONS = 4


def steps(kind: str, key: str | None) -> list[str]:
    """The commands of one attempt; a keyed operation first inserts its key's record."""
    return (["insert"] if key is not None else []) + STEPS[kind]


EVERY_STEP = [
    pytest.param(kind, n, key, id=f"{kind}-{n}-{cmd}-{'key' if key else 'no-key'}")
    for key in (None, "op-1")
    for kind in STEPS
    for n, cmd in enumerate(steps(kind, key), start=1)
]
EVERY_COMMAND = [
    pytest.param(kind, cmd, id=f"{kind}-{cmd}")
    for kind, cmds in STEPS.items()
    for cmd in dict.fromkeys(cmds)
]


def fail_point(
    commands: list[str],
    *,
    times: int | None = 1,
    error_code: int | None = None,
    error_labels: list[str] | None = None,
    close_connection: bool = False,
) -> dict[str, Any]:
    data: dict[str, Any] = {"failCommands": commands}
    if error_code is not None:
        data["errorCode"] = error_code
    if error_labels:
        data["errorLabels"] = error_labels
    if close_connection:
        data["closeConnection"] = True
    mode: Any = "alwaysOn" if times is None else {"times": times}
    return {"configureFailPoint": "failCommand", "mode": mode, "data": data}


OFF = {"configureFailPoint": "failCommand", "mode": "off"}


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("real", id="real", marks=pytest.mark.skipif(not REAL_URI, reason=SKIP_REAL)),
    ]
)
async def async_fault_db(request: pytest.FixtureRequest) -> Any:
    """A fresh database whose client can set fail points; the fail point is off afterwards."""
    if request.param == "memory":
        from mongoledger.memory import AsyncMemoryClient

        memory = AsyncMemoryClient()
        yield memory["test"]
        await memory.admin.command(OFF)
        return
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(REAL_URI)
    name = f"mongoledger_test_{uuid.uuid4().hex[:12]}"
    try:
        try:
            await client.admin.command(OFF)
        except OperationFailure as exc:
            pytest.skip(f"the server refuses failCommand (start it with enableTestCommands): {exc}")
        yield client[name]
    finally:
        await client.admin.command(OFF)
        await client.drop_database(name)
        await client.close()


@pytest.fixture
async def async_memory_db() -> Any:
    from mongoledger.memory import AsyncMemoryClient

    return AsyncMemoryClient()["test"]


@pytest.fixture
def quick_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make with_transaction give up after 50 ms instead of PyMongo's 120 s."""
    monkeypatch.setattr(pymongo.client_session_shared, "_WITH_TRANSACTION_RETRY_TIME_LIMIT", 0.05)
    monkeypatch.setattr(mongoledger.memory._session, "WITH_TRANSACTION_RETRY_TIME_LIMIT", 0.05)


class StepFault:
    """Arms a transient failCommand at the n-th command sent inside an operation's DB transaction.

    Counting starts when the fault is created; ``seen`` lists the commands in order.
    """

    def __init__(self, server: Any, monkeypatch: pytest.MonkeyPatch, target: int) -> None:
        self.target = target
        self.seen: list[str] = []
        self.fired: str | None = None
        original = server._check_fail_point

        def check(cmd: str, in_txn: bool) -> None:
            if in_txn and cmd != "abortTransaction":
                self.seen.append(cmd)
                if len(self.seen) == self.target:
                    server.configure_fail_point(
                        fail_point(
                            [cmd], error_code=112, error_labels=["TransientTransactionError"]
                        )
                    )
                    self.fired = cmd
            original(cmd, in_txn)

        monkeypatch.setattr(server, "_check_fail_point", check)


async def setup(ledger: AsyncLedger) -> list[ObjectId]:
    """ALICE (guarded) at 70, BOB at 80; returns the transfer the revert case undoes."""
    await ledger.open_account(ALICE, min_balance=0)
    await ledger.increase(ALICE, 100)
    await ledger.increase(BOB, 50)
    return await ledger.transfer(ALICE, BOB, 30)


async def run(ledger: AsyncLedger, kind: str, target: list[ObjectId], key: str | None) -> Any:
    if kind == "increase":
        return await ledger.increase(ALICE, 10, {"note": kind}, idempotency_key=key)
    if kind == "decrease":
        return await ledger.decrease(ALICE, 10, {"note": kind}, idempotency_key=key)
    if kind == "transfer":
        return await ledger.transfer(ALICE, BOB, 10, {"note": kind}, idempotency_key=key)
    if kind == "post":
        legs = [(ALICE, -10), (BOB, 4), (CAROL, 6)]
        return await ledger.post(legs, {"note": kind}, idempotency_key=key)
    return await ledger.revert(target[1], {"note": kind}, idempotency_key=key)


async def check_result(ledger: AsyncLedger, kind: str, result: Any, target: list[ObjectId]) -> None:
    """Balances as expected, exactly one copy of the operation, consistent chains."""
    ids = result if isinstance(result, list) else [result]
    legs = {"increase": 1, "decrease": 1, "transfer": 2, "post": 3, "revert": 2}[kind]
    assert len(ids) == legs
    for name, expected in AFTER[kind].items():
        docs = await to_list(ledger.accounts.find(NAMED[name]))
        if expected is None:
            assert docs == []
        else:
            assert len(docs) == 1
            assert docs[0]["balance"] == expected, name
    docs = await to_list(ledger.transactions.find({"_id": {"$in": ids}}))
    assert len(docs) == legs
    assert {d["kind"] for d in docs} == {kind}
    assert {d["note"] for d in docs} == {kind}
    operation_id = docs[0]["operation_id"]
    assert await ledger.transactions.count_documents({"operation_id": operation_id}) == legs
    assert await ledger.transactions.count_documents({}) == SETUP_TRANSACTIONS + legs
    if kind == "revert":
        for original, reversal in zip(target, ids, strict=True):
            doc = await ledger.transactions.find_one({"_id": original})
            assert doc["reverted_by"] == reversal
    for account in await to_list(ledger.accounts.find({})):
        chain = await to_list(
            ledger.transactions.find({"account_id": account["_id"]}).sort("account_seq", 1)
        )
        assert [t["account_seq"] for t in chain] == list(range(1, len(chain) + 1))
        assert account["seq"] == len(chain)
        assert chain[-1]["balance_after"] == account["balance"]
    report = await ledger.verify()
    assert report.ok, report


# Transient errors: retried, one correct result


@pytest.mark.parametrize(("kind", "n", "key"), EVERY_STEP)
async def test_transient_error_at_every_step(
    async_memory_db: Any, monkeypatch: pytest.MonkeyPatch, kind: str, n: int, key: str | None
) -> None:
    ledger = AsyncLedger(async_memory_db)
    target = await setup(ledger)
    fault = StepFault(async_memory_db.client.server, monkeypatch, n)
    result = await run(ledger, kind, target, key)
    cmds = steps(kind, key)
    assert fault.fired == cmds[n - 1]
    assert fault.seen[: len(cmds)] == cmds[:n] + cmds[: len(cmds) - n]
    assert len(fault.seen) >= len(cmds) + 1  # the failed attempt, then a good one
    await check_result(ledger, kind, result, target)
    if key is not None:  # the caller's own retry changes nothing
        assert await run(ledger, kind, target, key) == result
        await check_result(ledger, kind, result, target)


@pytest.mark.parametrize(("kind", "command"), EVERY_COMMAND)
async def test_transient_error_at_each_command(
    async_fault_db: Any, kind: str, command: str
) -> None:
    """The same through the public failCommand fail point (first occurrence of the command)."""
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    await async_fault_db.client.admin.command(fail_point([command], times=1, **TRANSIENT))
    result = await run(ledger, kind, target, None)
    await check_result(ledger, kind, result, target)


@pytest.mark.parametrize("kind", list(STEPS))
async def test_network_error_inside_transaction_is_retried(async_fault_db: Any, kind: str) -> None:
    """A dropped connection inside the DB transaction is transient too."""
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    await async_fault_db.client.admin.command(
        fail_point(["insert"], times=1, close_connection=True)
    )
    result = await run(ledger, kind, target, None)
    await check_result(ledger, kind, result, target)


# Persistent failures: a clear error, nothing written


@pytest.mark.parametrize(("kind", "command"), EVERY_COMMAND)
@pytest.mark.usefixtures("quick_give_up")
async def test_persistent_transient_error_writes_nothing(
    async_fault_db: Any, kind: str, command: str
) -> None:
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    before = await snapshot(ledger)
    await async_fault_db.client.admin.command(
        fail_point(
            [command], times=None, error_code=112, error_labels=["TransientTransactionError"]
        )
    )
    with pytest.raises(WriteRetriesExhausted, match=command) as info:
        await run(ledger, kind, target, "op-1")
    assert isinstance(info.value, PyMongoError)  # still caught as a database failure
    assert not info.value.may_have_committed
    assert "did not commit" in str(info.value)
    await async_fault_db.client.admin.command(OFF)
    assert await snapshot(ledger) == before
    report = await ledger.verify()
    assert report.ok, report
    # The failure left nothing behind: the same call with the same key now succeeds once.
    result = await run(ledger, kind, target, "op-1")
    await check_result(ledger, kind, result, target)


@pytest.mark.parametrize(("kind", "command"), EVERY_COMMAND)
async def test_permanent_error_writes_nothing(async_fault_db: Any, kind: str, command: str) -> None:
    """A non-transient server error (no retry label) surfaces at once, with its code."""
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    before = await snapshot(ledger)
    await async_fault_db.client.admin.command(fail_point([command], times=None, error_code=8))
    with pytest.raises(OperationFailure, match=command) as info:
        await run(ledger, kind, target, None)
    assert info.value.code == 8
    await async_fault_db.client.admin.command(OFF)
    assert await snapshot(ledger) == before
    assert (await ledger.verify()).ok


@pytest.mark.usefixtures("quick_give_up")
async def test_commit_that_never_answers_writes_nothing(async_fault_db: Any) -> None:
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    before = await snapshot(ledger)
    await async_fault_db.client.admin.command(
        fail_point(["commitTransaction"], times=None, close_connection=True)
    )
    with pytest.raises(WriteRetriesExhausted, match="may have committed") as info:
        await run(ledger, "transfer", target, "op-1")
    assert info.value.may_have_committed  # PyMongo cannot know: the reply never came
    assert info.value.idempotency_key == "op-1"
    await async_fault_db.client.admin.command(OFF)
    assert await snapshot(ledger) == before


# UnknownTransactionCommitResult: the caller retries with the same key, the operation posts once


@pytest.mark.parametrize("kind", list(STEPS))
async def test_unknown_commit_result_retried_by_driver(async_fault_db: Any, kind: str) -> None:
    """Two dropped commit replies: PyMongo retries the commit itself; one copy is posted."""
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    await async_fault_db.client.admin.command(
        fail_point(["commitTransaction"], times=2, close_connection=True)
    )
    result = await run(ledger, kind, target, "op-1")
    await check_result(ledger, kind, result, target)


@pytest.mark.parametrize("kind", list(STEPS))
async def test_unknown_commit_result_not_committed_then_caller_retries(
    async_fault_db: Any, kind: str
) -> None:
    """MaxTimeMSExpired on commit surfaces (PyMongo does not retry it); it had not committed."""
    ledger = AsyncLedger(async_fault_db)
    target = await setup(ledger)
    await async_fault_db.client.admin.command(
        fail_point(
            ["commitTransaction"],
            times=1,
            error_code=50,
            error_labels=["UnknownTransactionCommitResult"],
        )
    )
    with pytest.raises(WriteRetriesExhausted, match=r"may have committed.*'op-1' is safe") as info:
        await run(ledger, kind, target, "op-1")
    assert info.value.may_have_committed
    assert info.value.has_error_label("UnknownTransactionCommitResult")
    assert info.value.code == 50
    assert isinstance(info.value.__cause__, OperationFailure)
    result = await run(ledger, kind, target, "op-1")
    await check_result(ledger, kind, result, target)
    assert await run(ledger, kind, target, "op-1") == result


@pytest.mark.parametrize("kind", list(STEPS))
async def test_unknown_commit_result_committed_then_caller_retries(
    async_memory_db: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The commit succeeded but its reply was lost: the caller's retry returns the first ids."""
    ledger = AsyncLedger(async_memory_db)
    target = await setup(ledger)
    server = async_memory_db.client.server
    commit = server._commit

    def commit_then_lose_reply(session: Any) -> None:
        commit(session)
        monkeypatch.setattr(server, "_commit", commit)
        raise OperationFailure(
            "operation exceeded time limit",
            code=50,
            details={"errorLabels": ["UnknownTransactionCommitResult"]},
        )

    monkeypatch.setattr(server, "_commit", commit_then_lose_reply)
    with pytest.raises(WriteRetriesExhausted) as info:
        await run(ledger, kind, target, "op-1")
    assert info.value.may_have_committed
    assert info.value.has_error_label("UnknownTransactionCommitResult")
    written = await to_list(ledger.transactions.find({"idempotency_key": "op-1"}).sort("leg", 1))
    assert written  # it did commit
    result = await run(ledger, kind, target, "op-1")
    assert (result if isinstance(result, list) else [result]) == [d["_id"] for d in written]
    await check_result(ledger, kind, result, target)


@pytest.mark.parametrize("kind", list(STEPS))
async def test_commit_reply_lost_once_is_retried_by_driver(
    async_memory_db: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The commit succeeded, the reply was lost on the wire: the retried commit is a no-op."""
    ledger = AsyncLedger(async_memory_db)
    target = await setup(ledger)
    server = async_memory_db.client.server
    commit = server._commit

    def commit_then_drop_connection(session: Any) -> None:
        commit(session)
        monkeypatch.setattr(server, "_commit", commit)
        raise AutoReconnect("connection closed after commit")

    monkeypatch.setattr(server, "_commit", commit_then_drop_connection)
    result = await run(ledger, kind, target, None)
    await check_result(ledger, kind, result, target)


# The non-transactional path (plain mongomock): compensation, and drift when it cannot run

ONLY_SYNC = pytest.mark.skipif(not _IS_SYNC, reason="plain mongomock has no async API")


class Outage:
    """Makes chosen collection methods raise ``AutoReconnect``: once, or until it is over."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.down = False
        self.calls: dict[str, int] = {}

    def fail(self, collection: Any, method: str, *, on_call: int = 1, outage: bool) -> None:
        """Fail the ``on_call``-th call of ``method``; with ``outage`` every write fails after."""
        original = getattr(collection, method)
        name = f"{collection.name}.{method}"
        self.calls[name] = 0

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.calls[name] == on_call:
                self.down = outage
                raise AutoReconnect(f"connection lost during {name}")
            return original(*args, **kwargs)

        self.monkeypatch.setattr(collection, method, wrapper)

    def block(self, collection: Any, *methods: str) -> None:
        for method in methods:
            original = getattr(collection, method)

            def wrapper(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                if self.down:
                    raise AutoReconnect("the database is unreachable")
                return _original(*args, **kwargs)

            self.monkeypatch.setattr(collection, method, wrapper)

    def end(self) -> None:
        self.down = False


@pytest.fixture
async def async_plain() -> tuple[AsyncLedger, list[ObjectId]]:
    """A ledger on plain mongomock after ``setup``, and the transfer the revert case undoes."""
    import mongomock

    ledger = AsyncLedger(mongomock.MongoClient()["test"])
    return ledger, await setup(ledger)


# (kind, the failing call, which of its calls fails, accounts left drifted and by how much)
DRIFT_CASES = [
    pytest.param("increase", "transactions.insert_many", 1, {"ALICE": 10}, id="increase"),
    pytest.param("decrease", "transactions.insert_many", 1, {"ALICE": -10}, id="decrease"),
    pytest.param(
        "transfer", "transactions.insert_many", 1, {"ALICE": -10, "BOB": 10}, id="transfer"
    ),
    pytest.param(
        "transfer", "accounts.find_one_and_update", 2, {"ALICE": -10}, id="transfer-second-leg"
    ),
    pytest.param(
        "post", "transactions.insert_many", 1, {"ALICE": -10, "BOB": 4, "CAROL": 6}, id="post"
    ),
    pytest.param("post", "accounts.find_one_and_update", 3, {"ALICE": -10, "BOB": 4}, id="post-3"),
    pytest.param("revert", "transactions.insert_many", 1, {"ALICE": 30, "BOB": -30}, id="revert"),
]


async def _ids_by_name(ledger: AsyncLedger) -> dict[str, Any]:
    out = {}
    for name, attributes in NAMED.items():
        doc = await ledger.accounts.find_one(attributes)
        if doc is not None:
            out[name] = doc["_id"]
    return out


@ONLY_SYNC
@NO_TXN
@pytest.mark.parametrize(("kind", "failing", "on_call", "drift"), DRIFT_CASES)
async def test_no_transactions_failure_is_compensated(
    async_plain: tuple[AsyncLedger, list[ObjectId]],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    failing: str,
    on_call: int,
    drift: dict[str, int],
) -> None:
    """The database is still reachable after the failure: the ledger undoes its own writes."""
    ledger, target = async_plain
    before = await snapshot(ledger)
    outage = Outage(monkeypatch)
    collection_name, method = failing.split(".")
    collection = ledger.accounts if collection_name == "accounts" else ledger.transactions
    outage.fail(collection, method, on_call=on_call, outage=False)
    with pytest.raises(AutoReconnect, match="connection lost"):
        await run(ledger, kind, target, "op-1")
    assert await snapshot(ledger) == before
    assert (await ledger.verify()).ok
    monkeypatch.undo()
    result = await run(ledger, kind, target, "op-1")
    await check_result(ledger, kind, result, target)


@ONLY_SYNC
@NO_TXN
@pytest.mark.parametrize("repair", ["verify", "rebuild"])
@pytest.mark.parametrize(("kind", "failing", "on_call", "drift"), DRIFT_CASES)
async def test_no_transactions_crash_leaves_drift_that_verify_reports_and_repairs(
    async_plain: tuple[AsyncLedger, list[ObjectId]],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    failing: str,
    on_call: int,
    drift: dict[str, int],
    repair: str,
) -> None:
    """The database becomes unreachable mid-operation, so compensation cannot run either."""
    ledger, target = async_plain
    transactions_before = (await snapshot(ledger))[1]
    balances_before = {
        name: (await ledger.accounts.find_one(attributes) or {}).get("balance", 0)
        for name, attributes in NAMED.items()
    }
    outage = Outage(monkeypatch)
    collection_name, method = failing.split(".")
    collection = ledger.accounts if collection_name == "accounts" else ledger.transactions
    outage.fail(collection, method, on_call=on_call, outage=True)
    outage.block(ledger.accounts, "update_one", "delete_one")
    outage.block(ledger.transactions, "update_one")
    with pytest.raises(AutoReconnect):  # the failed write's, or the failed compensation's
        await run(ledger, kind, target, "op-1")
    outage.end()

    # The transactions (the source of truth) are untouched; cached balances drifted.
    transactions_after = (await snapshot(ledger))[1]
    if kind == "revert":  # the originals were marked before the crash
        for doc in transactions_after:
            doc.pop("reverted_by", None)
    assert transactions_after == transactions_before
    ids = await _ids_by_name(ledger)
    report = await ledger.verify()
    assert not report.ok
    expected = [
        BalanceMismatch(
            account_id=ids[name],
            cached=balances_before[name] + delta,
            calculated=balances_before[name],
        )
        for name, delta in drift.items()
    ]
    key = repr
    assert sorted(report.balance_mismatches, key=lambda m: key(m.account_id)) == sorted(
        expected, key=lambda m: key(m.account_id)
    )
    assert report.unbalanced_operations == []
    assert report.missing_accounts == []

    fixed = await (ledger.verify(repair=True) if repair == "verify" else ledger.rebuild_balances())
    assert sorted(map(key, fixed.repaired)) == sorted(key(ids[name]) for name in drift)
    for name, balance in balances_before.items():
        if name in ids:
            assert await ledger.balance(NAMED[name]) == balance
            assert await ledger.calculate_balance(NAMED[name]) == balance
    report = await ledger.verify()
    assert report.ok, report

    # The ledger works on after the repair: the operation can be run (once) again.
    monkeypatch.undo()
    result = await run(ledger, kind, target, "op-1")
    ids_after = result if isinstance(result, list) else [result]
    assert len(ids_after) == (2 if kind in ("transfer", "revert") else 3 if kind == "post" else 1)
    assert (await ledger.verify()).ok


@ONLY_SYNC
@NO_TXN
async def test_no_transactions_crashed_revert_can_be_reverted_after_repair(
    async_plain: tuple[AsyncLedger, list[ObjectId]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revert that crashed after marking the originals must not block them forever."""
    ledger, target = async_plain
    outage = Outage(monkeypatch)
    outage.fail(ledger.transactions, "insert_many", outage=True)
    outage.block(ledger.accounts, "update_one", "delete_one")
    outage.block(ledger.transactions, "update_one")
    with pytest.raises(AutoReconnect):
        await ledger.revert(target[0])
    monkeypatch.undo()
    report = await ledger.verify()
    assert not report.ok
    assert {link.transaction_id for link in report.broken_links} == set(target)
    await ledger.verify(repair=True)
    report = await ledger.verify()
    assert report.ok, report
    try:
        await ledger.revert(target[0])
    except AlreadyReverted as exc:  # pragma: no cover - the bug this test guards against
        pytest.fail(f"a crashed revert left the originals marked: {exc}")
    assert await ledger.balance(ALICE) == 100
    assert (await ledger.verify()).ok


@ONLY_SYNC
@NO_TXN
async def test_no_transactions_refused_operation_removes_the_account_it_created(
    async_plain: tuple[AsyncLedger, list[ObjectId]],
) -> None:
    """SPEC Decision 2 without DB transactions: compensation deletes the auto-created account."""
    ledger, _ = async_plain
    before = await snapshot(ledger)
    with pytest.raises(InsufficientFunds):
        await ledger.post([(CAROL, 500), (ALICE, -500)])
    assert await snapshot(ledger) == before
    assert await ledger.accounts.find_one(CAROL) is None


# Refusals: explained from what the guard saw; a retry never reuses an aborted attempt's account


async def test_retry_after_a_refusal_recreates_the_account_the_attempt_created(
    async_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leg refused after an earlier leg auto-created an account; the cause is gone when the
    ledger looks, so it runs the operation again: it must create the account again, not move
    the id the aborted (or compensated) attempt created."""
    ledger = AsyncLedger(async_db)
    await ledger.open_account(ALICE, min_balance=0)
    other = AsyncLedger(async_db)
    explain, write = ledger._explain_refusal, ledger._write
    pending: list[bool] = []

    async def cause_goes_away(*args: Any) -> None:
        pending.append(True)  # the refusal is not explained: the operation runs again

    async def write_then_credit(*args: Any) -> None:
        try:
            await write(*args)
        finally:
            if pending:  # another writer credits ALICE before the next attempt
                pending.clear()
                monkeypatch.setattr(ledger, "_explain_refusal", explain)
                await other.increase(ALICE, 10)

    monkeypatch.setattr(ledger, "_explain_refusal", cause_goes_away)
    monkeypatch.setattr(ledger, "_write", write_then_credit)
    ids = await ledger.post([(CAROL, 10), (ALICE, -10)])
    assert len(ids) == 2
    carol = await to_list(ledger.accounts.find(CAROL))
    assert len(carol) == 1
    assert carol[0]["balance"] == 10
    assert await ledger.balance(ALICE) == 0
    report = await ledger.verify()
    assert report.ok, report


async def test_refusal_that_keeps_losing_its_cause_names_the_account(
    async_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = AsyncLedger(async_db)
    await ledger.open_account(ALICE, min_balance=0)

    async def never_explained(*args: Any) -> None:
        return None

    monkeypatch.setattr(ledger, "_explain_refusal", never_explained)
    with pytest.raises(LedgerError, match=r"kept conflicting.*'user_id': 1.*5 times") as info:
        await ledger.decrease(ALICE, 1)
    assert type(info.value) is LedgerError
    assert await to_list(ledger.transactions.find({})) == []


async def test_refusal_is_the_specific_error_with_what_the_guard_saw(async_db: Any) -> None:
    """Earlier legs of the operation on the same account count: the message says so exactly."""
    ledger = AsyncLedger(async_db)
    await ledger.open_account(ALICE, min_balance=0)
    await ledger.increase(ALICE, 10)
    with pytest.raises(InsufficientFunds) as info:
        await ledger.post([(ALICE, -6), (BOB, 6), (ALICE, -6), (BOB, 6)])
    assert (info.value.balance, info.value.amount, info.value.min_balance) == (4, -6, 0)
    assert await ledger.balance(ALICE) == 10


async def test_refusal_by_a_malformed_floor_is_invalid_account(async_db: Any) -> None:
    """A min_balance stored as a string by hand: BSON orders strings above numbers, so the
    guard refuses every debit; the ledger says why instead of crashing or retrying."""
    ledger = AsyncLedger(async_db)
    await ledger.increase("legacy", 10)
    await ledger.accounts.update_one({"_id": "legacy"}, {"$set": {"min_balance": "0"}})
    with pytest.raises(InvalidAccount, match="no integer 'min_balance' field"):
        await ledger.decrease("legacy", 1)
    assert await ledger.balance("legacy") == 10


@pytest.mark.usefixtures("quick_give_up")
async def test_exhausted_write_without_a_key_says_to_check_first(async_fault_db: Any) -> None:
    ledger = AsyncLedger(async_fault_db)
    await setup(ledger)
    await async_fault_db.client.admin.command(
        fail_point(["commitTransaction"], times=None, close_connection=True)
    )
    with pytest.raises(WriteRetriesExhausted, match="check whether it was applied") as info:
        await ledger.increase(ALICE, 1)
    assert info.value.idempotency_key is None


@ONLY_SYNC
@NO_TXN
async def test_no_transactions_compensation_under_a_concurrent_write_is_repaired(
    async_plain: tuple[AsyncLedger, list[ObjectId]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused operation's compensation cannot give back the leg number another writer took
    meanwhile: that writer's balance_after counted the compensated amount. verify finds it
    (the gap in the account's numbering) and repair rewrites the history."""
    ledger, _ = async_plain
    other = AsyncLedger(ledger.database)
    explain = ledger._explain_refusal

    async def a_write_in_between(*args: Any) -> None:
        monkeypatch.setattr(ledger, "_explain_refusal", explain)
        await other.increase(BOB, 1)  # after the refused post moved BOB by +500
        await explain(*args)

    monkeypatch.setattr(ledger, "_explain_refusal", a_write_in_between)
    with pytest.raises(InsufficientFunds):
        await ledger.post([(BOB, 500), (ALICE, -500)])
    bob = (await ledger.accounts.find_one(BOB))["_id"]
    assert await ledger.balance(BOB) == 81  # the cached balance was compensated
    assert (await ledger.history(BOB, limit=1))[0].balance_after == 581  # the leg was not
    report = await ledger.verify()
    assert not report.ok
    assert [
        (m.account_id, m.balance_after, m.expected_balance_after)
        for m in report.running_balance_mismatches
    ] == [(bob, 581, 81)]
    assert (await ledger.verify(repair=True)).repaired_histories == [bob]
    assert [r.balance_after for r in await ledger.history(BOB)] == [81, 80, 50]
    assert (await ledger.verify()).ok


@ONLY_SYNC
@NO_TXN
async def test_plain_mongomock_threads_never_cross_a_floor(
    async_plain: tuple[AsyncLedger, list[ObjectId]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mongomock's find-and-modify is a find, then an update: the ledger serializes its writes
    on a plain-mongomock client so that threads cannot both pass a min_balance guard."""
    import threading
    import time

    ledger, _ = async_plain  # ALICE (floor 0) holds 70
    await ledger.decrease(ALICE, 70)
    find_one = ledger.accounts.find_one

    def slow_find_one(*args: Any, **kwargs: Any) -> Any:
        found = find_one(*args, **kwargs)
        time.sleep(0.002)  # let the other threads in between the find and the update
        return found

    monkeypatch.setattr(ledger.accounts, "find_one", slow_find_one)
    moved: list[int] = []
    for _ in range(3):  # each round: 1 to take, 8 threads taking it at once
        await ledger.increase(ALICE, 1)
        start = threading.Barrier(8, timeout=10)

        def take(start: threading.Barrier = start) -> None:
            start.wait()
            try:
                ledger.transfer(ALICE, BOB, 1)
                moved.append(1)
            except InsufficientFunds:
                pass

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    monkeypatch.undo()
    assert len(moved) == 3
    assert await ledger.balance(ALICE) == 0
    report = await ledger.verify()
    assert report.ok, report


async def test_a_refusal_whose_cause_keeps_vanishing_is_tried_five_times(
    async_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guard that refuses while its cause is gone whenever the ledger looks (a concurrent
    writer flipping it back and forth) runs the operation again, five times in all; then the
    error names what refused, and nothing was written."""
    ledger = AsyncLedger(async_db)
    alice = await ledger.open_account(ALICE, min_balance=0)
    bob = await ledger.open_account(BOB)
    await ledger.increase(alice, 10)
    hold_id = await ledger.hold(alice, bob, 4)
    await ledger.void(hold_id)
    before = await snapshot(ledger)
    looks: list[Any] = []

    async def cause_gone(*args: Any) -> None:  # the account no longer explains the refusal
        looks.append(args)

    monkeypatch.setattr(AsyncLedger, "_explain_refusal", cause_gone)
    monkeypatch.setattr(holds_module, "diagnose", lambda *args: looks.append(args))
    conflict = "{} kept conflicting with concurrent writes: the guarded update of {} was refused 5"
    with pytest.raises(
        LedgerError, match=re.escape(conflict.format("transfer", f"account {alice!r}"))
    ):
        await ledger.transfer(alice, bob, 11)
    with pytest.raises(LedgerError, match=re.escape(conflict.format("hold", f"account {alice!r}"))):
        await ledger.hold(alice, bob, 11)
    with pytest.raises(
        LedgerError, match=re.escape(conflict.format("capture", f"hold {hold_id!r}"))
    ):
        await ledger.capture(hold_id)
    with pytest.raises(LedgerError, match=re.escape(conflict.format("void", f"hold {hold_id!r}"))):
        await ledger.void(hold_id)
    assert len(looks) == 4 * 5
    assert await snapshot(ledger) == before
