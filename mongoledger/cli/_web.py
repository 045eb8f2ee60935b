"""``mongoledger serve`` and ``mongoledger users``: the web app and its login users.

Both need the web extra (``pip install 'mongoledger[web]'``); it is imported only when one of
these commands runs, so the rest of the CLI works without it.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import io
import ipaddress
import os
import secrets
import socket
import sys
from typing import Any

from mongoledger._format import format_value, render_table
from mongoledger.cli._context import Context, async_database, ledger_for
from mongoledger.cli._values import UsageError, parse_account
from mongoledger.errors import LedgerError

__all__ = ["cmd_serve", "cmd_users"]

DEMO_USERS = (
    ("admin", ("view_own", "view_all", "adjust"), None, "every account; adjusts balances"),
    ("alice", ("view_own",), {"user_id": 1, "type": "virtual-money"}, "her own wallet"),
)


class CommandFailed(LedgerError):
    """A web command could not do what was asked (exit status 1)."""


def _require_web() -> None:
    missing = []
    for module in ("fastapi", "jinja2", "uvicorn", "argon2", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise CommandFailed(
            f"this command needs the web extra (missing: {', '.join(missing)}): "
            "pip install 'mongoledger[web]'"
        )


def _read_password(args: argparse.Namespace, *, confirm: bool) -> str:
    from mongoledger.web._users import validate_password

    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: standard input is empty")
        password = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to ask for the password on; give it on standard input with "
                "--password-stdin (never on the command line)"
            )
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password (again): ") != password:
            raise UsageError("the two passwords differ; nothing was changed")
    try:
        return validate_password(password)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _short_permissions(permissions: list[str]) -> str:
    from mongoledger.web._users import PERMISSION_NAMES

    names = {text: short for short, text in PERMISSION_NAMES.items()}
    return ",".join(names.get(p, p) for p in permissions) or "-"


def cmd_users(args: argparse.Namespace, ctx: Context) -> int:
    _require_web()
    from pymongo.errors import DuplicateKeyError

    from mongoledger.web._users import (
        PERMISSION_NAMES,
        hash_password,
        user_document,
        validate_name,
    )

    users = ctx.ledger.database[args.users_collection]
    action = args.users_command
    if action == "list":
        rows = list(users.find({}).sort("_id", 1))
        if ctx.json:
            ctx.emit(
                [
                    {
                        "name": u["_id"],
                        "permissions": u.get("permissions", []),
                        "account": u.get("account"),
                        "created_at": u.get("created_at"),
                    }
                    for u in rows
                ]
            )
        else:
            ctx.print(
                render_table(
                    ["user", "permissions", "account", "created"],
                    [
                        [
                            str(u["_id"]),
                            _short_permissions(u.get("permissions", [])),
                            "" if u.get("account") is None else format_value(u["account"]),
                            ctx.date(u.get("created_at")),
                        ]
                        for u in rows
                    ],
                )
            )
        return 0
    try:
        name = validate_name(args.name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if action == "remove":
        if users.delete_one({"_id": name}).deleted_count != 1:
            raise CommandFailed(f"no user {name!r}")
        ctx.print(f"removed user {name!r}")
        return 0
    if action == "passwd":
        if users.find_one({"_id": name}, {"_id": 1}) is None:
            raise CommandFailed(f"no user {name!r}; add it with mongoledger users add {name}")
        from datetime import datetime, timezone

        password_hash = hash_password(_read_password(args, confirm=True))
        users.update_one(
            {"_id": name},
            {
                "$set": {
                    "password_hash": password_hash,
                    "password_changed_at": datetime.now(timezone.utc),
                }
            },
        )
        ctx.print(f"password of {name!r} changed; its sessions have ended")
        return 0
    # add
    granted = list(PERMISSION_NAMES) if args.admin else list(args.permission or [])
    if not granted:
        raise UsageError(
            "give the user's permissions: --permission view_own|view_all|adjust, or --admin"
        )
    account = None
    if args.account or args.account_id:
        account = parse_account(args.account, args.account_id)
    if users.find_one({"_id": name}, {"_id": 1}) is not None:
        raise CommandFailed(f"user {name!r} exists; change its password with users passwd")
    document = user_document(
        name, hash_password(_read_password(args, confirm=True)), granted, account
    )
    try:
        users.insert_one(document)
    except DuplicateKeyError:
        raise CommandFailed(f"user {name!r} exists") from None
    ctx.print(f"added user {name!r} ({_short_permissions(document['permissions'])})")
    return 0


def _seed_demo(ctx: Context, users: Any) -> list[tuple[str, str, str]]:
    """Run the demo scenario on the served database; add its users; return their logins."""
    from mongoledger.demo import run_demo
    from mongoledger.web._users import hash_password, user_document

    ledger = ctx.ledger
    existing = ledger.transactions.count_documents({}) + ledger.accounts.count_documents({})
    if existing:
        raise CommandFailed(
            "--demo seeds an empty database, and this one has data; use --memory or another --db"
        )
    if (
        run_demo(
            out=io.StringIO(),
            money=ctx.money,
            date_format=ctx.date_format,
            use_watch=False,
            ledger=ledger,
        )
        != 0
    ):
        raise CommandFailed("the demo scenario failed its own checks")  # pragma: no cover
    logins = []
    for name, permissions, account, what in DEMO_USERS:
        password = secrets.token_urlsafe(12)
        users.replace_one(
            {"_id": name},
            user_document(name, hash_password(password), permissions, account),
            upsert=True,
        )
        logins.append((name, password, what))
    return logins


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    _require_web()
    import uvicorn

    from mongoledger._async.ledger import AsyncLedger
    from mongoledger.web._serve import served_app

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number (0-65535)")
    logins = _seed_demo(ctx, ctx.ledger.database[args.users_collection]) if args.demo else []
    database = async_database(args, ctx)
    ledger = ledger_for(args, database, AsyncLedger)
    key = os.environ.get("MONGOLEDGER_SECRET_KEY")
    if key is not None and len(key) < 16:
        raise UsageError("MONGOLEDGER_SECRET_KEY must have at least 16 characters")
    app = served_app(
        ledger,
        database[args.users_collection],
        secret_key=key.encode() if key else secrets.token_bytes(32),
        money=ctx.money,
        date_format=ctx.date_format,
        title=args.title,
    )
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        sys.stderr.write(
            f"mongoledger serve: warning: listening on {args.host} over plain HTTP; put it "
            "behind an HTTPS proxy so passwords and session cookies are encrypted\n"
        )
    ctx.print(f"mongoledger serve: http://{host}:{port}/ (Ctrl-C stops)")
    for name, password, what in logins:
        ctx.print(f"demo login: {name} / {password} ({what})")
    ctx.out.flush()
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises it: a normal stop here.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return 0
