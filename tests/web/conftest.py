"""A ledger with two users' accounts, an app over it, and an HTTP client per viewer.

The app's ``identify`` reads the test's ``X-Test-Viewer`` header: the route tests exercise the
permission checks, not an authentication scheme (``mongoledger serve``'s login has its own
tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from mongoledger import AsyncLedger
from mongoledger._format import CurrencyFormat
from mongoledger.memory import AsyncMemoryClient
from mongoledger.web import ADJUST, VIEW_ALL, VIEW_OWN, Viewer, create_app

ALICE = {"user_id": 1, "type": "wallet"}
BOB = {"user_id": 2, "type": "wallet"}
SECRET_BALANCE = 424242  # bob's balance: must never appear in a refusal

VIEWERS: dict[str, Viewer] = {
    "nobody": Viewer("nobody", ALICE, set()),
    "alice": Viewer("alice", ALICE, {VIEW_OWN}),
    "auditor": Viewer("auditor", None, {VIEW_ALL}),
    "teller": Viewer("teller", None, {ADJUST}),
    "admin": Viewer("admin", None, {VIEW_OWN, VIEW_ALL, ADJUST}),
}


def identify(request: Request) -> Viewer | None:
    return VIEWERS.get(request.headers.get("x-test-viewer", ""))


@dataclass
class Env:
    ledger: AsyncLedger
    app: Any
    alice: Any
    bob: Any
    alice_tx: Any
    bob_tx: Any
    alice_hold: Any = None  # pending holds each account placed for a shop
    bob_hold: Any = None
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, who: str | None) -> httpx.AsyncClient:
        return self.clients[who or "anonymous"]

    async def count(self) -> int:
        return int(await self.ledger.transactions.count_documents({}))


async def make_env(database: Any, **options: Any) -> Env:
    ledger = AsyncLedger(database)
    alice = await ledger.open_account(ALICE, min_balance=0)
    bob = await ledger.open_account(BOB)
    alice_tx = await ledger.increase(alice, 10_000, {"note": "top-up"})
    bob_tx = await ledger.increase(bob, SECRET_BALANCE, {"note": "bob's salary"})
    alice_hold = await ledger.hold(alice, "shop", 100, {"order": "A-1"})
    bob_hold = await ledger.hold(bob, "shop", 1_000, {"order": "B-1"})
    options.setdefault("money", CurrencyFormat(symbol="$"))
    app = create_app(ledger, identify=identify, **options)
    return Env(ledger, app, alice, bob, alice_tx, bob_tx, alice_hold, bob_hold)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    env = await make_env(AsyncMemoryClient()["web"])
    transport = httpx.ASGITransport(app=env.app)
    for who in [None, *VIEWERS]:
        headers = {} if who is None else {"x-test-viewer": who}
        env.clients[who or "anonymous"] = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        )
    try:
        yield env
    finally:
        for c in env.clients.values():
            await c.aclose()


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def idempotency_of(html: str) -> str:
    import re

    match = re.search(r'name="idempotency_key" value="([^"]+)"', html)
    assert match
    return match.group(1)
