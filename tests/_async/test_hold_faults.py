"""Faults in hold, capture, void and expiry: transient errors are retried and close a hold once,
persistent ones write nothing, an unknown commit outcome is resolved by retrying with the key.

Uses the fault machinery of ``test_faults``: MongoDB's ``failCommand`` fail point (memory engine
and, with ``enableTestCommands``, a real replica set) and, on the memory engine, a fail point
armed at the n-th command a step sends inside its DB transaction. Without DB transactions
(plain mongomock, sync only) a failure is compensated, and a crash leaves drift that
``verify(repair=True)`` repairs.
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError

from mongoledger import AsyncLedger, HoldClosed, WriteRetriesExhausted
from mongoledger._async._io import to_list
from tests._async.stored import holds_of, snapshot
from tests._async.test_faults import (  # noqa: F401 (fixtures)
    OFF,
    ONLY_SYNC,
    TRANSIENT,
    Outage,
    StepFault,
    async_fault_db,
    async_memory_db,
    fail_point,
    quick_give_up,
)
from tests.conftest import NO_TXN

_IS_SYNC = False

ALICE = {"user_id": 1}  # min_balance 0, at 100, with a pending hold of 40 for BOB
BOB = {"user_id": 2}

# Commands each step sends inside its DB transaction, in order.
STEPS = {
    "hold": ["findAndModify", "insert", "commitTransaction"],
    # the hold's closing update (it returns the hold), then the two accounts, then both legs
    "capture": ["findAndModify", "findAndModify", "findAndModify", "insert", "commitTransaction"],
    "void": ["findAndModify", "update", "commitTransaction"],
    "expire": ["findAndModify", "update", "commitTransaction"],
}
KEYED = ("hold", "capture")  # void and expiry take no idempotency key


def steps(kind: str, key: str | None) -> list[str]:
    return (["insert"] if key is not None else []) + STEPS[kind]


EVERY_STEP = [
    pytest.param(kind, n, key, id=f"{kind}-{n}-{cmd}-{'key' if key else 'no-key'}")
    for key in (None, "op-1")
    for kind in STEPS
    if key is None or kind in KEYED
    for n, cmd in enumerate(steps(kind, key), start=1)
]
EVERY_COMMAND = [
    pytest.param(kind, cmd, id=f"{kind}-{cmd}")
    for kind, cmds in STEPS.items()
    for cmd in dict.fromkeys(cmds)
]


async def setup(ledger: AsyncLedger) -> ObjectId:
    """ALICE (guarded) at 100 with a pending hold of 40 for BOB; returns the hold."""
    from datetime import timedelta

    await ledger.open_account(ALICE, min_balance=0)
    await ledger.increase(ALICE, 100)
    await ledger.open_account(BOB)
    return await ledger.hold(ALICE, BOB, 40, expires_at=timedelta(hours=1))


async def run(ledger: AsyncLedger, kind: str, hold_id: ObjectId, key: str | None) -> Any:
    if kind == "hold":
        return await ledger.hold(ALICE, BOB, 10, {"note": kind}, idempotency_key=key)
    if kind == "capture":
        return await ledger.capture(hold_id, 30, {"note": kind}, idempotency_key=key)
    if kind == "void":
        return await ledger.void(hold_id, {"note": kind})
    from datetime import datetime, timedelta, timezone

    return await ledger.expire_holds(datetime.now(timezone.utc) + timedelta(hours=2))


async def check_result(ledger: AsyncLedger, kind: str, result: Any, hold_id: ObjectId) -> None:
    """Balances, held and hold statuses as expected, one copy of everything, verify() ok."""
    alice = await ledger.get_account(ALICE)
    bob = await ledger.get_account(BOB)
    hold = await ledger.get_hold(hold_id)
    holds = await holds_of(ledger).count_documents({})
    transactions = await ledger.transactions.count_documents({})
    if kind == "hold":
        assert isinstance(result, ObjectId)
        assert (alice.balance, alice.held, bob.balance) == (100, 50, 0)
        assert (holds, transactions) == (2, 1)
        assert (await ledger.get_hold(result)).data == {"note": "hold"}
    elif kind == "capture":
        assert len(result) == 2
        assert (alice.balance, alice.held, bob.balance) == (70, 0, 30)
        assert (hold.status, hold.captured_amount) == ("captured", 30)
        assert (holds, transactions) == (1, 3)
        legs = await to_list(ledger.transactions.find({"hold_id": hold_id}))
        assert sorted(d["amount"] for d in legs) == [-30, 30]
        assert {d["operation_id"] for d in legs} == {hold.operation_id}
    else:
        assert result == (1 if kind == "expire" else None)
        assert (alice.balance, alice.held, bob.balance) == (100, 0, 0)
        assert hold.status == ("expired" if kind == "expire" else "voided")
        assert (holds, transactions) == (1, 1)
    report = await ledger.verify()
    assert report.ok, report


# Transient errors: retried, the hold closes once


@pytest.mark.parametrize(("kind", "n", "key"), EVERY_STEP)
async def test_transient_error_at_every_step(
    async_memory_db: Any, monkeypatch: pytest.MonkeyPatch, kind: str, n: int, key: str | None
) -> None:
    ledger = AsyncLedger(async_memory_db)
    hold_id = await setup(ledger)
    fault = StepFault(async_memory_db.client.server, monkeypatch, n)
    result = await run(ledger, kind, hold_id, key)
    cmds = steps(kind, key)
    assert fault.fired == cmds[n - 1]
    assert fault.seen[: len(cmds)] == cmds[:n] + cmds[: len(cmds) - n]
    await check_result(ledger, kind, result, hold_id)
    if key is not None:  # the caller's own retry changes nothing
        assert await run(ledger, kind, hold_id, key) == result
        await check_result(ledger, kind, result, hold_id)


@pytest.mark.parametrize(("kind", "command"), EVERY_COMMAND)
async def test_transient_error_at_each_command(
    async_fault_db: Any, kind: str, command: str
) -> None:
    ledger = AsyncLedger(async_fault_db)
    hold_id = await setup(ledger)
    await async_fault_db.client.admin.command(fail_point([command], times=1, **TRANSIENT))
    result = await run(ledger, kind, hold_id, None)
    await check_result(ledger, kind, result, hold_id)


@pytest.mark.parametrize(("kind", "command"), EVERY_COMMAND)
@pytest.mark.usefixtures("quick_give_up")
async def test_persistent_transient_error_writes_nothing(
    async_fault_db: Any, kind: str, command: str
) -> None:
    ledger = AsyncLedger(async_fault_db)
    hold_id = await setup(ledger)
    before = await snapshot(ledger)
    await async_fault_db.client.admin.command(fail_point([command], times=None, **TRANSIENT))
    key = "op-1" if kind in KEYED else None
    with pytest.raises(PyMongoError, match=command):
        await run(ledger, kind, hold_id, key)
    await async_fault_db.client.admin.command(OFF)
    assert await snapshot(ledger) == before
    result = await run(ledger, kind, hold_id, key)
    await check_result(ledger, kind, result, hold_id)


# An unknown commit outcome: retrying with the same key resolves it


@pytest.mark.parametrize("kind", KEYED)
async def test_unknown_commit_result_not_committed_then_caller_retries(
    async_fault_db: Any, kind: str
) -> None:
    ledger = AsyncLedger(async_fault_db)
    hold_id = await setup(ledger)
    await async_fault_db.client.admin.command(
        fail_point(
            ["commitTransaction"],
            times=1,
            error_code=50,
            error_labels=["UnknownTransactionCommitResult"],
        )
    )
    with pytest.raises(WriteRetriesExhausted, match="may have committed") as info:
        await run(ledger, kind, hold_id, "op-1")
    assert info.value.has_error_label("UnknownTransactionCommitResult")
    result = await run(ledger, kind, hold_id, "op-1")
    await check_result(ledger, kind, result, hold_id)
    assert await run(ledger, kind, hold_id, "op-1") == result


@pytest.mark.parametrize("kind", [*KEYED, "void"])
async def test_unknown_commit_result_committed_then_caller_retries(
    async_memory_db: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The commit succeeded, its reply was lost: a keyed retry returns the first result; a
    retried void learns that the hold is voided already."""
    ledger = AsyncLedger(async_memory_db)
    hold_id = await setup(ledger)
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
    key = "op-1" if kind in KEYED else None
    with pytest.raises(WriteRetriesExhausted, match="may have committed"):
        await run(ledger, kind, hold_id, key)
    if kind == "void":
        with pytest.raises(HoldClosed, match="already voided"):
            await run(ledger, kind, hold_id, key)
        await check_result(ledger, kind, None, hold_id)
        return
    result = await run(ledger, kind, hold_id, key)
    await check_result(ledger, kind, result, hold_id)
    assert await run(ledger, kind, hold_id, key) == result


# Without DB transactions (plain mongomock): compensation, and drift that verify repairs

# (kind, the failing call, which of its calls fails)
NO_TXN_CASES = [
    pytest.param("hold", "holds.insert_one", 1, id="hold-insert"),
    pytest.param("capture", "accounts.find_one_and_update", 2, id="capture-second-account"),
    pytest.param("capture", "transactions.insert_many", 1, id="capture-legs"),
    pytest.param("void", "accounts.update_one", 1, id="void-release"),
    pytest.param("expire", "accounts.update_one", 1, id="expire-release"),
]


@pytest.fixture
async def async_plain() -> tuple[AsyncLedger, ObjectId]:
    import mongomock

    ledger = AsyncLedger(mongomock.MongoClient()["test"])
    return ledger, await setup(ledger)


def collection_of(ledger: AsyncLedger, name: str) -> Any:
    return {"accounts": ledger.accounts, "transactions": ledger.transactions}.get(
        name, holds_of(ledger)
    )


@ONLY_SYNC
@NO_TXN
@pytest.mark.parametrize(("kind", "failing", "on_call"), NO_TXN_CASES)
async def test_no_transactions_failure_is_compensated(
    async_plain: tuple[AsyncLedger, ObjectId],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    failing: str,
    on_call: int,
) -> None:
    ledger, hold_id = async_plain
    before = await snapshot(ledger)
    name, method = failing.split(".")
    Outage(monkeypatch).fail(collection_of(ledger, name), method, on_call=on_call, outage=False)
    with pytest.raises(AutoReconnect, match="connection lost"):
        await run(ledger, kind, hold_id, "op-1" if kind in KEYED else None)
    after = await snapshot(ledger)
    # A compensated $inc of held leaves 0 where the field was missing: the same sum.
    assert _held_as_zero(after) == _held_as_zero(before)
    assert (await ledger.verify()).ok
    monkeypatch.undo()
    result = await run(ledger, kind, hold_id, "op-1" if kind in KEYED else None)
    await check_result(ledger, kind, result, hold_id)


def _held_as_zero(snap: tuple[list[Any], ...]) -> tuple[list[Any], ...]:
    accounts = [{**doc, "held": doc.get("held", 0)} for doc in snap[0]]
    return (accounts, *snap[1:])


@ONLY_SYNC
@NO_TXN
@pytest.mark.parametrize(("kind", "failing", "on_call"), NO_TXN_CASES)
async def test_no_transactions_crash_leaves_drift_that_verify_repairs(
    async_plain: tuple[AsyncLedger, ObjectId],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    failing: str,
    on_call: int,
) -> None:
    """The database becomes unreachable midway, so compensation cannot run either: verify
    reports the drift and a repair restores a state from which the step runs (once) again."""
    ledger, hold_id = async_plain
    outage = Outage(monkeypatch)
    name, method = failing.split(".")
    outage.fail(collection_of(ledger, name), method, on_call=on_call, outage=True)
    outage.block(ledger.accounts, "update_one", "delete_one")
    outage.block(ledger.transactions, "update_one")
    outage.block(holds_of(ledger), "update_one")
    with pytest.raises(AutoReconnect):
        await run(ledger, kind, hold_id, None)
    outage.end()
    monkeypatch.undo()
    assert not (await ledger.verify()).ok
    fixed = await ledger.verify(repair=True)
    assert fixed.ok, fixed
    report = await ledger.verify()
    assert report.ok, report
    alice = await ledger.get_account(ALICE)
    pending = await ledger.holds(ALICE)
    assert alice.held == sum(h.amount for h in pending)
    assert alice.balance == 100  # no money moved without its transactions
    if kind in ("capture",):  # reopened: it can be captured after all
        assert [h.id for h in pending] == [hold_id]
        await ledger.capture(hold_id, 30)
        assert (await ledger.verify()).ok
