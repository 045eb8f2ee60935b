"""The fast path serves the app's routes exactly as FastAPI would (mongoledger/web/_fastpath.py).

Two apps over two identically seeded ledgers, one with the fast path and one without, get the
same requests in the same order (every route × every viewer of the route matrix, then bad
inputs); their answers must be equal once the ids and dates that differ between the two
ledgers are masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from mongoledger._text import account_id_text
from mongoledger.memory import AsyncMemoryClient
from mongoledger.web._fastpath import FastPath, _flattened, compile_route
from mongoledger.web._security import CSRF_COOKIE
from tests.web.conftest import SECRET_BALANCE, VIEWERS, Env, make_env
from tests.web.test_routes import CASES, ROUTES, Route, _allowed, _state

_MASKS = [
    (re.compile(r"[0-9a-f]{24}"), "<id>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?"), "<date>"),
    (re.compile(r'name="idempotency_key" value="[^"]*"'), "<form key>"),
]
JSON = {"content-type": "application/json"}
SECRET = "the same secret in both apps"
BROWSER = "fixed-browser-secret"
Request = Callable[[Env], tuple[str, str, dict[str, Any]]]


def without_fast_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    return app


def fast_path_of(app: FastAPI) -> FastPath:
    (middleware,) = [m for m in app.user_middleware if m.cls is FastPath]

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"FastAPI was asked to serve {scope['method']} {scope['path']}")

    return FastPath(refuse, **middleware.kwargs)


def _client(app: Any, who: str | None) -> httpx.AsyncClient:
    headers = {} if who is None else {"x-test-viewer": who}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers=headers,
        cookies={CSRF_COOKIE: BROWSER},  # the same form tokens in both apps
    )


def _mask(text: str) -> str:
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


def _masked(response: httpx.Response) -> tuple[int, list[tuple[str, str]], str]:
    """Status, every header (the security headers, Cache-Control, cookies, Location, Allow...)
    and body, with the ids and dates that differ between the two ledgers masked."""
    headers = []
    for key, value in response.headers.multi_items():
        if key == "content-length":  # a masked date may differ in length: checked here
            if response.request.method != "HEAD":
                assert int(value) == len(response.content), (value, len(response.content))
            continue
        headers.append((key, _mask(value)))
    return response.status_code, headers, _mask(response.text)


@pytest.fixture
async def pair() -> tuple[Env, Env]:
    fast = await make_env(AsyncMemoryClient()["fast"], secret_key=SECRET)
    slow = await make_env(AsyncMemoryClient()["slow"], secret_key=SECRET)
    without_fast_path(slow.app)
    return fast, slow


async def _same_answers(pair: tuple[Env, Env], who: str | None, request: Request) -> None:
    answers = []
    for env in pair:
        method, url, kwargs = request(env)
        async with _client(env.app, who) as client:
            answers.append(_masked(await client.request(method, url, **kwargs)))
    assert answers[0] == answers[1]


def _from_route(route: Route, who: str | None) -> Request:
    def build(env: Env) -> tuple[str, str, dict[str, Any]]:
        url, kwargs = route.build(env)
        if route.name.startswith("page-adjust-") and route.method == "POST":
            kwargs = {"data": {**kwargs["data"], "csrf_token": _csrf(who or "")}}
        return route.method, url, kwargs

    return build


def _csrf(who: str = "admin") -> str:
    """The form token of ``who`` in both apps (one secret, one browser secret)."""
    from mongoledger.web._security import _sign

    return _sign(SECRET.encode(), BROWSER, who)


async def test_every_route_the_app_declares_is_served_by_the_fast_path() -> None:
    env = await make_env(AsyncMemoryClient()["web"])
    fast = fast_path_of(env.app)
    (middleware,) = [m for m in env.app.user_middleware if m.cls is FastPath]
    declared = {r.endpoint for router in middleware.kwargs["routers"] for r in router.routes}
    assert declared
    # The app's routes in the app's order: each of ours compiled, the others (the OpenAPI
    # document, first; the static files, last) kept in place for FastAPI.
    in_order = _flattened(env.app.router.routes, middleware.kwargs["routers"])
    assert {getattr(r, "endpoint", None) for r in in_order} >= declared
    for compiled, route in zip(fast.routes, in_order, strict=True):
        ours = getattr(route, "endpoint", None) in declared
        assert (compiled.endpoint is not None) == ours, route
        assert compiled.route is (route if ours else None)
        if ours:
            assert compile_route(route) is not None
    assert fast.routes[0].endpoint is None  # /api/openapi.json


async def test_the_fast_path_answers_without_fastapi_and_hands_on_what_it_must() -> None:
    env = await make_env(AsyncMemoryClient()["web"])
    fast = fast_path_of(env.app)
    bob = account_id_text(env.bob)
    async with _client(fast, "admin") as client:
        balance = await client.get(f"/api/accounts/{bob}/balance")
        assert balance.status_code == 200
        assert balance.json()["balance"] == 424242
        paid = await client.post(f"/api/accounts/{bob}/increase", json={"amount": 5})
        assert paid.status_code == 201
        assert paid.json()["transactions"][0]["balance_after"] == 424247
        page = await client.get("/admin/reports/balances")
        assert page.status_code == 200
        denied = await _client(fast, "alice").get(f"/api/accounts/{bob}")
        assert denied.status_code == 403
        for method, url, kwargs in [
            ("POST", f"/api/accounts/{bob}/increase", {"content": b"{", "headers": JSON}),
            ("POST", f"/api/accounts/{bob}/increase", {"json": {"amount": "5"}}),  # invalid
            ("POST", f"/api/accounts/{bob}/increase", {"headers": JSON}),  # no body
            ("DELETE", f"/api/accounts/{bob}", {}),  # no such method
            ("GET", "/api/openapi.json", {}),
            ("GET", "/static/style.css", {}),
            ("GET", "/api/nothing", {}),
        ]:
            with pytest.raises(AssertionError, match="FastAPI was asked"):
                await client.request(method, url, **kwargs)


async def test_mounted_under_a_prefix_the_fast_path_serves_the_same() -> None:
    env = await make_env(AsyncMemoryClient()["web"])
    service = FastAPI()
    service.mount("/ledger", fast_path_of(env.app))
    async with _client(service, "admin") as client:
        answer = await client.get(f"/ledger/api/accounts/{account_id_text(env.bob)}/balance")
        assert answer.status_code == 200
        assert answer.json()["balance"] == 424242


@pytest.mark.parametrize(("route", "who"), CASES)
async def test_route_matrix_answers_as_fastapi(
    pair: tuple[Env, Env], route: Route, who: str
) -> None:
    viewer = None if who == "anonymous" else who
    await _same_answers(pair, viewer, _from_route(route, viewer))


def _bad(method: str, template: str, **kwargs: Any) -> Request:
    """A request whose path (and form values) name ``{bob}``'s account or ``{hold}``."""

    def build(env: Env) -> tuple[str, str, dict[str, Any]]:
        names = {"bob": account_id_text(env.bob), "hold": env.bob_hold}
        filled = dict(kwargs)
        for part in ("data", "json"):
            if isinstance(kwargs.get(part), dict):
                filled[part] = {
                    k: v.format(**names) if isinstance(v, str) else v
                    for k, v in kwargs[part].items()
                }
        return method, template.format(**names), filled

    return build


INCREASE = "/api/accounts/{bob}/increase"
BAD: list[Request] = [
    _bad("POST", INCREASE, json={"amount": "5"}),
    _bad("POST", INCREASE, json={"amount": 0}),
    _bad("POST", "/api/accounts/{bob}/decrease", json={"amount": 10**7}),
    _bad("POST", INCREASE, json={"amount": 1, "x": 1}),
    _bad("POST", INCREASE, json={"amount": 1, "data": {"amount": 2}}),
    _bad("POST", INCREASE, content=b"{", headers=JSON),
    _bad("POST", INCREASE, headers=JSON),
    _bad("POST", INCREASE, data={"amount": "5"}),
    _bad("POST", "/api/transfers", json=[1, 2]),
    _bad("POST", "/api/transfers", json={"from": "{bob}", "to": "{bob}", "amount": 1}),
    _bad("PUT", "/api/accounts/{bob}"),
    _bad("GET", "/api/nothing"),
    _bad("GET", "/api/accounts/{bob}/"),
    _bad("GET", "/api/me/"),
    _bad("GET", "/balance/"),
    _bad("GET", "/api//me"),
    _bad("HEAD", "/api/accounts/{bob}/balance"),
    _bad("HEAD", "/admin/reports/balances"),
    _bad("OPTIONS", "/api/accounts/{bob}/balance"),
    _bad("OPTIONS", "/api/transfers"),
    _bad("GET", "/api/transfers"),
    _bad("POST", "/api/accounts/{bob}/balance", json={"amount": 1}),
    _bad("GET", "/api/accounts/{bob}/balance?calculated=true&calculated=0"),
    _bad("GET", "/api/accounts/{bob}/balance?at=2100-01-01&at=&calculated=1"),
    _bad("GET", "/api/accounts/{bob}/history?limit=%31&start=2026-01-01+00%3A00"),
    _bad("GET", "/api/accounts/{bob}/history?limit"),
    _bad("GET", "/api/balances?where=&sort=id&limit=+2"),
    _bad("GET", "/api/balances?where=user_id%3D2&where=type=wallet,user_id=2"),
    _bad("GET", "/api/holds?account=&status=all"),
    _bad("GET", "/api/holds?account={bob}&status=pending,voided&limit=1"),
    _bad("GET", "/api/statistics?period=week"),
    _bad("GET", "/api/accounts/%7Bbob%7D/balance"),
    *[
        _bad("POST", INCREASE, content=b'{"amount": 1}', headers={"content-type": kind})
        for kind in ("text/plain", "application/x+json", "Application/JSON; charset=utf-8")
    ],
    _bad("POST", INCREASE, content=b"null", headers=JSON),
    _bad("POST", INCREASE, json={"amount": 2**70}),
    _bad("POST", INCREASE, json={"amount": 1.5}),
    _bad("POST", INCREASE, json={"amount": True}),
    _bad("GET", "/api/accounts/json:{{"),
    _bad("GET", "/api/accounts/65ab12cd34ef56ab78cd90ef/balance"),
    _bad("GET", "/api/accounts/{bob}/history?start=yesterday"),
    _bad("GET", "/api/accounts/{bob}/history?limit=1&limit=2"),
    _bad("GET", "/api/accounts/{bob}/balance?at="),
    _bad("GET", "/api/balances?where=type=wallet&where=user_id=2"),
    _bad("GET", "/api/balances?where=nokey"),
    _bad("GET", "/api/holds?status=lost"),
    _bad("POST", "/api/holds/{hold}/capture", json={"amount": 10**6}),
    _bad("GET", "/admin/reports/balances?sort=name"),
    _bad("GET", "/user/{bob}/balance?before=x"),
    _bad("POST", "/admin/adjust", data={"operation": "credit"}),
    _bad(
        "POST",
        "/admin/adjust",
        data={"operation": "credit", "account": "{bob}", "amount": "1.234", "csrf_token": _csrf()},
    ),
    # Twice: the retry is answered from a read, the first from what the write kept.
    *[_bad("POST", INCREASE, json={"amount": 3}, headers={"idempotency-key": "k-1"})] * 2,
]


@pytest.mark.parametrize("who", [None, "alice", "teller", "admin"])
async def test_bad_inputs_answer_as_fastapi(pair: tuple[Env, Env], who: str | None) -> None:
    for request in BAD:
        await _same_answers(pair, who, request)


REFUSED = [
    pytest.param(route, who, id=f"{route.name}-{who}")
    for route in ROUTES
    for who in ["anonymous", *VIEWERS]
    if not _allowed(route, who)
]


@pytest.mark.parametrize(("route", "who"), REFUSED)
async def test_the_fast_path_itself_refuses_who_may_not(route: Route, who: str) -> None:
    """Each refusal of the route matrix is the fast path's own (FastAPI behind it fails the
    test if asked): 401/403 before the body is read, no data, nothing written."""
    env = await make_env(AsyncMemoryClient()["web"])
    viewer = None if who == "anonymous" else who
    url, kwargs = route.build(env)
    before = await _state(env)
    async with _client(fast_path_of(env.app), viewer) as client:
        answer = await client.request(route.method, url, **kwargs)
    assert answer.status_code == (401 if viewer is None else 403), answer.text
    assert str(SECRET_BALANCE) not in answer.text
    assert "bob's salary" not in answer.text
    assert await _state(env) == before


async def test_overridden_dependencies_send_every_request_to_fastapi() -> None:
    """FastAPI applies ``app.dependency_overrides`` (a service's tests); the fast path, which
    does not, steps aside while there are any."""
    env = await make_env(AsyncMemoryClient()["web"])
    bob = account_id_text(env.bob)
    (middleware,) = [m for m in env.app.user_middleware if m.cls is FastPath]
    (adjuster,) = [
        d.dependency
        for router in middleware.kwargs["routers"]
        for r in router.routes
        if getattr(r, "path", "") == "/api/accounts/{account_id}/increase"
        for d in r.dependencies
    ]

    async def everyone_adjusts() -> None:
        return None

    env.app.dependency_overrides[adjuster] = everyone_adjusts
    async with _client(env.app, "alice") as client:
        paid = await client.post(f"/api/accounts/{bob}/increase", json={"amount": 1})
    assert paid.status_code == 201  # as FastAPI serves it: the override ran
    env.app.dependency_overrides.clear()
    async with _client(env.app, "alice") as client:
        refused = await client.post(f"/api/accounts/{bob}/increase", json={"amount": 1})
    assert refused.status_code == 403


async def test_a_request_for_the_mount_point_itself_is_routed_as_starlette_does() -> None:
    from mongoledger.web._fastpath import _route_path

    for path, root, expected in [
        ("/ledger", "/ledger", ""),
        ("/ledger/", "/ledger", "/"),
        ("/ledger/api/me", "/ledger", "/api/me"),
        ("/ledgers/api/me", "/ledger", "/ledgers/api/me"),
        ("/api/me", "", "/api/me"),
        ("/other", "/ledger", "/other"),
    ]:
        assert _route_path({"path": path, "root_path": root}) == expected


def test_an_inclusion_or_route_that_changes_something_is_left_to_fastapi() -> None:
    from fastapi import APIRouter
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

    from mongoledger.web._fastpath import _flattened

    async def x(request: Any) -> Any:  # pragma: no cover - never called
        return StarletteResponse()

    # (resolved here: this module's own ``Request`` is another thing)
    x.__annotations__ = {"request": StarletteRequest, "return": StarletteResponse}
    ours = APIRouter()
    ours.add_api_route("/x", x)
    assert compile_route(ours.routes[0]) is not None  # type: ignore[arg-type]
    for options in ({}, {"prefix": "/p"}, {"max_body_size": 10}):
        app = FastAPI()
        app.include_router(ours, **options)
        expanded = _flattened(app.router.routes, [ours])
        assert (ours.routes[0] in expanded) == (not options), options
    limited = APIRouter()
    limited.add_api_route("/y", x, max_body_size=10)
    assert compile_route(limited.routes[0]) is None  # type: ignore[arg-type]
