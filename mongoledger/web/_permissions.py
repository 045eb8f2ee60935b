"""Who may see and do what: the one place the web layer decides it.

Every route, page and API alike, calls :func:`authorize` before it touches the ledger. The
permissions are Balance Tracker's:

* ``VIEW_OWN`` ("view own balances"): the viewer's own account (``Viewer.account``);
* ``VIEW_ALL`` ("view all balances"): every account, the all-balances report, statistics of
  all accounts (it includes ``VIEW_OWN``);
* ``ADJUST`` ("adjust balances"): credit, debit, transfer, revert, open accounts.

An anonymous visitor is refused with :class:`NotAuthenticated` (401); a viewer without the
permission with :class:`Forbidden` (403), decided before any account is looked up, so a
refusal says nothing about whether the account exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ADJUST",
    "PERMISSIONS",
    "VIEW_ALL",
    "VIEW_OWN",
    "Access",
    "Forbidden",
    "NotAuthenticated",
    "Viewer",
    "authorize",
    "same_id",
]

VIEW_OWN: Final = "view own balances"
VIEW_ALL: Final = "view all balances"
ADJUST: Final = "adjust balances"
PERMISSIONS: Final = (VIEW_OWN, VIEW_ALL, ADJUST)


@dataclass(frozen=True)
class Viewer:
    """Who is looking, as ``identify(request)`` reports it.

    ``account`` is the viewer's own account: an ``_id`` or an attribute mapping such as
    ``{"user_id": 7, "type": "wallet"}``, or None. ``permissions`` holds any of ``VIEW_OWN``,
    ``VIEW_ALL`` and ``ADJUST``.
    """

    name: str
    account: Any = None
    permissions: frozenset[str] = field(default_factory=frozenset)

    def __init__(self, name: str, account: Any = None, permissions: Iterable[str] = ()) -> None:
        if not isinstance(name, str):
            raise TypeError(f"viewer name {name!r} is not a string")
        if isinstance(permissions, str):
            raise TypeError(f"permissions {permissions!r} must be a set of permission names")
        granted = frozenset(permissions)
        unknown = sorted(p for p in granted if p not in PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permission(s) {unknown!r}; use VIEW_OWN, VIEW_ALL or ADJUST")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "account", account)
        object.__setattr__(self, "permissions", granted)

    def can(self, permission: str) -> bool:
        """Whether the viewer holds ``permission`` (``VIEW_ALL`` includes ``VIEW_OWN``)."""
        if permission == VIEW_OWN and VIEW_ALL in self.permissions:
            return True
        return permission in self.permissions


class NotAuthenticated(Exception):
    """No viewer: the visitor must log in (401)."""


class Forbidden(Exception):
    """The viewer lacks the permission (403); carries no data about the target."""


@dataclass(frozen=True)
class Access:
    """A request's viewer, with its own account resolved to an ``_id`` (None: none)."""

    viewer: Viewer | None
    own_account_id: Any = None


_ANY: Final = object()


def same_id(a: Any, b: Any) -> bool:
    """Whether two account ``_id`` values name one account, as MongoDB compares them.

    Numbers compare by value whatever their type (``7`` and ``Int64(7)``); booleans, strings,
    ObjectIds and the rest only equal values of their own type (``True`` is not ``1``).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def authorize(access: Access, permission: str, *, account_id: Any = _ANY) -> Viewer:
    """The viewer, if it may use ``permission`` (on ``account_id`` when given); else raise.

    ``authorize(access, VIEW_OWN, account_id=x)`` passes for ``VIEW_ALL``, or for ``VIEW_OWN``
    when ``x`` is the viewer's own account.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    viewer = access.viewer
    if viewer is None:
        raise NotAuthenticated
    if permission == VIEW_OWN and account_id is not _ANY:
        if VIEW_ALL in viewer.permissions:
            return viewer
        own = access.own_account_id
        if VIEW_OWN in viewer.permissions and own is not None and same_id(own, account_id):
            return viewer
        raise Forbidden
    if viewer.can(permission):
        return viewer
    raise Forbidden
