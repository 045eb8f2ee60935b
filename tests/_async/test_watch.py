"""Change-stream notifications: watch, listen with checkpoints, typed events."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from mongoledger import (
    AsyncLedger,
    ChangeStreamError,
    ChangeStreamHistoryLost,
    ChangeStreamInvalidated,
    InsufficientFunds,
    LedgerEvent,
)
from mongoledger._async._io import sleep
from mongoledger.memory import AsyncMemoryClient, MemoryServer
from tests.conftest import REAL_URI

_IS_SYNC = False
WAIT = 10.0  # seconds a test waits for events before it fails


def other_database(db: Any) -> Any:
    """The same database through another client (another process, as far as the ledger knows)."""
    module = type(db).__module__
    if module.startswith("mongoledger.memory"):
        return type(db.client)(server=db.client.server)[db.name]
    if module.startswith("tests.motor_shim"):
        from tests.motor_shim import motor_shape_database

        return motor_shape_database(type(db.client._inner)(server=db.client._inner.server))
    if module.startswith("motor"):
        from motor.motor_asyncio import AsyncIOMotorClient

        motor_client = AsyncIOMotorClient(REAL_URI)
        _OTHER_CLIENTS.append(motor_client)
        return motor_client[db.name]
    client = type(db.client)(REAL_URI)
    _OTHER_CLIENTS.append(client)
    return client[db.name]


_OTHER_CLIENTS: list[Any] = []  # the real-server clients other_database opened


@pytest.fixture(autouse=True)
async def _close_other_clients() -> Any:
    yield
    while _OTHER_CLIENTS:
        client = _OTHER_CLIENTS.pop()
        if inspect.iscoroutinefunction(client.close):  # PyMongo's async client
            await client.close()
        else:  # Motor's close is plain
            client.close()


@pytest.fixture
async def ledger(async_db: Any, engine: str) -> AsyncLedger:
    if engine == "mongomock":
        pytest.skip("plain mongomock has no change streams (see test_deployments.py)")
    ledger = AsyncLedger(async_db)
    await ledger.ensure_indexes()
    return ledger


async def drain(stream: Any, count: int) -> list[LedgerEvent]:
    events: list[LedgerEvent] = []
    deadline = time.monotonic() + WAIT
    while len(events) < count and time.monotonic() < deadline:
        event = await stream.try_next()
        if event is not None:
            events.append(event)
    return events


async def test_transfer_is_one_event_with_both_legs(ledger: AsyncLedger) -> None:
    async with await ledger.watch(max_await_time_ms=50) as stream:
        ids = await ledger.transfer("a", "b", 5, {"note": "rent"})
        (event,) = await drain(stream, 1)
    assert event.kind == "transfer"
    assert [t.id for t in event.transactions] == ids
    assert [t.amount for t in event.transactions] == [-5, 5]
    assert event.account_ids == ["a", "b"]
    assert event.transactions[0].data == {"note": "rent"}
    assert event.operation_id == event.transactions[0].operation_id
    assert event.resume_token
    assert event.committed_at is not None


async def test_five_leg_post_is_one_event(ledger: AsyncLedger) -> None:
    legs = [("a", -10), ("b", 1), ("c", 2), ("d", 3), ("e", 4)]
    async with await ledger.watch(max_await_time_ms=50) as stream:
        ids = await ledger.post(legs)
        (event,) = await drain(stream, 1)
    assert [t.id for t in event.transactions] == ids
    assert len(event.transactions) == 5


async def test_events_from_another_client(ledger: AsyncLedger, async_db: Any) -> None:
    writer = AsyncLedger(other_database(async_db))
    async with await ledger.watch(max_await_time_ms=50) as stream:
        tid = await writer.increase("a", 7)
        (event,) = await drain(stream, 1)
    assert event.transactions[0].id == tid


async def test_no_event_for_refused_or_vetoed_operations(ledger: AsyncLedger) -> None:
    floor = await ledger.open_account({"user": 1}, min_balance=0)
    async with await ledger.watch(max_await_time_ms=50) as stream:
        with pytest.raises(InsufficientFunds):
            await ledger.transfer(floor, "b", 5)

        def veto(ctx: Any) -> None:
            if ctx.amount == 13:
                raise RuntimeError("vetoed")

        ledger.before_write(veto)
        with pytest.raises(RuntimeError):
            await ledger.increase("a", 13)
        marker = await ledger.increase("a", 1)
        events = await drain(stream, 1)
        assert await stream.try_next() is None
    assert [e.transactions[0].id for e in events] == [marker]


async def test_filters_by_kind_and_account(ledger: AsyncLedger) -> None:
    async with await ledger.watch(kinds=["transfer"], max_await_time_ms=50) as by_kind:
        await ledger.increase("a", 5)
        transfer = await ledger.transfer("a", "b", 1)
        (event,) = await drain(by_kind, 1)
        assert [t.id for t in event.transactions] == transfer
    async with await ledger.watch(accounts=["c"], max_await_time_ms=50) as by_account:
        await ledger.transfer("a", "b", 1)
        post = await ledger.post([("a", -3), ("b", 1), ("c", 2)])
        pair = await ledger.transfer("c", "a", 1)
        events = await drain(by_account, 2)
        assert await by_account.try_next() is None
    assert [[t.id for t in e.transactions] for e in events] == [post, pair]


async def test_resume_after_token_yields_exactly_the_rest(ledger: AsyncLedger) -> None:
    async with await ledger.watch(max_await_time_ms=50) as stream:
        ids = [await ledger.increase("a", n) for n in (1, 2, 3)]
        first, *_ = await drain(stream, 3)
    async with await ledger.watch(resume_after=first.resume_token, max_await_time_ms=50) as again:
        rest = await drain(again, 2)
        assert await again.try_next() is None
    assert [e.transactions[0].id for e in rest] == ids[1:]


async def test_quiet_stream_advances_its_resume_token(ledger: AsyncLedger) -> None:
    async with await ledger.watch(kinds=["transfer"], max_await_time_ms=50) as stream:
        await stream.try_next()
        before = stream.resume_token
        await ledger.increase("a", 1)  # filtered out, but the post-batch token moves past it
        assert await stream.try_next() is None
        after = stream.resume_token
    assert after != before
    async with await ledger.watch(resume_after=after, max_await_time_ms=50) as again:
        transfer = await ledger.transfer("a", "b", 1)
        (event,) = await drain(again, 1)
    assert [t.id for t in event.transactions] == transfer


async def test_dropped_collection_invalidates(ledger: AsyncLedger) -> None:
    async with await ledger.watch(max_await_time_ms=50) as stream:
        await ledger.increase("a", 1)
        await drain(stream, 1)
        await ledger.transactions.drop()
        with pytest.raises(ChangeStreamInvalidated, match="drop"):
            await drain(stream, 1)


async def test_lost_history_raises_with_advice() -> None:
    server = MemoryServer(oplog_size=4)
    ledger = AsyncLedger(AsyncMemoryClient(server=server)["test"])
    await ledger.ensure_indexes()
    async with await ledger.watch(max_await_time_ms=50) as stream:
        await ledger.increase("a", 1)
        (first,) = await drain(stream, 1)
    for _ in range(5):
        await ledger.transfer("a", "b", 1)  # pushes the first event out of the capped oplog
    with pytest.raises(ChangeStreamHistoryLost, match="no longer in the oplog"):
        async with await ledger.watch(resume_after=first.resume_token) as again:
            await again.try_next()


# listen


class Recorder:
    def __init__(self, fail_times: int = 0) -> None:
        self.seen: list[Any] = []
        self.fail_times = fail_times
        self.lock = threading.Lock()

    def __call__(self, event: LedgerEvent) -> None:
        with self.lock:
            if self.fail_times:
                self.fail_times -= 1
                raise RuntimeError("handler failed")
            self.seen.append(event.operation_id)


async def start_listener(ledger: AsyncLedger, handler: Any, **options: Any) -> tuple[Any, Any]:
    options.setdefault("max_await_time_ms", 20)
    options.setdefault("backoff", 0.01)
    if _IS_SYNC:
        stop: Any = threading.Event()
        ready: Any = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                ledger.listen(handler, stop=stop, ready=ready, **options)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        await wait_for(lambda: ready.is_set() or bool(errors))
        return stop, (thread, errors)
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.ensure_future(ledger.listen(handler, stop=stop, ready=ready, **options))
    await wait_for(lambda: ready.is_set() or task.done())
    return stop, task


async def stop_listener(stop: Any, runner: Any) -> None:
    stop.set()
    if _IS_SYNC:
        thread, errors = runner
        thread.join(WAIT)
        assert not thread.is_alive()
        if errors:
            raise errors[0]
    else:
        await asyncio.wait_for(runner, WAIT)


async def wait_for(predicate: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the listener"
        await sleep(0.01)


def checkpoint_id(name: str, ledger: str = "transactions") -> dict[str, str]:
    return {"ledger": ledger, "name": name}


async def operation_id(ledger: AsyncLedger, tid: Any) -> Any:
    return (await ledger.get_transaction(tid)).operation_id


async def test_listen_survives_a_restart_without_loss(ledger: AsyncLedger) -> None:
    written = []
    recorder = Recorder()
    stop, runner = await start_listener(ledger, recorder, checkpoint="mail")
    await ledger.increase("a", 1)
    written.append(await operation_id(ledger, (await ledger.history("a"))[0].id))
    await wait_for(lambda: len(recorder.seen) == 1)
    for n in range(3):
        written.append(await operation_id(ledger, await ledger.increase("a", n + 2)))  # noqa: PERF401
    await wait_for(lambda: len(recorder.seen) >= 2)
    await stop_listener(stop, runner)
    # Down: more operations commit while nobody listens.
    for n in range(4):
        tid = (await ledger.transfer("a", "b", n + 1))[0]
        written.append(await operation_id(ledger, tid))
    stop, runner = await start_listener(ledger, recorder, checkpoint="mail")
    await wait_for(lambda: set(written) <= set(recorder.seen))
    await stop_listener(stop, runner)
    # Commit order, nothing lost; a duplicate only for the event in flight at the stop.
    unique = list(dict.fromkeys(recorder.seen))
    assert unique == written
    assert len(recorder.seen) - len(unique) <= 1
    saved = await ledger.database["ledger_checkpoints"].find_one({"_id": checkpoint_id("mail")})
    assert saved["operation_id"] == written[-1]


async def test_listen_retries_a_failing_handler_then_stops_with_its_error(
    ledger: AsyncLedger,
) -> None:
    flaky = Recorder(fail_times=2)
    stop, runner = await start_listener(ledger, flaky, checkpoint="flaky", retries=3)
    await ledger.increase("a", 1)
    await wait_for(lambda: len(flaky.seen) == 1)
    await stop_listener(stop, runner)

    broken = Recorder(fail_times=100)
    _, runner = await start_listener(ledger, broken, checkpoint="broken", retries=2)
    await ledger.increase("a", 1)
    with pytest.raises(RuntimeError, match="handler failed"):
        await stop_listener(threading.Event() if _IS_SYNC else asyncio.Event(), runner)
    assert broken.fail_times == 100 - 3
    saved = await ledger.database["ledger_checkpoints"].find_one({"_id": checkpoint_id("broken")})
    assert "operation_id" not in saved  # the failed event is not skipped
    # A restart delivers the event the handler failed on (the start position was stored).
    fixed = Recorder()
    stop, runner = await start_listener(ledger, fixed, checkpoint="broken")
    await wait_for(lambda: len(fixed.seen) == 1)
    await stop_listener(stop, runner)


async def test_concurrent_writers_while_listening(ledger: AsyncLedger) -> None:
    recorder = Recorder()
    stop, runner = await start_listener(ledger, recorder, checkpoint="all")
    await ledger.increase("seed", 1)
    await wait_for(lambda: len(recorder.seen) == 1)

    async def writer(n: int) -> list[Any]:
        ids = []
        for i in range(10):
            tid = (await ledger.transfer(f"w{n}", f"w{(n + 1) % 4}", i + 1))[0]
            ids.append(await operation_id(ledger, tid))
        return ids

    if _IS_SYNC:
        results: list[list[Any]] = [[] for _ in range(4)]

        def run(n: int) -> None:
            results[n] = writer(n)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        results = list(await asyncio.gather(*(writer(n) for n in range(4))))
    written = {op for ids in results for op in ids}
    await wait_for(lambda: written <= set(recorder.seen))
    await stop_listener(stop, runner)
    assert set(recorder.seen) - written == {recorder.seen[0]}
    assert len(recorder.seen) == len(written) + 1


async def test_listen_keeps_a_quiet_checkpoint_fresh(ledger: AsyncLedger) -> None:
    recorder = Recorder()
    store = ledger.database["ledger_checkpoints"]
    stop, runner = await start_listener(
        ledger, recorder, checkpoint="quiet", kinds=["transfer"], checkpoint_interval=0.01
    )
    start = (await store.find_one({"_id": checkpoint_id("quiet")}))["updated_at"]
    await ledger.increase("a", 1)  # not for this listener: only the stream position moves
    # A token the listener stores after this read may still come from a getMore that ran
    # before the increase committed (the listener's own checkpoint writes move the stream
    # position too, so a new token says nothing on its own). The loop is sequential: the
    # second new token comes from a getMore issued after the first was stored, so after the
    # increase.
    before = await store.find_one({"_id": checkpoint_id("quiet")})
    saved: list[Any] = []
    tokens: list[Any] = [before["resume_token"]]

    def refreshed() -> bool:
        if saved and saved[-1] is not None and saved[-1]["resume_token"] != tokens[-1]:
            tokens.append(saved[-1]["resume_token"])
        return len(tokens) > 2

    async def stored() -> None:
        saved.append(
            await store.find_one({"_id": checkpoint_id("quiet"), "updated_at": {"$gt": start}})
        )

    deadline = time.monotonic() + WAIT
    while not refreshed() and time.monotonic() < deadline:
        await stored()
        await sleep(0.01)
    await stop_listener(stop, runner)
    assert recorder.seen == []
    assert saved[-1] is not None
    assert "operation_id" not in saved[-1]  # refreshed without handling an event
    # Resuming from the refreshed token skips the filtered operation and sees the next one.
    async with await ledger.watch(resume_after=saved[-1]["resume_token"]) as stream:
        ids = await ledger.transfer("a", "b", 1)
        (event,) = await drain(stream, 1)
    assert [t.id for t in event.transactions] == ids


class AsyncHandler:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def __call__(self, event: LedgerEvent) -> None:  # unasync: keep
        self.seen.append(event.operation_id)


async def test_listen_awaits_or_refuses_async_handlers(ledger: AsyncLedger) -> None:
    """The sync Ledger refuses an async handler instead of checkpointing past unhandled events."""
    handler = AsyncHandler()
    if _IS_SYNC:
        with pytest.raises(TypeError, match="use AsyncLedger"):  # unasync: keep
            await ledger.listen(handler, checkpoint="refused")
        # A plain function returning an awaitable is found out at the first event.
        returns_a_coroutine = lambda e: handler(e)  # noqa: E731, PLW0108
        _, runner = await start_listener(ledger, returns_a_coroutine, checkpoint="lambda")
        tid = await ledger.increase("a", 1)
        with pytest.raises(TypeError, match="returned an awaitable"):
            await stop_listener(threading.Event(), runner)
        assert handler.seen == []
        saved = await ledger.database["ledger_checkpoints"].find_one(
            {"_id": checkpoint_id("lambda"), "operation_id": await operation_id(ledger, tid)}
        )
        assert saved is None  # the event was not checkpointed past
    else:
        stop, runner = await start_listener(ledger, handler, checkpoint="awaited")
        tid = await ledger.increase("a", 1)
        await wait_for(lambda: len(handler.seen) == 1)
        await stop_listener(stop, runner)
        assert handler.seen == [await operation_id(ledger, tid)]


async def test_listen_stopped_before_any_event_loses_nothing(ledger: AsyncLedger) -> None:
    """The start position is stored at once: what commits while the listener is down arrives."""
    recorder = Recorder()
    stop, runner = await start_listener(ledger, recorder, checkpoint="early")
    await stop_listener(stop, runner)  # before any event, before any checkpoint interval
    written = [await operation_id(ledger, await ledger.increase("a", n)) for n in (1, 2)]
    stop, runner = await start_listener(ledger, recorder, checkpoint="early")
    await wait_for(lambda: len(recorder.seen) == 2)
    await stop_listener(stop, runner)
    assert recorder.seen == written


async def test_checkpoints_belong_to_their_ledger(ledger: AsyncLedger) -> None:
    """Two ledgers in one database, one checkpoint name: each consumer keeps its own place."""
    other = AsyncLedger(ledger.database, accounts_collection="acc2", transactions_collection="tx2")
    await other.ensure_indexes()
    mine, theirs = Recorder(), Recorder()
    stop, runner = await start_listener(ledger, mine, checkpoint="mail")
    stop2, runner2 = await start_listener(other, theirs, checkpoint="mail")
    first = await operation_id(ledger, await ledger.increase("a", 1))
    second = (await other.get_transaction(await other.increase("a", 2))).operation_id
    await wait_for(lambda: mine.seen == [first] and theirs.seen == [second])
    await stop_listener(stop, runner)
    await stop_listener(stop2, runner2)
    store = ledger.database["ledger_checkpoints"]
    assert (await store.find_one({"_id": checkpoint_id("mail")}))["operation_id"] == first
    assert (await store.find_one({"_id": checkpoint_id("mail", "tx2")}))["operation_id"] == second
    # Each restarts where it stopped: nothing of the other ledger, nothing twice.
    later = await operation_id(ledger, await ledger.increase("a", 3))
    stop, runner = await start_listener(ledger, mine, checkpoint="mail")
    await wait_for(lambda: len(mine.seen) == 2)
    await stop_listener(stop, runner)
    assert mine.seen == [first, later]


async def test_listen_adopts_a_checkpoint_written_before_scoping(ledger: AsyncLedger) -> None:
    """A checkpoint of an earlier version (``_id`` is the bare name) is resumed from."""
    recorder = Recorder()
    stop, runner = await start_listener(ledger, recorder, checkpoint="old")
    first = await operation_id(ledger, await ledger.increase("a", 1))
    await wait_for(lambda: recorder.seen == [first])
    await stop_listener(stop, runner)
    store = ledger.database["ledger_checkpoints"]
    scoped = await store.find_one({"_id": checkpoint_id("old")})
    await store.delete_one({"_id": checkpoint_id("old")})
    await store.insert_one({**scoped, "_id": "old"})  # as the earlier version stored it
    missed = await operation_id(ledger, await ledger.increase("a", 2))
    stop, runner = await start_listener(ledger, recorder, checkpoint="old")
    await wait_for(lambda: len(recorder.seen) == 2)
    await stop_listener(stop, runner)
    assert recorder.seen == [first, missed]


class FailingRaw:
    """Stands in for the driver's change stream: its next batch fails with a server error."""

    def __init__(self, code: int, message: str) -> None:
        self.error = OperationFailure(message, code=code)
        self.resume_token: Any = None
        self.alive = True

    async def try_next(self) -> Any:
        raise self.error

    async def close(self) -> None:
        self.alive = False


@pytest.mark.parametrize(
    ("code", "message", "expected", "shown"),
    [
        (10334, "BSONObjAsTooLarge: object too large", ChangeStreamError, "16 MiB"),
        (
            280,
            "cannot resume stream; the resume token was not found. {_data: ...}",
            ChangeStreamHistoryLost,
            "no longer in the oplog",
        ),
        (
            280,
            "Encountered an event whose _id field, which contains the resume token, was "
            "modified by the pipeline",
            ChangeStreamError,
            "modified by the pipeline",
        ),
        (286, "Resume of change stream was not possible", ChangeStreamHistoryLost, "oplog"),
    ],
)
async def test_server_errors_of_a_stream_are_translated(
    ledger: AsyncLedger, code: int, message: str, expected: type, shown: str
) -> None:
    """Server-only failures (test doubles for the driver's stream): an event over 16 MiB, and
    code 280, which means a lost resume point only with that message."""
    stream = await ledger.watch(max_await_time_ms=10)
    await stream.close()
    stream._raw = FailingRaw(code, message)
    stream._closed = False
    with pytest.raises(expected, match=shown) as info:
        await stream.try_next()
    assert type(info.value) is expected


async def test_listen_from_a_start_time_keeps_that_start_until_an_event_is_handled(
    ledger: AsyncLedger,
) -> None:
    """A handler failing on the first event after ``start_at_operation_time``: the restart
    (without the option) begins there again, not at "now"."""
    from bson import Timestamp

    async with await ledger.watch(max_await_time_ms=20) as stream:
        await ledger.increase("a", 1)
        (marker,) = await drain(stream, 1)
    start = Timestamp(int(marker.committed_at.timestamp()) + 1, 0)
    await sleep(1.1)  # the next operation commits in a later second than the marker
    missed = await operation_id(ledger, await ledger.increase("a", 2))
    broken = Recorder(fail_times=100)
    _, runner = await start_listener(
        ledger, broken, checkpoint="timed", retries=0, start_at_operation_time=start
    )
    with pytest.raises(RuntimeError, match="handler failed"):
        await stop_listener(threading.Event() if _IS_SYNC else asyncio.Event(), runner)
    fixed = Recorder()
    stop, runner = await start_listener(ledger, fixed, checkpoint="timed")
    await wait_for(lambda: len(fixed.seen) == 1)
    await stop_listener(stop, runner)
    assert fixed.seen == [missed]
