"""Connecting a command (``mongoledger``, the notifier) to MongoDB.

Every mistake is one line that names the value: a bad ``--uri`` (syntax, port, options) or
``--db`` is a usage error (exit 2) before anything is sent; a server selection that takes more
than a moment prints ``connecting to HOST...`` on stderr (TTY or not); an unreachable server
ends with one line naming the host and the reason (exit 1). The user's
``serverSelectionTimeoutMS`` is honoured; without it the wait is 10 s, not PyMongo's 30 s.
"""

from __future__ import annotations

import re
import threading
from typing import Any, TextIO

from mongoledger._format import one_line
from mongoledger.cli._values import UsageError
from mongoledger.errors import LedgerError

__all__ = [
    "NOTICE_AFTER",
    "SERVER_SELECTION_MS",
    "CannotConnect",
    "connect_server",
    "hosts_of",
    "redact",
    "validate_db_name",
]

SERVER_SELECTION_MS = 10_000
NOTICE_AFTER = 0.5  # seconds of waiting before "connecting to HOST..." is printed
DEFAULT_URI = "mongodb://localhost:27017"
# MongoDB refuses these in database names (on every platform); a name is under 64 bytes.
_DB_FORBIDDEN = '/\\. "$\x00'
_CREDENTIALS = re.compile(r"^(mongodb(?:\+srv)?://)([^@/]*)@")
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")


class CannotConnect(LedgerError):
    """The server could not be reached, or refused the connection (exit status 1)."""


def redact(uri: str) -> str:
    """The URI with its password hidden, fit for an error message."""
    match = _CREDENTIALS.match(uri)
    if match is None:
        return uri
    user = match.group(2).split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{uri[match.end() :]}"


def hosts_of(uri: str) -> str:
    """The host list of a MongoDB URI (``db0:27017,db1``), for messages."""
    rest = _CREDENTIALS.sub(r"\1", uri).split("://", 1)[-1]
    return re.split(r"[/?]", rest, maxsplit=1)[0] or "localhost"


def validate_db_name(name: Any, *, option: str = "--db") -> str:
    """A database name MongoDB accepts, or a ``UsageError`` naming it."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"{option} {name!r} is not a database name: give a non-empty name")
    bad = sorted({c for c in name if c in _DB_FORBIDDEN})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise UsageError(f"{option} {name!r} is not a database name: it contains {shown}")
    if len(name.encode()) > 63:
        raise UsageError(f"{option} {name!r} is not a database name: longer than 63 bytes")
    return name


def connect_server(
    uri: str | None, db_name: str, err: TextIO, *, appname: str, prog: str = "mongoledger"
) -> tuple[Any, Any]:
    """A connected ``(client, database)``; see the module docstring for the messages."""
    from pymongo import MongoClient, uri_parser
    from pymongo.errors import ConfigurationError, PyMongoError, ServerSelectionTimeoutError

    validate_db_name(db_name)
    uri = uri or DEFAULT_URI
    shown = redact(uri)
    options: dict[str, Any] = {"appname": appname}
    if "serverselectiontimeoutms" not in uri.lower():
        options["serverSelectionTimeoutMS"] = SERVER_SELECTION_MS
    try:
        if not uri.startswith("mongodb+srv://"):  # (an SRV URI is resolved by the client)
            uri_parser.parse_uri(uri, warn=False)  # unknown options are errors, not warnings
        client: Any = MongoClient(uri, **options)
    except (ConfigurationError, ValueError, TypeError) as exc:  # InvalidURI is a ConfigurationError
        raise UsageError(f"--uri {shown!r} is not a usable MongoDB URI: {one_line(exc)}") from None
    host = hosts_of(uri)
    notice = threading.Timer(NOTICE_AFTER, _write, (err, f"{prog}: connecting to {host}..."))
    notice.daemon = True
    notice.start()
    try:
        client.admin.command("ping")
    except ServerSelectionTimeoutError as exc:
        client.close()
        raise CannotConnect(
            f"cannot reach MongoDB at {host} ({_reason(exc, host)}); check --uri or "
            "MONGOLEDGER_URI (mongoledger demo needs no server)"
        ) from None
    except PyMongoError as exc:  # e.g. authentication failed
        client.close()
        raise CannotConnect(f"MongoDB at {host} refused the connection: {one_line(exc)}") from None
    finally:
        notice.cancel()
    return client, client[db_name]


def _write(err: TextIO, text: str) -> None:
    err.write(f"{text}\n")
    err.flush()


def _reason(exc: BaseException, host: str) -> str:
    """The useful part of a server-selection error: what each host answered."""
    text = _TIMEOUTS.sub("", one_line(exc)).split(", Timeout:", 1)[0]
    return text[len(host) + 2 :] if text.startswith(f"{host}: ") else text
