"""Bad inputs write nothing; extra data is escaped; CSRF; idempotency; headers; mounting."""

from __future__ import annotations

import html
import re

import httpx
import markupsafe
import pytest
from fastapi import FastAPI

from mongoledger import AsyncLedger
from mongoledger.cli._values import account_id_text
from mongoledger.web import ADJUST, VIEW_ALL, Viewer, create_app
from tests.web.conftest import Env, csrf_of, idempotency_of, make_env

BAD_AMOUNTS = [
    ("abc", 422, "InvalidRequest"),
    ("5", 422, "InvalidRequest"),
    (1.5, 422, "InvalidRequest"),
    (True, 422, "InvalidRequest"),
    (None, 422, "InvalidRequest"),
    (0, 400, "InvalidAmount"),
    (2**70, 400, "InvalidAmount"),
    (-(2**63) - 1, 400, "InvalidAmount"),
]
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "</textarea><svg onload=alert(1)>",
    "{{ 7*7 }}",
]


def _aid(value: object) -> str:
    return account_id_text(value)


@pytest.mark.parametrize(("amount", "status", "error"), BAD_AMOUNTS)
@pytest.mark.parametrize("operation", ["increase", "decrease", "transfer", "post"])
async def test_bad_amounts_write_nothing(
    env: Env, operation: str, amount: object, status: int, error: str
) -> None:
    admin = env.client("admin")
    alice, bob = _aid(env.alice), _aid(env.bob)
    if operation in ("increase", "decrease"):
        url, body = f"/api/accounts/{bob}/{operation}", {"amount": amount}
    elif operation == "transfer":
        url, body = "/api/transfers", {"from": bob, "to": alice, "amount": amount}
    else:
        legs = [{"account": bob, "amount": amount}, {"account": alice, "amount": amount}]
        url, body = "/api/posts", {"legs": legs}
    before = await env.count()
    response = await admin.post(url, json=body)
    if operation == "post" and amount == 0:
        status, error = 400, "InvalidAmount"
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["message"]
    assert await env.count() == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": {"a": 1}},
        {"amount": 5, "unknown": 1},
        {"amount": 5, "data": "text"},
        {"amount": 5, "data": {"$set": 1}},
        {"amount": 5, "data": {"a.b": 1}},
        {"amount": 5, "data": {"amount": 1}},
    ],
)
async def test_bad_bodies_write_nothing(env: Env, body: dict[str, object]) -> None:
    before = await env.count()
    response = await env.client("admin").post(f"/api/accounts/{_aid(env.bob)}/increase", json=body)
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"] in ("InvalidRequest", "InvalidData")
    assert await env.count() == before


async def test_malformed_json_is_refused_but_anonymous_gets_401_first(env: Env) -> None:
    url = f"/api/accounts/{_aid(env.bob)}/increase"
    headers = {"content-type": "application/json"}
    assert (await env.client(None).post(url, content=b"{", headers=headers)).status_code == 401
    assert (await env.client("alice").post(url, content=b"{", headers=headers)).status_code == 403
    response = await env.client("admin").post(url, content=b"{", headers=headers)
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidRequest"


async def test_api_writes_need_a_json_body(env: Env) -> None:
    before = await env.count()
    response = await env.client("admin").post(
        f"/api/accounts/{_aid(env.bob)}/increase", data={"amount": "5"}
    )
    assert response.status_code == 415
    assert response.json()["error"] == "UnsupportedMediaType"
    assert await env.count() == before


async def test_ledger_errors_carry_class_and_message(env: Env) -> None:
    admin = env.client("admin")
    response = await admin.post(f"/api/accounts/{_aid(env.alice)}/decrease", json={"amount": 10**6})
    assert response.status_code == 409
    assert response.json()["error"] == "InsufficientFunds"
    assert str(10**6) in response.json()["message"] or "1000000" in response.json()["message"]
    same = await admin.post(
        "/api/transfers", json={"from": _aid(env.bob), "to": _aid(env.bob), "amount": 1}
    )
    assert same.status_code == 400
    assert same.json()["error"] == "InvalidAccount"
    first = await admin.post(f"/api/transactions/{env.bob_tx}/revert", json={})
    assert first.status_code == 201
    again = await admin.post(f"/api/transactions/{env.bob_tx}/revert", json={})
    assert again.status_code == 409
    assert again.json()["error"] == "AlreadyReverted"
    missing = await admin.post("/api/transactions/65ab12cd34ef56ab78cd90ef/revert", json={})
    assert missing.status_code == 404
    assert missing.json()["error"] == "TransactionNotFound"
    bad_sort = await admin.get("/api/balances?sort=name")
    assert bad_sort.status_code == 400
    assert bad_sort.json()["error"] == "InvalidArgument"
    bad_date = await admin.get(f"/api/accounts/{_aid(env.bob)}/history?start=yesterday")
    assert bad_date.status_code == 400
    assert "yesterday" in bad_date.json()["message"]
    bad_limit = await admin.get(f"/api/accounts/{_aid(env.bob)}/history?limit=0")
    assert bad_limit.status_code == 400


async def test_idempotency_key_header_posts_once(env: Env) -> None:
    admin = env.client("admin")
    url = f"/api/accounts/{_aid(env.bob)}/increase"
    headers = {"Idempotency-Key": "pay-1"}
    first = await admin.post(url, json={"amount": 5}, headers=headers)
    count = await env.count()
    retry = await admin.post(url, json={"amount": 5}, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert first.json()["transaction_ids"] == retry.json()["transaction_ids"]
    assert await env.count() == count
    other = await admin.post(url, json={"amount": 6}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"] == "IdempotencyConflict"


async def test_api_reads_and_writes_round_trip(env: Env) -> None:
    admin = env.client("admin")
    opened = await admin.post(
        "/api/accounts", json={"attributes": {"user_id": 9}, "min_balance": 0}
    )
    assert opened.status_code == 201
    ref = opened.json()["ref"]
    up = await admin.post(f"/api/accounts/{ref}/increase", json={"amount": 250, "data": {"k": 1}})
    assert up.json()["transactions"][0]["balance_after"] == 250
    moved = await admin.post(
        "/api/transfers", json={"from": ref, "to": _aid(env.bob), "amount": 50}
    )
    assert [t["amount"] for t in moved.json()["transactions"]] == [-50, 50]
    assert (await admin.get(f"/api/accounts/{ref}/balance")).json()["balance"] == 200
    history = (await admin.get(f"/api/accounts/{ref}/history?limit=1")).json()
    assert [t["amount"] for t in history["transactions"]] == [-50]
    assert history["next_before_seq"] == 2
    older = (await admin.get(f"/api/accounts/{ref}/history?before_seq=2")).json()
    assert [t["data"] for t in older["transactions"]] == [{"k": 1}]
    report = (await admin.get("/api/balances?where=user_id=9")).json()
    assert [a["ref"] for a in report["accounts"]] == [ref]
    stats = (await admin.get(f"/api/accounts/{ref}/statistics")).json()
    assert stats["periods"][0]["credit"] == 250
    assert stats["periods"][0]["debit"] == 50
    assert (await admin.get("/api/verify")).json()["ok"] is True
    me = (await admin.get("/api/me")).json()
    assert me["name"] == "admin"
    assert "adjust balances" in me["permissions"]


async def test_openapi_document_lists_the_api(env: Env) -> None:
    schema = (await env.client(None).get("/api/openapi.json")).json()
    paths = set(schema["paths"])
    assert {"/api/accounts/{account_id}/increase", "/api/transfers", "/api/balances"} <= paths
    assert not any(p.startswith("/admin") for p in paths)


@pytest.mark.parametrize("payload", XSS)
async def test_extra_data_is_escaped_on_every_page(env: Env, payload: str) -> None:
    await env.ledger.increase(env.bob, 1, {payload.replace(".", "_"): payload, "note": payload})
    await env.ledger.open_account({"user_id": 5, "label": payload})
    admin = env.client("admin")
    pages = [
        await admin.get(f"/user/{_aid(env.bob)}/balance"),
        await admin.get("/admin/reports/balances"),
        await admin.get("/admin/reports/balances?where=" + payload.replace(",", "")),
    ]
    for page in pages:
        assert page.status_code in (200, 400)
        assert payload not in page.text or payload == html.escape(payload)
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "<svg onload" not in page.text
    # Shown, as text: escaped (a template expression stays literal, never evaluated).
    assert str(markupsafe.escape(payload)) in pages[0].text


async def test_adjust_form_errors_are_escaped_and_write_nothing(env: Env) -> None:
    admin = env.client("admin")
    form = await admin.get("/admin/adjust")
    before = await env.count()
    payload = "<script>alert(1)</script>"
    for fields in (
        {"operation": "credit", "account": payload, "amount": "abc"},
        {"operation": "credit", "account": _aid(env.bob), "amount": "0"},
        {"operation": "credit", "account": _aid(env.bob), "amount": "1.001"},
        {"operation": "credit", "account": _aid(env.bob), "amount": ""},
        {"operation": "debit", "account": _aid(env.alice), "amount": "1000000"},
        {"operation": "transfer", "account": _aid(env.bob), "to_account": "", "amount": "1"},
        {"operation": "revert", "transaction": payload},
        {"operation": "explode", "account": _aid(env.bob), "amount": "1"},
    ):
        response = await admin.post(
            "/admin/adjust", data={**fields, "csrf_token": csrf_of(form.text)}
        )
        assert response.status_code in (400, 404, 409), (fields, response.status_code)
        assert "Nothing was written" in response.text
        assert payload not in response.text
    assert await env.count() == before


async def test_adjust_form_writes_and_confirms(env: Env) -> None:
    admin = env.client("admin")
    form = await admin.get("/admin/adjust")
    fields = {
        "operation": "transfer",
        "account": _aid(env.bob),
        "to_account": _aid(env.alice),
        "amount": "1,012.34",
        "message": "<b>rent</b>",
        "csrf_token": csrf_of(form.text),
        "idempotency_key": idempotency_of(form.text),
    }
    response = await admin.post("/admin/adjust", data=fields)
    assert response.status_code == 200
    assert "Transfer written" in response.text
    assert "-$1,012.34" in response.text
    assert "+$1,012.34" in response.text
    assert await env.ledger.balance(env.alice) == 10_000 + 101_234
    rows = await env.ledger.history(env.alice, limit=1)
    assert rows[0].data == {"message": "<b>rent</b>"}
    assert "<b>rent</b>" not in (await admin.get(f"/user/{_aid(env.alice)}/balance")).text
    count = await env.count()
    again = await admin.post("/admin/adjust", data=fields)  # a double submit of one form
    assert again.status_code == 200
    assert await env.count() == count
    revert = await admin.post(
        "/admin/adjust",
        data={
            "operation": "revert",
            "transaction": str(rows[0].id),
            "csrf_token": csrf_of(form.text),
        },
    )
    assert "Revert written" in revert.text
    assert await env.ledger.balance(env.alice) == 10_000


@pytest.mark.parametrize("token", [None, "", "wrong", "0" * 64])
async def test_csrf_missing_or_wrong_writes_nothing(env: Env, token: str | None) -> None:
    admin = env.client("admin")
    await admin.get("/admin/adjust")  # the browser has its CSRF cookie
    fields = {"operation": "credit", "account": _aid(env.bob), "amount": "1"}
    if token is not None:
        fields["csrf_token"] = token
    before = await env.count()
    response = await admin.post("/admin/adjust", data=fields)
    assert response.status_code == 403
    assert "security token" in response.text
    assert await env.count() == before


async def test_csrf_token_of_another_viewer_or_browser_is_refused(env: Env) -> None:
    admin = env.client("admin")
    token = csrf_of((await admin.get("/admin/adjust")).text)
    teller = env.client("teller")
    await teller.get("/admin/adjust")
    fields = {"operation": "credit", "account": _aid(env.bob), "amount": "1", "csrf_token": token}
    before = await env.count()
    # The teller's browser cookie with the admin's token: refused.
    assert (await teller.post("/admin/adjust", data=fields)).status_code == 403
    # The admin's token without any cookie (another browser): refused.
    fresh = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app),
        base_url="http://testserver",
        headers={"x-test-viewer": "admin"},
    )
    async with fresh:
        assert (await fresh.post("/admin/adjust", data=fields)).status_code == 403
    assert await env.count() == before


async def test_security_headers_and_cache_policy(env: Env) -> None:
    admin = env.client("admin")
    for path in ("/admin/reports/balances", f"/api/accounts/{_aid(env.bob)}", "/api/me"):
        response = await admin.get(path)
        assert response.headers["cache-control"] == "no-store"
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    refused = await env.client(None).get("/admin/reports/balances")
    assert refused.headers["cache-control"] == "no-store"
    static = await admin.get("/static/style.css")
    assert static.status_code == 200
    assert "max-age" in static.headers["cache-control"]
    page = (await admin.get("/admin/reports/balances")).text
    assert "<script>" not in page
    assert " on" + "click=" not in page
    assert re.search(r'<script src="/static/live\.js\?v=\w+" defer></script>', page)
    cookie = (await env.client("teller").get("/admin/adjust")).headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


async def test_mounted_under_a_prefix_links_stay_inside() -> None:
    from mongoledger.memory import AsyncMemoryClient

    env = await make_env(AsyncMemoryClient()["web"])
    service = FastAPI()
    viewer = Viewer("root", None, {VIEW_ALL, ADJUST})
    service.mount("/ledger", create_app(env.ledger, identify=lambda request: viewer))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service), base_url="http://svc"
    ) as client:
        report = await client.get("/ledger/admin/reports/balances")
        assert report.status_code == 200
        hrefs = re.findall(r'(?:href|src|action)="([^"]+)"', report.text)
        assert hrefs
        assert all(h.startswith(("/ledger/", "#")) for h in hrefs), hrefs
        sheet = await client.get(f"/ledger/user/{_aid(env.bob)}/balance")
        assert f'data-live-balance="/ledger/api/accounts/{_aid(env.bob)}/events"' in sheet.text
        api = await client.get(f"/ledger/api/accounts/{_aid(env.bob)}")
        assert api.json()["balance"] == 424242
        assert (await client.get("/ledger/static/live.js")).status_code == 200
        cookie = report.headers["set-cookie"]
        assert "Path=/ledger" in cookie


async def test_sheet_paging_and_date_filter(env: Env) -> None:
    from mongoledger.memory import AsyncMemoryClient

    small = await make_env(AsyncMemoryClient()["web"], page_size=2)
    for i in range(3):
        await small.ledger.increase(small.bob, 1 + i, {"n": i})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=small.app),
        base_url="http://t",
        headers={"x-test-viewer": "admin"},
    ) as client:
        first = await client.get(f"/user/{_aid(small.bob)}/balance")
        assert "n: 2" in first.text
        assert "n: 1" in first.text
        assert "n: 0" not in first.text
        older = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert older
        second = await client.get(html.unescape(older.group(1)))
        assert "n: 0" in second.text
        assert "n: 2" not in second.text
        empty = await client.get(f"/user/{_aid(small.bob)}/balance?start=2000-01-01&end=2000-12-31")
        assert "No transactions in this range" in empty.text
        bad = await client.get(f"/user/{_aid(small.bob)}/balance?start=31/12/2000")
        assert bad.status_code == 400
        assert "31/12/2000" in bad.text


async def test_report_sorts_filters_pages_and_totals(env: Env) -> None:
    admin = env.client("admin")
    for user in range(3, 6):
        await env.ledger.increase({"user_id": user, "type": "wallet"}, user * 100)
    await env.ledger.increase({"user_id": 9, "type": "fees"}, 1)
    page = await admin.get("/admin/reports/balances?sort=balance&where=type=wallet")
    text = page.text
    order = [text.index(x) for x in ("$3.00", "$4.00", "$5.00", "$100.00", "$4,242.42")]
    assert order == sorted(order)
    assert "$0.01" not in text  # filtered out
    total = 300 + 400 + 500 + 10_000 + 424_242
    assert f"${total / 100:,.2f}" in text
    assert 'aria-sort="ascending"' in text
    bad = await admin.get("/admin/reports/balances?sort=evil")
    assert bad.status_code == 400


async def test_statistics_pages_show_totals(env: Env) -> None:
    admin = env.client("admin")
    await env.ledger.decrease(env.bob, 242)
    page = await admin.get(f"/user/{_aid(env.bob)}/statistics?period=year")
    assert page.status_code == 200
    assert "$4,242.42" in page.text
    assert "$2.42" in page.text
    assert "$4,240.00" in page.text
    assert (await admin.get("/admin/reports/statistics?period=week")).status_code == 400


def test_create_app_refuses_bad_arguments() -> None:
    from mongoledger.memory import AsyncMemoryClient

    ledger = AsyncLedger(AsyncMemoryClient()["x"])
    with pytest.raises(TypeError, match="AsyncLedger"):
        create_app(object(), identify=lambda r: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        create_app(ledger, identify=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="page_size"):
        create_app(ledger, identify=lambda r: None, page_size=0)
    with pytest.raises(ValueError, match="16 bytes"):
        create_app(ledger, identify=lambda r: None, secret_key="short")
    with pytest.raises(ValueError, match="unknown permission"):
        Viewer("x", None, {"view everything"})


async def test_identify_may_be_async_and_must_return_a_viewer(env: Env) -> None:
    async def identify(request: object) -> Viewer:
        return Viewer("async", None, {VIEW_ALL})

    app = create_app(env.ledger, identify=identify)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/api/balances")).status_code == 200
    wrong = create_app(env.ledger, identify=lambda request: "admin")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrong, raise_app_exceptions=True), base_url="http://t"
    ) as c:
        with pytest.raises(TypeError, match="expected a Viewer"):
            await c.get("/api/balances")


async def test_adjust_form_reads_amounts_in_the_apps_format() -> None:
    from mongoledger.memory import AsyncMemoryClient
    from mongoledger.web import CurrencyFormat

    euro = CurrencyFormat(symbol=" €", position="after", thousands_sep=".", decimal_sep=",")
    env = await make_env(AsyncMemoryClient()["web"], money=euro, date_format="%d.%m.%Y")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app),
        base_url="http://t",
        headers={"x-test-viewer": "admin"},
    ) as client:
        form = await client.get("/admin/adjust")
        assert "1.234,56" in form.text
        fields = {"operation": "credit", "account": _aid(env.bob), "amount": "1.234,56"}
        response = await client.post(
            "/admin/adjust", data={**fields, "csrf_token": csrf_of(form.text)}
        )
        assert "+1.234,56 €" in response.text
        assert await env.ledger.balance(env.bob) == 424_242 + 123_456
        sheet = await client.get(f"/user/{_aid(env.bob)}/balance")
        assert "5.476,98 €" in sheet.text
        assert re.search(r"\d\d\.\d\d\.\d{4}", sheet.text)
