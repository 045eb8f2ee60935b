"""Holds through the JSON API: place, capture, void, list; their errors and their privacy."""

from __future__ import annotations

from typing import Any

from mongoledger.cli._values import account_id_text
from tests.web.conftest import Env


def _aid(account_id: Any) -> str:
    return account_id_text(account_id)


async def test_a_hold_is_placed_captured_and_listed(env: Env) -> None:
    teller, admin = env.client("teller"), env.client("admin")
    request = {
        "json": {
            "from": _aid(env.alice),
            "to": "shop",
            "amount": 2_500,
            "data": {"order": "A-7"},
            "expires_in": 3_600,
        },
        "headers": {"idempotency-key": "auth-7"},
    }
    placed = await teller.post("/api/holds", **request)
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert (hold["amount"], hold["status"], hold["data"]) == (2_500, "pending", {"order": "A-7"})
    assert hold["expires_at"] is not None
    again = await teller.post("/api/holds", **request)
    assert again.json()["id"] == hold["id"]  # a retried request holds once

    balance = (await admin.get(f"/api/accounts/{_aid(env.alice)}/balance")).json()
    assert balance == {
        "account_id": balance["account_id"],
        "balance": 10_000,
        "held": 2_600,  # with the fixture's own hold of 100
        "available": 7_400,
    }
    captured = await teller.post(f"/api/holds/{hold['id']}/capture", json={"amount": 2_000})
    assert captured.status_code == 201, captured.text
    body = captured.json()
    assert body["kind"] == "capture"
    assert [t["amount"] for t in body["transactions"]] == [-2_000, 2_000]
    assert {t["hold_id"] for t in body["transactions"]} == {hold["id"]}

    listed = (await admin.get(f"/api/holds?account={_aid(env.alice)}&status=all")).json()
    assert [h["status"] for h in listed["holds"]] == ["captured", "pending"]
    closed = await teller.post(f"/api/holds/{hold['id']}/capture", json={})
    assert closed.status_code == 409
    assert closed.json()["error"] == "HoldClosed"


async def test_a_void_releases_and_closes(env: Env) -> None:
    teller = env.client("teller")
    voided = await teller.post(f"/api/holds/{env.bob_hold}/void", json={"data": {"why": "gone"}})
    assert voided.status_code == 200, voided.text
    assert (voided.json()["status"], voided.json()["void_data"]) == ("voided", {"why": "gone"})
    again = await teller.post(f"/api/holds/{env.bob_hold}/void", json={})
    assert again.status_code == 409
    assert "already voided" in again.json()["message"]


async def test_bad_hold_requests_write_nothing(env: Env) -> None:
    teller = env.client("teller")
    holds = env.ledger.database[env.ledger.config.holds_collection]
    before = await holds.count_documents({})
    base = {"from": _aid(env.alice), "to": "shop"}
    for body, status, shown in [
        ({**base, "amount": "5"}, 422, ""),
        ({**base, "amount": 0}, 400, "InvalidAmount"),
        ({**base, "amount": 999_999}, 409, "InsufficientFunds"),
        ({**base, "amount": 5, "expires_in": 0}, 400, "InvalidArgument"),
        ({**base, "amount": 5, "expires_at": "soon"}, 400, "InvalidArgument"),
        ({**base, "amount": 5, "expires_at": "2000-01-01"}, 400, "InvalidArgument"),
        (
            {**base, "amount": 5, "expires_at": "2100-01-01", "expires_in": 5},
            400,
            "InvalidArgument",
        ),
        ({**base, "amount": 5, "data": {"status": "x"}}, 400, "InvalidData"),
        ({"from": _aid(env.alice), "to": _aid(env.alice), "amount": 5}, 400, "InvalidAccount"),
    ]:
        answer = await teller.post("/api/holds", json=body)
        assert answer.status_code == status, (body, answer.text)
        if shown:
            assert answer.json()["error"] == shown
    assert await holds.count_documents({}) == before
    too_much = await teller.post(f"/api/holds/{env.alice_hold}/capture", json={"amount": 101})
    assert too_much.status_code == 400
    assert "exceeds" in too_much.json()["message"]
    missing = await teller.post("/api/holds/65ab12cd34ef56ab78cd90ef/capture", json={})
    assert (missing.status_code, missing.json()["error"]) == (404, "HoldNotFound")
    bogus = await env.client("admin").get("/api/holds?status=pending,lost")
    assert bogus.status_code == 400


async def test_holds_of_others_answer_like_missing_ones(env: Env) -> None:
    alice = env.client("alice")
    mine = await alice.get(f"/api/holds/{env.alice_hold}")
    assert mine.status_code == 200
    assert mine.json()["amount"] == 100
    theirs = await alice.get(f"/api/holds/{env.bob_hold}")
    missing = await alice.get("/api/holds/65ab12cd34ef56ab78cd90ef")
    malformed = await alice.get("/api/holds/abc")
    assert theirs.status_code == missing.status_code == malformed.status_code == 403
    assert theirs.json() == missing.json() == malformed.json()
    own = (await alice.get(f"/api/holds?account={_aid(env.alice)}")).json()
    assert [h["amount"] for h in own["holds"]] == [100]
    assert (await alice.get(f"/api/holds?account={_aid(env.bob)}")).status_code == 403
    assert (await alice.get("/api/holds")).status_code == 403
    incoming = await env.ledger.hold(env.bob, env.alice, 5)  # alice is its target: hers too
    assert (await alice.get(f"/api/holds/{incoming}")).status_code == 200
