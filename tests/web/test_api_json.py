"""The JSON API's bodies: what the models hold, converted to JSON values once, as encoded."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from bson import Decimal128, ObjectId

from mongoledger._format import json_bytes, to_jsonable
from mongoledger._text import account_id_text
from mongoledger.models import Account
from mongoledger.web._api import account_json
from tests.web.conftest import Env


def test_an_account_body_is_its_jsonable_form_with_its_ref() -> None:
    oid = ObjectId()
    account = Account(
        id=oid,
        balance=-5,
        min_balance=-10,
        held=3,
        currency=Decimal128("1.10"),
        created_at=datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc),
        attributes={
            "user_id": 7,
            "since": datetime(2026, 1, 1),
            "tags": ("a", "b"),
            "parent": oid,
            "blob": b"\x00\x01",
            "nested": {"ok": True, "none": None},
        },
    )
    body = json.loads(json_bytes(account_json(account)))
    assert body == {**to_jsonable(account), "ref": account_id_text(oid)}
    assert body["id"] == str(oid)
    assert body["created_at"] == "2026-11-25T09:00:00Z"
    assert body["attributes"]["since"] == "2026-01-01T00:00:00Z"
    assert body["currency"] == "1.10"


async def test_a_hold_body_is_a_transfer_body_with_an_expiry(env: Env) -> None:
    schemas = (await env.client(None).get("/api/openapi.json")).json()["components"]["schemas"]
    hold, transfer = schemas["HoldIn"], schemas["TransferIn"]
    assert list(hold["properties"]) == [*transfer["properties"], "expires_at", "expires_in"]
    assert {k: hold["properties"][k] for k in transfer["properties"]} == transfer["properties"]
    assert (hold["required"], hold["additionalProperties"]) == (["from", "to", "amount"], False)
    teller = env.client("teller")
    bad = {"from": 1, "to": "shop", "amount": "5", "note": "x"}
    refused = [await teller.post(url, json=bad) for url in ("/api/holds", "/api/transfers")]
    assert [r.status_code for r in refused] == [422, 422]
    assert refused[0].json() == refused[1].json()
    assert refused[0].json()["error"] == "InvalidRequest"
    message = refused[0].json()["message"]
    assert "from: Input should be a valid string (got 1)" in message
    assert "note: Extra inputs are not permitted" in message
