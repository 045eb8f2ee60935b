"""``create_app``: the ASGI app (pages, JSON API, static files) over one ``AsyncLedger``."""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from mongoledger._async.ledger import AsyncLedger
from mongoledger._format import DEFAULT_DATE_FORMAT, CurrencyFormat
from mongoledger.errors import LedgerError
from mongoledger.web._api import UnsupportedMediaType, api_router
from mongoledger.web._context import Identify, WebContext
from mongoledger.web._errors import error_body, status_for
from mongoledger.web._pages import CsrfRejected, pages_router
from mongoledger.web._permissions import ADJUST, Forbidden, NotAuthenticated
from mongoledger.web._render import Renderer
from mongoledger.web._security import SecurityHeaders

__all__ = ["create_app"]


def create_app(
    ledger: AsyncLedger,
    *,
    identify: Identify,
    money: CurrencyFormat | None = None,
    date_format: str = DEFAULT_DATE_FORMAT,
    title: str = "Balances",
    page_size: int = 50,
    secret_key: bytes | str | None = None,
    login_url: str | None = None,
    logout_url: str | None = None,
) -> FastAPI:
    """The balance pages and JSON API over ``ledger``, as an ASGI app to mount or serve.

    ``identify(request)`` (plain or async) returns the :class:`Viewer` or None (anonymous);
    it is your service's authentication. ``money`` and ``date_format`` are how amounts and
    dates are shown (the CLI's formats). ``secret_key`` signs the forms' CSRF tokens: give
    every process of one service the same key (default: random per app). An anonymous
    visitor of a page is sent to ``login_url`` (``?next=`` the page) when given, else gets a
    401 page; ``logout_url`` adds a log-out button (a POST form with the CSRF token).
    """
    if not isinstance(ledger, AsyncLedger):
        raise TypeError(f"create_app needs an AsyncLedger, got {ledger!r}")
    if not callable(identify):
        raise TypeError(f"identify {identify!r} is not callable")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise ValueError(f"page_size {page_size!r} must be an integer from 1 to 1000")
    if secret_key is None:
        secret = secrets.token_bytes(32)
    elif isinstance(secret_key, str):
        secret = secret_key.encode()
    else:
        secret = bytes(secret_key)
    if len(secret) < 16:
        raise ValueError("secret_key must be at least 16 bytes")
    web = WebContext(
        ledger=ledger,
        identify=identify,
        money=money if money is not None else CurrencyFormat(),
        date_format=date_format,
        page_size=page_size,
        secret=secret,
        title=title,
        login_url=login_url,
        logout_url=logout_url,
    )
    renderer = Renderer(web)
    app = FastAPI(
        title=f"{title} (mongoledger)",
        summary="Balances, balance sheets, statistics and adjustments of a mongoledger ledger.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is enough
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.web = web
    app.state.renderer = renderer
    app.include_router(api_router(web))
    app.include_router(pages_router(web, renderer))
    static = resources.files("mongoledger.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    _add_error_handlers(app, web, renderer)
    app.add_middleware(SecurityHeaders)
    return app


def _is_api(request: Request) -> bool:
    root = request.scope.get("root_path", "")
    path: str = request.scope.get("path", "")
    relative = path[len(root) :] if root and path.startswith(root) else path
    return relative == "/api" or relative.startswith("/api/")


def _add_error_handlers(app: FastAPI, web: WebContext, renderer: Renderer) -> None:
    async def error_page(request: Request, status: int, heading: str, message: str) -> Response:
        access = await web.access(request)
        return renderer.page(
            request,
            access,
            "error.html",
            {"heading": heading, "message": message, "login_href": None},
            status=status,
        )

    async def not_authenticated(request: Request, exc: Exception) -> Response:
        if _is_api(request):
            return JSONResponse(
                {"error": "NotAuthenticated", "message": "log in first"},
                status_code=401,
                headers={"WWW-Authenticate": "Session"},
            )
        if web.login_url is not None and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"{web.login_url}?next={quote(target, safe='')}", status_code=303
            )
        access = await web.access(request)
        return renderer.page(
            request,
            access,
            "error.html",
            {
                "heading": "Log in required",
                "message": "Log in to see balances.",
                "login_href": web.login_url,
            },
            status=401,
        )

    async def forbidden(request: Request, exc: Exception) -> Response:
        message = "You do not have permission to see this page."
        if isinstance(exc, CsrfRejected):
            message = (
                "The form's security token is missing or out of date; nothing was written. "
                "Reload the form and send it again."
            )
        if _is_api(request):
            kind = "CsrfRejected" if isinstance(exc, CsrfRejected) else "Forbidden"
            return JSONResponse({"error": kind, "message": message}, status_code=403)
        return await error_page(request, 403, "Forbidden", message)

    async def ledger_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LedgerError)
        status = status_for(exc)
        if _is_api(request):
            return JSONResponse(error_body(exc), status_code=status)
        heading = "Not found" if status == 404 else "Cannot show this page"
        return await error_page(request, status, heading, str(exc))

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # The body is read before any dependency runs: still answer 401/403 first.
        access = await web.access(request)
        if access.viewer is None:
            return await not_authenticated(request, exc)
        if request.method == "POST" and not access.viewer.can(ADJUST):
            return await forbidden(request, Forbidden())
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            given = error.get("input")
            shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}{shown}")
        body: dict[str, Any] = {
            "error": "InvalidRequest",
            "message": "; ".join(problems) or "invalid request",
        }
        return JSONResponse(body, status_code=422)

    async def unsupported(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "UnsupportedMediaType", "message": "send the body as application/json"},
            status_code=415,
        )

    app.add_exception_handler(NotAuthenticated, not_authenticated)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(CsrfRejected, forbidden)
    app.add_exception_handler(LedgerError, ledger_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(UnsupportedMediaType, unsupported)
