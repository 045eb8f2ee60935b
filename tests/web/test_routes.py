"""Every page and endpoint × every permission level × anonymous (httpx against the ASGI app).

A refusal is 401 (anonymous) or 403 (lacking the permission), carries none of the account's
data, and writes nothing. An allowed call answers 200/201.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mongoledger.cli._values import account_id_text
from tests.web.conftest import SECRET_BALANCE, VIEWERS, Env, csrf_of

# What each viewer may do: see alice's account, see bob's, see everything, adjust.
MAY = {
    "anonymous": set(),
    "nobody": set(),
    "alice": {"own", "alice"},
    "auditor": {"own", "alice", "bob", "all"},
    "teller": {"adjust"},
    "admin": {"own", "alice", "bob", "all", "adjust"},
}


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    need: str  # "alice" / "bob" (that account), "own", "all", "adjust", "any"
    build: Callable[[Env], tuple[str, dict[str, Any]]]
    writes: bool = False
    streams: bool = False
    status: int | None = None  # when allowed (default: 201 for an API POST, else 200)


def _aid(env: Env, who: str) -> str:
    return account_id_text(env.alice if who == "alice" else env.bob)


def _account_routes(who: str) -> list[Route]:
    def path(suffix: str, page: bool = False) -> Callable[[Env], tuple[str, dict[str, Any]]]:
        if page:
            return lambda env: (f"/user/{_aid(env, who)}{suffix}", {})
        return lambda env: (f"/api/accounts/{_aid(env, who)}{suffix}", {})

    return [
        Route(f"api-account-{who}", "GET", who, path("")),
        Route(f"api-balance-{who}", "GET", who, path("/balance")),
        Route(f"api-balance-at-{who}", "GET", who, path("/balance?at=2100-01-01")),
        Route(f"api-history-{who}", "GET", who, path("/history")),
        Route(f"api-statistics-{who}", "GET", who, path("/statistics")),
        Route(f"api-events-{who}", "GET", who, path("/events"), streams=True),
        Route(
            f"api-transaction-{who}",
            "GET",
            who,
            lambda env: (f"/api/transactions/{env.alice_tx if who == 'alice' else env.bob_tx}", {}),
        ),
        Route(
            f"api-holds-{who}",
            "GET",
            who,
            lambda env: (f"/api/holds?account={_aid(env, who)}&status=all", {}),
        ),
        Route(
            f"api-hold-{who}",
            "GET",
            who,
            lambda env: (f"/api/holds/{env.alice_hold if who == 'alice' else env.bob_hold}", {}),
        ),
        Route(f"page-sheet-{who}", "GET", who, path("/balance", page=True)),
        Route(f"page-statistics-{who}", "GET", who, path("/statistics", page=True)),
    ]


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {"json": body}


ROUTES = [
    *_account_routes("alice"),
    *_account_routes("bob"),
    Route("api-me", "GET", "any", lambda env: ("/api/me", {})),
    Route("page-own-sheet", "GET", "own", lambda env: ("/balance", {})),
    Route("api-balances", "GET", "all", lambda env: ("/api/balances", {})),
    Route("api-statistics", "GET", "all", lambda env: ("/api/statistics", {})),
    Route("api-verify", "GET", "all", lambda env: ("/api/verify", {})),
    Route("api-all-holds", "GET", "all", lambda env: ("/api/holds", {})),
    Route("page-report", "GET", "all", lambda env: ("/admin/reports/balances", {})),
    Route("page-all-statistics", "GET", "all", lambda env: ("/admin/reports/statistics", {})),
    Route("page-adjust-form", "GET", "adjust", lambda env: ("/admin/adjust", {})),
    Route(
        "api-increase",
        "POST",
        "adjust",
        lambda env: (f"/api/accounts/{_aid(env, 'bob')}/increase", _json({"amount": 5})),
        writes=True,
    ),
    Route(
        "api-decrease",
        "POST",
        "adjust",
        lambda env: (f"/api/accounts/{_aid(env, 'bob')}/decrease", _json({"amount": 5})),
        writes=True,
    ),
    Route(
        "api-transfer",
        "POST",
        "adjust",
        lambda env: (
            "/api/transfers",
            _json({"from": _aid(env, "bob"), "to": _aid(env, "alice"), "amount": 7}),
        ),
        writes=True,
    ),
    Route(
        "api-post",
        "POST",
        "adjust",
        lambda env: (
            "/api/posts",
            _json(
                {
                    "legs": [
                        {"account": _aid(env, "bob"), "amount": -3},
                        {"account": _aid(env, "alice"), "amount": 3},
                    ]
                }
            ),
        ),
        writes=True,
    ),
    Route(
        "api-revert",
        "POST",
        "adjust",
        lambda env: (f"/api/transactions/{env.bob_tx}/revert", _json({})),
        writes=True,
    ),
    Route(
        "api-hold-post",
        "POST",
        "adjust",
        lambda env: (
            "/api/holds",
            _json({"from": _aid(env, "bob"), "to": _aid(env, "alice"), "amount": 7}),
        ),
        writes=True,
    ),
    Route(
        "api-capture",
        "POST",
        "adjust",
        lambda env: (f"/api/holds/{env.bob_hold}/capture", _json({"amount": 600})),
        writes=True,
    ),
    Route(
        "api-void",
        "POST",
        "adjust",
        lambda env: (f"/api/holds/{env.bob_hold}/void", _json({})),
        writes=True,
        status=200,
    ),
    Route(
        "api-open-account",
        "POST",
        "adjust",
        lambda env: ("/api/accounts", _json({"attributes": {"user_id": 3}})),
        writes=True,
    ),
    Route(
        "page-adjust-post",
        "POST",
        "adjust",
        lambda env: (
            "/admin/adjust",
            {"data": {"operation": "credit", "account": _aid(env, "bob"), "amount": "1.00"}},
        ),
        writes=True,
    ),
]


def _allowed(route: Route, who: str) -> bool:
    if who == "anonymous":
        return False
    if route.need == "any":
        return True
    return route.need in MAY[who]


async def _state(env: Env) -> tuple[int, ...]:
    accounts = await env.ledger.accounts.count_documents({})
    holds = env.ledger.database[env.ledger.config.holds_collection]
    pending = await holds.count_documents({"status": "pending"})
    return await env.count(), int(accounts), int(await holds.count_documents({})), int(pending)


# An allowed event stream never ends: tests/web/test_live.py reads those over real HTTP.
CASES = [
    pytest.param(route, who, id=f"{route.name}-{who}")
    for route in ROUTES
    for who in ["anonymous", *VIEWERS]
    if not (route.streams and _allowed(route, who))
]


@pytest.mark.parametrize(("route", "who"), CASES)
async def test_route_permissions(env: Env, route: Route, who: str) -> None:
    allowed = _allowed(route, who)
    client = env.client(who)
    url, kwargs = route.build(env)
    if route.name == "page-adjust-post" and allowed:
        form = await client.get("/admin/adjust")
        kwargs["data"]["csrf_token"] = csrf_of(form.text)
    before = await _state(env)
    response = await client.request(route.method, url, **kwargs)
    if allowed:
        expected = route.status or (
            201 if route.method == "POST" and url.startswith("/api") else 200
        )
        assert response.status_code == expected, response.text
        if route.writes:
            assert await _state(env) != before
        return
    assert response.status_code == (401 if who == "anonymous" else 403), response.text
    text = response.text
    for secret in (str(SECRET_BALANCE), "4,242.42", "bob's salary", "10,000", "100.00"):
        assert secret not in text
    assert await _state(env) == before
    if url.startswith("/api"):
        assert response.json()["error"] in ("NotAuthenticated", "Forbidden")
        assert set(response.json()) == {"error", "message"}
    else:
        assert "<h1>" in text  # the refusal is a page of its own


async def test_home_sends_each_viewer_to_their_page(env: Env) -> None:
    expected = {
        "alice": "/balance",
        "auditor": "/admin/reports/balances",
        "teller": "/admin/adjust",
        "admin": "/admin/reports/balances",
        "nobody": "/balance",
    }
    for who, target in expected.items():
        response = await env.client(who).get("/")
        assert response.status_code == 303
        assert response.headers["location"] == target
    assert (await env.client(None).get("/")).status_code == 401


async def test_view_own_sees_own_sheet_and_not_another(env: Env) -> None:
    own = await env.client("alice").get("/balance")
    assert own.status_code == 200
    assert "$100.00" in own.text
    assert "top-up" in own.text
    other = await env.client("alice").get(f"/user/{_aid(env, 'bob')}/balance")
    assert other.status_code == 403
    assert "bob" not in other.text.lower().replace("log out", "")


async def test_unknown_account_is_403_for_view_own_and_404_for_view_all(env: Env) -> None:
    for missing in ("65ab12cd34ef56ab78cd90ef", "no-such-account", "999"):
        assert (await env.client("alice").get(f"/api/accounts/{missing}")).status_code == 403
        answer = await env.client("auditor").get(f"/api/accounts/{missing}")
        assert answer.status_code == 404
        assert answer.json()["error"] == "AccountNotFound"
        page = await env.client("auditor").get(f"/user/{missing}/balance")
        assert page.status_code == 404


async def test_transactions_of_others_answer_like_missing_ones(env: Env) -> None:
    alice = env.client("alice")
    theirs = await alice.get(f"/api/transactions/{env.bob_tx}")
    missing = await alice.get("/api/transactions/65ab12cd34ef56ab78cd90ef")
    malformed = await alice.get("/api/transactions/abc")
    assert theirs.status_code == missing.status_code == malformed.status_code == 403
    assert theirs.json() == missing.json() == malformed.json()
    mine = await alice.get(f"/api/transactions/{env.alice_tx}")
    assert mine.status_code == 200
    assert mine.json()["amount"] == 10_000


async def test_numeric_account_ids_of_different_types_are_one_account(env: Env) -> None:
    from bson.int64 import Int64

    from mongoledger.web import VIEW_OWN, Viewer
    from tests.web.conftest import VIEWERS as viewers

    await env.ledger.increase(7, 100)  # an account whose _id is the int 7
    viewers["seven"] = Viewer("seven", Int64(7), {VIEW_OWN})
    try:
        client = env.client("admin")
        headers = {"x-test-viewer": "seven"}
        assert (await client.get("/api/accounts/7", headers=headers)).status_code == 200
        assert (await client.get("/api/accounts/str:7", headers=headers)).status_code == 403
        assert (await client.get("/api/accounts/bool:true", headers=headers)).status_code == 403
    finally:
        del viewers["seven"]
