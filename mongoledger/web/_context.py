"""What every route shares: the ledger, the settings, the renderer, and the request's viewer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from mongoledger._async.ledger import AsyncLedger
from mongoledger._format import CurrencyFormat
from mongoledger.cli._values import UsageError, parse_account_id, parse_when
from mongoledger.errors import AccountNotFound, InvalidAccount, InvalidArgument
from mongoledger.web._permissions import Access, Viewer

__all__ = ["Identify", "WebContext"]

Identify = Callable[[Request], Any]  # returns Viewer | None, or an awaitable of it


@dataclass
class WebContext:
    """The app's ledger and settings; one per :func:`create_app`."""

    ledger: AsyncLedger
    identify: Identify
    money: CurrencyFormat
    date_format: str
    page_size: int
    secret: bytes
    title: str
    login_url: str | None
    logout_url: str | None

    async def access(self, request: Request) -> Access:
        """The request's viewer (from ``identify``), with its own account resolved to an id."""
        cached = request.scope.get("mongoledger.access")
        if isinstance(cached, Access):
            return cached
        viewer = self.identify(request)
        if inspect.isawaitable(viewer):
            viewer = await viewer
        if viewer is not None and not isinstance(viewer, Viewer):
            raise TypeError(f"identify() returned {viewer!r}; expected a Viewer or None")
        own = None
        if viewer is not None and viewer.account is not None:
            if isinstance(viewer.account, dict):
                try:
                    own = (await self.ledger.get_account(viewer.account)).id
                except (AccountNotFound, InvalidAccount):
                    own = None  # nothing of theirs to show yet
            else:
                own = viewer.account
        access = Access(viewer, own)
        request.scope["mongoledger.access"] = access
        return access


def account_id_from_text(text: str) -> Any:
    """A URL's ``{account_id}`` as the ``_id`` (24 hex digits: an ObjectId; see the CLI rules)."""
    try:
        return parse_account_id(text)
    except UsageError as exc:
        raise InvalidAccount(str(exc)) from None


def date_from_text(text: str | None, *, what: str, end_of_day: bool = False) -> Any:
    """An ISO 8601 date from a query string (None when empty)."""
    if text is None or not text.strip():
        return None
    try:
        return parse_when(text, end_of_day=end_of_day)
    except UsageError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


def int_from_text(text: str | None, *, what: str, minimum: int, maximum: int) -> int | None:
    """A bounded integer from a query string (None when empty)."""
    if text is None or not text.strip():
        return None
    raw = text.strip()
    if not raw.lstrip("-").isdigit() or len(raw) > 20:
        raise InvalidArgument(f"{what} {text!r} is not an integer")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{what} {value} must be between {minimum} and {maximum}")
    return value
