"""Holds on the pages: held and available balances, an account's pending holds, and the
adjust form's hold, capture and void (ADJUST, CSRF, the ledger's errors, nothing written)."""

from __future__ import annotations

import html
import re
from typing import Any

from mongoledger._text import account_id_text
from tests.web.conftest import Env, csrf_of, idempotency_of


def _aid(account_id: Any) -> str:
    return account_id_text(account_id)


def _text(page: str) -> str:
    """The page's text, tags dropped and spaces folded, for phrase checks."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([,:;.])(?= |$)", r"\1", text)


async def _state(env: Env) -> tuple[int, int, int]:
    holds = env.ledger.database[env.ledger.config.holds_collection]
    pending = await holds.count_documents({"status": "pending"})
    return await env.count(), int(await holds.count_documents({})), int(pending)


async def _adjust(env: Env, who: str, form: dict[str, str]) -> Any:
    client = env.client(who)
    page = await client.get("/admin/adjust")
    fields = {"csrf_token": csrf_of(page.text), "idempotency_key": idempotency_of(page.text)}
    return await client.post("/admin/adjust", data={**fields, **form})


async def test_the_sheet_shows_held_available_and_pending_holds(env: Env) -> None:
    own = await env.client("alice").get("/balance")
    assert own.status_code == 200
    text = _text(own.text)
    assert "Balance $100.00 Held $1.00 Available $99.00" in text
    assert 'id="held-block" aria-live="polite">' in own.text  # shown: not hidden
    assert "Pending holds" in text
    assert re.search(r"held for shop -\$1\.00 never order: A-1", text)
    assert str(env.alice_hold) in own.text
    # A hold's target lists it as incoming (its own available balance does not change).
    await env.ledger.hold(env.bob, env.alice, 5, {"order": "B-9"})
    text = _text((await env.client("alice").get("/balance")).text)
    assert f"incoming from {_aid(env.bob)} +$0.05 never order: B-9" in text
    assert "Held $1.00 Available $99.00" in text


async def test_without_holds_the_sheet_shows_the_balance_alone(env: Env) -> None:
    await env.ledger.void(env.alice_hold)
    own = await env.client("alice").get("/balance")
    assert 'id="held-block" aria-live="polite" hidden>' in own.text
    assert "Pending holds" not in own.text


async def test_the_report_adds_held_and_available_where_holds_are(env: Env) -> None:
    admin = env.client("admin")
    report = await admin.get("/admin/reports/balances?sort=id")
    text = _text(report.text)
    assert "Balance Held Available Minimum" in text
    assert "$100.00 $1.00 $99.00 $0.00" in text  # alice: balance, held, available, floor
    assert "$4,242.42 $10.00 $4,232.42" in text  # bob
    assert "Total on this page $4,342.42 $11.00 $4,331.42" in text
    await env.ledger.void(env.alice_hold)
    await env.ledger.void(env.bob_hold)
    plain = _text((await admin.get("/admin/reports/balances")).text)
    assert "Held" not in plain
    assert "Available" not in plain


async def test_a_hold_is_placed_captured_and_voided_through_the_form(env: Env) -> None:
    placed = await _adjust(
        env,
        "teller",
        {
            "operation": "hold",
            "account": _aid(env.bob),
            "to_account": "str:shop",
            "amount": "25.00",
            "expires": "2h",
            "message": "order <B-2>",
        },
    )
    assert placed.status_code == 200, placed.text
    text = _text(placed.text)
    assert "Hold placed" in text
    (hold,) = await env.ledger.holds(env.bob, status="pending", limit=1)
    assert (hold.amount, hold.data) == (2_500, {"message": "order <B-2>"})
    assert hold.expires_at is not None
    assert f"Hold {hold.id}: $25.00 of {_aid(env.bob)} for shop, until" in text
    assert "held $35.00, available $4,207.42" in text
    sheet = await env.client("admin").get(f"/user/{_aid(env.bob)}/balance")
    assert "message: order &lt;B-2&gt;" in sheet.text  # extra data is escaped
    assert "<B-2>" not in sheet.text

    captured = await _adjust(
        env, "teller", {"operation": "capture", "hold": str(hold.id), "amount": "20.00"}
    )
    assert captured.status_code == 200, captured.text
    text = _text(captured.text)
    assert "Capture written" in text
    assert f"{_aid(env.bob)} -$20.00 $4,222.42" in text
    assert "shop +$20.00 $20.00" in text
    assert (await env.ledger.get_hold(hold.id)).captured_amount == 2_000
    assert await env.ledger.available_balance(env.bob) == 422_242 - 1_000  # the rest released

    voided = await _adjust(env, "admin", {"operation": "void", "hold": str(env.bob_hold)})
    assert voided.status_code == 200, voided.text
    assert "Hold voided" in _text(voided.text)
    assert "held $0.00, available $4,222.42" in _text(voided.text)
    assert (await env.ledger.get_hold(env.bob_hold)).status == "voided"


async def test_hold_form_errors_show_the_ledgers_message_and_write_nothing(env: Env) -> None:
    alice, bob, hold = _aid(env.alice), _aid(env.bob), str(env.bob_hold)
    place = {"operation": "hold", "account": bob, "to_account": "shop", "amount": "1"}
    cases = [
        ({**place, "account": alice, "amount": "99.01"}, 409, "InsufficientFunds"),
        ({**place, "to_account": bob}, 400, "InvalidAccount"),
        ({**place, "expires": "soon"}, 400, "InvalidArgument"),
        ({**place, "expires": "2000-01-01"}, 400, "InvalidArgument"),
        ({**place, "to_account": ""}, 400, "InvalidArgument"),
        ({**place, "amount": "abc"}, 400, "InvalidAmount"),
        ({"operation": "capture", "hold": hold, "amount": "10.01"}, 400, "InvalidAmount"),
        ({"operation": "capture", "hold": "65ab12cd34ef56ab78cd90ef"}, 404, "HoldNotFound"),
        ({"operation": "capture", "amount": "1"}, 400, "InvalidArgument"),
        ({"operation": "void", "hold": "not-a-hold"}, 404, "HoldNotFound"),
        ({"operation": "refund"}, 400, "InvalidArgument"),
    ]
    before = await _state(env)
    for form, status, kind in cases:
        answer = await _adjust(env, "admin", form)
        assert answer.status_code == status, (form, answer.text)
        text = _text(answer.text)
        assert "Nothing was written" in text
        assert kind in text, (form, text)
        assert await _state(env) == before
    await env.ledger.void(env.bob_hold)
    again = await _adjust(env, "admin", {"operation": "void", "hold": hold})
    assert again.status_code == 409
    assert "HoldClosed" in _text(again.text)
    assert "already voided" in _text(again.text)


async def test_hold_actions_need_adjust_and_the_forms_token(env: Env) -> None:
    before = await _state(env)
    form = {"operation": "void", "hold": str(env.bob_hold)}
    page = await env.client("admin").get("/admin/adjust")
    token = csrf_of(page.text)
    for who, data, status in [
        ("auditor", {**form, "csrf_token": token}, 403),
        ("admin", form, 403),
        ("admin", {**form, "csrf_token": "0" * 64}, 403),
        (None, form, 401),
    ]:
        answer = await env.client(who).post("/admin/adjust", data=data)
        assert answer.status_code == status
        assert await _state(env) == before
