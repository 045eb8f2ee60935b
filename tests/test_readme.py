"""The README's Python examples stay true: every ``python`` block runs, in order, in one
namespace, on the in-memory engine.

A server URI becomes ``MemoryClient()`` / ``AsyncMemoryClient()``; FastAPI (the ``web`` extra,
part of the test extras) is the real one: its route decorators return the handler, which the
test then calls as a request would. The names an example leaves to the reader (an audit log,
a secret key, the service's own ``current_user``) are given stand-ins. A block preceded by
``<!-- readme-test: not run (REASON) -->`` is compiled, not run, and must say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException

from mongoledger import AsyncLedger, InsufficientFunds, Ledger
from mongoledger.memory import AsyncMemoryClient, MemoryClient

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<directive>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S
)
SERVER_CLIENTS = [
    (re.compile(r'\bAsyncMongoClient\("[^"]*"\)'), "AsyncMemoryClient()"),
    (re.compile(r'\bMongoClient\("[^"]*"\)'), "MemoryClient()"),
]


def blocks() -> list[tuple[str | None, str]]:
    return [(m.group("directive"), m.group("code")) for m in BLOCK.finditer(README.read_text())]


class AuditLog:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []

    async def send(self, transaction_id: Any, balance_after: Any) -> None:
        self.sent.append((transaction_id, balance_after))


def test_every_block_is_run_or_says_why_not() -> None:
    found = blocks()
    assert len(found) >= 6
    for directive, code in found:
        compile(code, "README.md", "exec")
        if directive is not None:
            assert re.fullmatch(r"not run \(.{10,}\)", directive), directive


async def current_user(request: Any) -> Any:
    return None  # the web example's own authentication: nobody is signed in


def test_the_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # what an example writes (the embedded store's directory)
    audit_log = AuditLog()
    namespace: dict[str, Any] = {
        "MemoryClient": MemoryClient,
        "AsyncMemoryClient": AsyncMemoryClient,
        # What the examples leave to the reader:
        "audit_log": audit_log,
        "current_user": current_user,
        "SECRET": "a-secret-key-of-the-service-0123456789",
    }
    ran = 0
    for directive, text in blocks():
        if directive is not None:
            continue
        code = text
        for pattern, replacement in SERVER_CLIENTS:
            code = pattern.sub(replacement, code)
        if "db.accounts" in code:  # the data-team query names the database db
            namespace["db"] = namespace["ledger"].database
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), namespace)
        ran += 1
        if "except InsufficientFunds as exc:" in code:  # the sync quick start
            printed = out.getvalue().splitlines()
            assert "insufficient funds" in printed[0]
            assert printed[1] == "1000"
            assert isinstance(namespace["ledger"], Ledger)
        if "async def pay(" in code:
            check_the_service(namespace)
        if "@ledger.after_write" in code:
            check_the_hooks(namespace, audit_log)
    assert ran >= 5


def check_the_service(namespace: dict[str, Any]) -> None:
    """The service example refuses what it must and echoes no internal id."""
    ledger: AsyncLedger = namespace["ledger"]
    pay = namespace["pay"]

    async def scenario() -> None:
        # A user who never topped up: their wallet is created with the default floor (0).
        with pytest.raises(HTTPException) as info:
            await pay("o-1", 500, user_id=99)
        assert info.value.status_code == 402
        with pytest.raises(InsufficientFunds):
            await ledger.decrease({"user_id": 99, "type": "wallet"}, 1)
        # A bad amount is refused without the ledger's message (which may name internal ids).
        with pytest.raises(HTTPException) as info:
            await pay("o-2", -5, user_id=99)
        assert (info.value.status_code, info.value.detail) == (400, "payment refused")
        from mongoledger import NO_FLOOR

        bank = await ledger.open_account({"type": "bank"}, min_balance=NO_FLOOR)
        await ledger.transfer(bank, {"user_id": 7, "type": "wallet"}, 1_000)
        reply = await pay("o-3", 400, user_id=7)
        assert reply == {"order_id": "o-3", "status": "paid"}
        assert await pay("o-3", 400, user_id=7) == reply  # the retry pays once
        assert await ledger.balance({"user_id": 7, "type": "wallet"}) == 600
        assert await ledger.balance({"type": "revenue"}) == 400

    asyncio.run(scenario())


def check_the_hooks(namespace: dict[str, Any], audit_log: AuditLog) -> None:
    ledger: AsyncLedger = namespace["ledger"]

    async def write() -> Any:
        return await ledger.increase({"user_id": 5, "type": "wallet"}, 10)

    tid = asyncio.run(write())
    assert audit_log.sent == [(tid, 10)]

    async def read() -> Any:
        return await ledger.get_transaction(tid)

    assert asyncio.run(read()).data == {"app_version": "4.2"}


def test_the_upgrade_recipe_gives_history_of_an_earlier_version_its_date_tracking() -> None:
    """The recipe, on entries an earlier version wrote out of date order (it recorded neither
    last_date nor backdated_from): afterwards balance_at is the dated sum again."""
    [recipe] = [code for _, code in blocks() if "groupby" in code and "backdated_from" in code]
    day = [datetime(2026, 1, n, 12, tzinfo=timezone.utc) for n in range(1, 16)]
    dates = iter([day[10], day[5], day[12]])
    db = MemoryClient()["shop"]
    ledger = Ledger(db, date_value=lambda: next(dates))
    ledger.increase("alice", 100)  # dated Jan 10
    ledger.increase("alice", 10)  # dated Jan 5: before an entry recorded earlier
    ledger.increase("bob", 7)
    db.accounts.update_many({}, {"$unset": {"last_date": "", "backdated_from": ""}})
    assert ledger.balance_at("alice", day[6]) == 110  # the earlier version's answer
    lines = [line for line in recipe.splitlines() if not line.startswith(("db = ", "from pymongo"))]
    exec(compile("\n".join(lines), "README.md", "exec"), {"db": db})
    assert ledger.balance_at("alice", day[6]) == 10  # the entries dated up to Jan 6
    assert ledger.balance_at("alice", day[11]) == 110
    alice = db.accounts.find_one({"_id": "alice"})
    assert (alice["backdated_from"], alice["last_date"]) == (
        day[5].replace(tzinfo=None),
        day[10].replace(tzinfo=None),
    )
    assert "backdated_from" not in db.accounts.find_one({"_id": "bob"})
    assert ledger.verify().ok
