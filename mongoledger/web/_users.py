"""The login users of ``mongoledger serve``: documents, Argon2 password hashes, limits.

A user is one document of the users collection (default ``web_users``)::

    {_id: "alice", password_hash: "$argon2id$...", permissions: ["view own balances"],
     account: {"user_id": 1, "type": "virtual-money"} | <account _id> | null,
     created_at: ISODate(...), password_changed_at: ISODate(...)}

I/O-free: the CLI (``mongoledger users``, sync) and the served app (async) both build and read
documents through these functions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mongoledger.web._permissions import ADJUST, PERMISSIONS, VIEW_ALL, VIEW_OWN, Viewer

__all__ = [
    "DEFAULT_USERS_COLLECTION",
    "MIN_PASSWORD_LENGTH",
    "PERMISSION_NAMES",
    "hash_password",
    "password_stamp",
    "user_document",
    "validate_name",
    "validate_password",
    "verify_password",
    "viewer_of",
]

DEFAULT_USERS_COLLECTION = "web_users"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
# The command line's short names for the permissions.
PERMISSION_NAMES = {"view_own": VIEW_OWN, "view_all": VIEW_ALL, "adjust": ADJUST}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()  # Argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so an unknown name costs the same time.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (validated first)."""
    return _HASHER.hash(validate_password(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; takes as long for an unknown user (``stored_hash=None``)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_stamp(stored_hash: str) -> str:
    """A short digest of the stored hash: sessions carry it, so a new password ends them."""
    return hashlib.sha256(stored_hash.encode()).hexdigest()[:16]


def permissions_from_names(names: Iterable[str]) -> list[str]:
    """``view_own``/``view_all``/``adjust`` (or the full permission texts) → permission texts."""
    out: list[str] = []
    for name in names:
        permission = PERMISSION_NAMES.get(name, name)
        if permission not in PERMISSIONS:
            raise ValueError(
                f"permission {name!r} is not one of {', '.join(sorted(PERMISSION_NAMES))}"
            )
        if permission not in out:
            out.append(permission)
    return out


def user_document(
    name: str, password_hash: str, permissions: Iterable[str], account: Any
) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {
        "_id": validate_name(name),
        "password_hash": password_hash,
        "permissions": permissions_from_names(permissions),
        "account": account,
        "created_at": now,
        "password_changed_at": now,
    }


def viewer_of(document: Mapping[str, Any]) -> Viewer:
    """The :class:`Viewer` a user document stands for (unknown permissions are dropped)."""
    granted = [p for p in document.get("permissions", []) if p in PERMISSIONS]
    return Viewer(str(document["_id"]), document.get("account"), granted)
