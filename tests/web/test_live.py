"""The live balance: server-sent events from the change stream, over real HTTP (uvicorn)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from mongoledger import AsyncLedger, Ledger
from mongoledger.cli._values import account_id_text
from mongoledger.memory import AsyncMemoryClient, MemoryClient, MemoryServer
from mongoledger.web import VIEW_OWN, Viewer, create_app
from tests.web._server import ThreadServer

ALICE = {"user_id": 1, "type": "wallet"}


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    name, data = "message", ""
    for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


def test_writes_from_another_client_arrive_as_balance_events() -> None:
    server = MemoryServer()
    writer = Ledger(MemoryClient(server=server)["web"])
    alice = writer.open_account(ALICE)
    bob = writer.open_account({"user_id": 2})
    writer.increase(alice, 100)
    app = create_app(
        AsyncLedger(AsyncMemoryClient(server=server)["web"]),
        identify=lambda request: Viewer("alice", ALICE, {VIEW_OWN}),
    )
    with ThreadServer(app) as url:
        path = f"{url}/api/accounts/{account_id_text(alice)}/events"
        with httpx.stream("GET", path, timeout=20) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            events = _events(response.iter_lines())
            assert next(events) == ("balance", {"balance": 100, "formatted": "1.00"})
            writer.increase(alice, 50, {"note": "from Python"})
            name, data = next(events)
            assert name == "balance"
            assert data["balance"] == 150
            assert data["kind"] == "increase"
            assert data["formatted_amount"] == "+0.50"
            writer.increase(bob, 7)  # another account's operation sends nothing
            writer.transfer(bob, alice, 25)
            name, data = next(events)
            assert (data["balance"], data["kind"], data["amount"]) == (175, "transfer", 25)
        forbidden = httpx.get(f"{url}/api/accounts/{account_id_text(bob)}/events", timeout=5)
        assert forbidden.status_code == 403
