"""``mongoledger serve``: the app with its own login (users, sessions, a login rate limit).

* Users live in a collection (``mongoledger users add|remove|list|passwd``), with Argon2id
  password hashes (:mod:`._users`).
* A session is a signed cookie (HMAC-SHA256; HttpOnly, SameSite=Lax, Secure over HTTPS) that
  names the user, when it was issued, and a stamp of the password hash: changing a password or
  removing the user ends its sessions; a session lasts ``session_seconds``.
* The login form carries a CSRF token; failed logins are limited per client address and per
  user name (:class:`LoginLimiter`), answered 429 while the limit holds.
* In the background the app releases expired holds (``AsyncLedger.expire_holds``) once the
  ledger has them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

from mongoledger._async.ledger import AsyncLedger
from mongoledger._format import DEFAULT_DATE_FORMAT, CurrencyFormat
from mongoledger.web._app import create_app
from mongoledger.web._context import WebContext
from mongoledger.web._pages import CsrfRejected
from mongoledger.web._permissions import Access, Viewer
from mongoledger.web._render import Renderer
from mongoledger.web._security import csrf_ok
from mongoledger.web._users import password_stamp, verify_password, viewer_of

__all__ = ["SESSION_COOKIE", "LoginLimiter", "served_app"]

SESSION_COOKIE = "mongoledger_session"
SESSION_SECONDS = 12 * 3600
EXPIRE_HOLDS_EVERY = 30.0


class LoginLimiter:
    """At most ``max_failures`` failed logins per key (a client address, a user name) in any
    ``window`` seconds; a success clears the user name's count."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, *keys: str) -> int:
        """Seconds until another attempt is allowed for all ``keys`` (0: allowed now)."""
        wait = 0.0
        for key in keys:
            times = self._recent(key)
            if len(times) >= self.max_failures:
                wait = max(wait, self.window - (self.clock() - times[0]))
        return math.ceil(wait)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        if len(self._failures) > 100_000:  # bounded memory under a flood of names
            self._failures.clear()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


class Sessions:
    """Signed session cookies naming a user of the users collection."""

    def __init__(self, users: Any, secret: bytes, max_age: int = SESSION_SECONDS) -> None:
        self.users = users
        self.secret = secret
        self.max_age = max_age

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, b"session\x00" + payload, hashlib.sha256).hexdigest()

    def cookie_value(self, name: str, password_hash: str) -> str:
        payload = json.dumps(
            {"u": name, "s": password_stamp(password_hash), "t": int(time.time())},
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)

    def _payload(self, value: str) -> dict[str, Any] | None:
        encoded, _, signature = value.partition(".")
        if not encoded or len(value) > 4096:
            return None
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("t")
        if not isinstance(issued, int) or not 0 <= time.time() - issued <= self.max_age:
            return None
        return dict(data)

    async def identify(self, request: Request) -> Viewer | None:
        value = request.cookies.get(SESSION_COOKIE)
        data = None if value is None else self._payload(value)
        if data is None:
            return None
        user = await self.users.find_one({"_id": data.get("u")})
        if user is None or password_stamp(user.get("password_hash", "")) != data.get("s"):
            return None  # removed, or the password changed since this session began
        return viewer_of(user)


def _safe_next(target: str | None, base: str) -> str:
    """Only a path of this site (never ``//host`` or a scheme): no open redirect."""
    fallback = base + "/"
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def served_app(
    ledger: AsyncLedger,
    users: Any,
    *,
    secret_key: bytes,
    money: CurrencyFormat | None = None,
    date_format: str = DEFAULT_DATE_FORMAT,
    title: str = "Balances",
    limiter: LoginLimiter | None = None,
    expire_holds_every: float = EXPIRE_HOLDS_EVERY,
) -> FastAPI:
    """The app of ``mongoledger serve``: :func:`create_app` with a login over ``users``."""
    sessions = Sessions(users, secret_key)
    limit = limiter if limiter is not None else LoginLimiter()
    app = create_app(
        ledger,
        identify=sessions.identify,
        money=money,
        date_format=date_format,
        title=title,
        secret_key=secret_key,
        login_url="/login",
        logout_url="/logout",
    )
    web: WebContext = app.state.web
    renderer: Renderer = app.state.renderer
    app.router.lifespan_context = _lifespan(ledger, expire_holds_every)

    def login_page(
        request: Request, *, error: str | None = None, status: int = 200, username: str = ""
    ) -> Response:
        base = request.scope.get("root_path", "")
        notice = "You have been logged out." if request.query_params.get("bye") else None
        return renderer.page(
            request,
            Access(None),
            "login.html",
            {
                "action": base + "/login",
                "next": _safe_next(request.query_params.get("next"), base),
                "error": error,
                "notice": notice,
                "username": username,
            },
            status=status,
        )

    @app.get("/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return login_page(request)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form, web.secret, ""):
            raise CsrfRejected
        name = str(form.get("username", "")).strip()[:64]
        password = str(form.get("password", ""))
        client = request.client.host if request.client else "unknown"
        keys = (f"ip:{client}", f"user:{name.lower()}")
        wait = limit.retry_after(*keys)
        if wait:
            response = login_page(
                request,
                error=f"Too many failed logins. Try again in {wait} seconds.",
                status=429,
                username=name,
            )
            response.headers["Retry-After"] = str(wait)
            return response
        user = await users.find_one({"_id": name}) if name else None
        stored = None if user is None else user.get("password_hash")
        if not verify_password(stored, password) or user is None or stored is None:
            limit.failed(*keys)
            return login_page(
                request, error="Wrong user name or password.", status=401, username=name
            )
        limit.succeeded(keys[1])
        base = request.scope.get("root_path", "")
        target = _safe_next(str(form.get("next", "")), base)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.cookie_value(name, stored),
            max_age=sessions.max_age,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path=base or "/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        access = await web.access(request)
        base = request.scope.get("root_path", "")
        if access.viewer is not None:  # (no session: nothing to end, nothing to protect)
            form = await request.form()
            if not csrf_ok(request, form, web.secret, access.viewer.name):
                raise CsrfRejected
        response = RedirectResponse(base + "/login?bye=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base or "/")
        return response

    return app


def _lifespan(ledger: AsyncLedger, every: float) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_expire_holds_forever(ledger, every))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


async def _expire_holds_forever(ledger: AsyncLedger, every: float) -> None:
    """Release expired holds every ``every`` seconds, once the ledger has holds (issue 13)."""
    expire = getattr(ledger, "expire_holds", None)
    if expire is None:
        return  # HOLDS: this ledger predates holds; nothing to expire
    while True:
        try:
            await expire()
        except Exception as exc:  # keep serving; say why once per failure
            print(f"mongoledger serve: expire_holds failed: {exc}", flush=True)
        await asyncio.sleep(every)
