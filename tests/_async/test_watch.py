"""Change-stream notifications: watch, listen with checkpoints, typed events."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest

from mongoledger import (
    AsyncLedger,
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
    saved = await ledger.database["ledger_checkpoints"].find_one({"_id": "mail"})
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
    saved = await ledger.database["ledger_checkpoints"].find_one({"_id": "broken"})
    assert saved is None or "operation_id" not in saved  # the failed event is not skipped


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
    await ledger.increase("a", 1)  # not for this listener: only the stream position moves
    # The listener may have refreshed its token before the increase committed (over a network
    # it has time to): wait for a token stored after this read, which comes after the increase.
    before = await store.find_one({"_id": "quiet"})
    saved: list[Any] = []

    def refreshed() -> bool:
        if not saved or saved[-1] is None:
            return False
        return before is None or saved[-1]["resume_token"] != before["resume_token"]

    async def stored() -> None:
        saved.append(await store.find_one({"_id": "quiet"}))

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
