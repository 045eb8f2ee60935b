"""Response headers every answer carries, and CSRF tokens for the forms.

Headers: a Content-Security-Policy that allows only the app's own script and stylesheet (no
inline script, no framing: ``frame-ancestors 'none'``), ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, and ``Cache-Control: no-store``
on everything but the static files (pages and API answers carry balances).

CSRF: a random per-browser secret in an HttpOnly, SameSite=Strict cookie; each form carries
HMAC(app secret, cookie secret, viewer name). A POST whose token does not match is refused
before anything is read or written. The JSON API is protected differently: its writes accept
only ``Content-Type: application/json``, which a cross-site form cannot send.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SecurityHeaders", "csrf_ok", "csrf_token"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_NO_STORE = (b"cache-control", b"no-store")
_STATIC_CACHE = (b"cache-control", b"public, max-age=3600")

CSRF_COOKIE = "mongoledger_csrf"
CSRF_FIELD = "csrf_token"


class SecurityHeaders:
    """ASGI middleware adding the security headers (and the cache policy) to every response."""

    def __init__(self, app: ASGIApp, *, static_prefix: str = "/static/") -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        relative = path[len(root) :] if root and path.startswith(root) else path
        cache = _STATIC_CACHE if relative.startswith(self.static_prefix) else _NO_STORE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"cache-control",)
                ]
                headers.extend(_HEADERS)
                headers.append(cache)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie_path(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root or "/"


def csrf_token(request: Request, response_cookies: dict[str, str], secret: bytes, who: str) -> str:
    """The form token for this browser and viewer; a new browser secret is put in
    ``response_cookies`` when the request carried none."""
    browser = request.cookies.get(CSRF_COOKIE)
    if not browser or len(browser) > 128:
        browser = secrets.token_urlsafe(32)
        response_cookies[CSRF_COOKIE] = browser
    return _sign(secret, browser, who)


def set_csrf_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=_cookie_path(request),
    )


def csrf_ok(request: Request, form: Any, secret: bytes, who: str) -> bool:
    """Whether the submitted form's token matches this browser's secret and viewer."""
    browser = request.cookies.get(CSRF_COOKIE)
    sent = form.get(CSRF_FIELD)
    if not browser or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(sent, _sign(secret, browser, who))


def _sign(secret: bytes, browser: str, who: str) -> str:
    message = f"{browser}\x00{who}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
