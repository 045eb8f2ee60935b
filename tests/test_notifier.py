"""The example consumer (scripts/notifier): its line format and a run under listen()."""

from __future__ import annotations

import io
import threading
import time

import pytest

from mongoledger import Ledger
from mongoledger.memory import MemoryClient
from mongoledger.notifier import describe, main, printer


def test_notifier_prints_each_operation_once_it_commits() -> None:
    ledger = Ledger(MemoryClient()["shop"])
    ledger.ensure_indexes()
    out = io.StringIO()
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=ledger.listen,
        args=(printer(out),),
        kwargs={"checkpoint": "n", "stop": stop, "ready": ready, "max_await_time_ms": 20},
    )
    thread.start()
    assert ready.wait(10)
    ledger.transfer("alice", "bob", 250, {"order": 7})
    ledger.increase("carol", 5)
    deadline = time.monotonic() + 10
    while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    first, second = out.getvalue().splitlines()
    assert "transfer: alice -250 (= -250), bob +250 (= +250)  {'order': 7}" in first
    assert "increase: carol +5 (= +5)" in second


def test_describe_short_form() -> None:
    ledger = Ledger(MemoryClient()["shop"])
    ledger.ensure_indexes()
    with ledger.watch(max_await_time_ms=20) as stream:
        ledger.post([("a", -3), ("b", 1), ("c", 2)])
        event = stream.next()
    assert describe(event, details=False) == "post: a -3, b +1, c +2"
    assert describe(event, name=str.upper, amount=str, details=False) == "post: A -3, B 1, C 2"


def test_describe_hold_steps() -> None:
    ledger = Ledger(MemoryClient()["shop"])
    ledger.ensure_indexes()
    with ledger.watch(max_await_time_ms=20) as stream:
        hold_id = ledger.hold("alice", "shop", 60, {"order": 7})
        ledger.capture(hold_id, 40)
        ledger.void(ledger.hold("alice", "shop", 5), {"reason": "gone"})
        events = [stream.next() for _ in range(4)]
    assert [describe(e, details=False) for e in events] == [
        "hold: 60 of alice for shop",
        "capture: alice -40, shop +40",
        "hold: 5 of alice for shop",
        "void: 5 of alice for shop",
    ]
    assert "hold: 60 of alice for shop  {'order': 7}" in describe(events[0])
    assert "void: 5 of alice for shop  {'reason': 'gone'}" in describe(events[3])


def test_main_reports_an_unreachable_server_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import mongoledger.cli._connection

    monkeypatch.setattr(mongoledger.cli._connection, "NOTICE_AFTER", 0.01)
    err = io.StringIO()
    uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"  # the user's wait is honoured
    assert main(["--uri", uri], environ={}, stderr=err) == 1
    lines = err.getvalue().splitlines()
    assert lines[0] == "notifier: connecting to 127.0.0.1:1..."
    assert lines[1].startswith("notifier: error: cannot reach MongoDB at 127.0.0.1:1 (")
    assert len(lines) == 2
    assert "Topology" not in err.getvalue()


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--uri", "mongodb://localhost:99999"], "'mongodb://localhost:99999'"),
        (["--db", "a b$"], "--db 'a b$'"),
        (["--memory", "--db", ""], "--db ''"),
    ],
)
def test_main_takes_the_command_lines_connection_options(argv: list[str], shown: str) -> None:
    err = io.StringIO()
    assert main(argv, environ={}, stderr=err) == 2
    assert shown in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_main_on_the_memory_engine_says_nothing_will_print() -> None:
    err = io.StringIO()
    stop = threading.Event()
    stop.set()
    assert main(["--memory"], environ={}, stderr=err, stop=stop) == 0
    assert "nothing will print" in err.getvalue()


@pytest.mark.parametrize("kind", ["capture", "hold", "void", "expire", "transfer"])
def test_main_follows_every_kind_the_ledger_writes(kind: str) -> None:
    """--kind takes every kind a LedgerEvent can have (holds' steps included)."""
    err = io.StringIO()
    stop = threading.Event()
    stop.set()
    assert main(["--memory", "--kind", kind], environ={}, stderr=err, stop=stop) == 0
