"""The ``mongoledger`` argument parser: global options, commands, help texts with examples."""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mongoledger._core.dates import PERIOD_FORMATS
from mongoledger._core.events import KINDS
from mongoledger._core.holds import STATUSES
from mongoledger._core.reads import REPORT_SORTS
from mongoledger._format import DEFAULT_DATE_FORMAT
from mongoledger.cli._target import add_connection_defaults, default_store

__all__ = ["build_parser", "connection_arguments"]

# The choices the ledger accepts, as it names them.
HOLD_STATUSES = (*STATUSES, "all")
PERIODS = tuple(reversed(PERIOD_FORMATS))  # day, month, year

DESCRIPTION = """\
Operate a mongoledger balance ledger kept in MongoDB: write operations, place and settle
holds, read balances, balance sheets and reports, verify consistency, follow committed
operations.
"""

VALUES_HELP = """\
accounts:
  --account KEY=VALUE (repeatable) names an account by its attribute set;
  --account-id ID (or --account _id=ID) by its _id. An unknown attribute set is
  created by write commands (unless --no-auto-create); reads never create.

values (accounts, --data, --where):
  7, -3          integers (no leading zeros) are ints
  true, false    booleans
  anything else  a string: wallet, 007, 1.5
  null           refused as ambiguous (write str:null or json:null)
  prefixes force a type: str:7  int:7  float:1.5  bool:true  oid:65ab...
  date:2026-11-25T10:00Z  json:"7"  json:{"a":[1,2]}
  an _id of 24 hex digits is an ObjectId; other ids follow the rules above.

amounts:
  integers in the minor unit (cents) by default: 1234 is 12.34 with --decimals 2;
  with --major, decimal text in major units, converted exactly: 12.34 -> 1234
  (more places than --decimals is an error, nothing is rounded).

dates: ISO 8601, UTC unless an offset is given (2026-11-25, 2026-11-25T10:30Z).
  A bare --end date includes that whole day. Shown in UTC with --date-format.

exit status: 0 success; 1 a ledger or database error (one line on stderr), or
  verify found inconsistencies; 2 a usage error.

where the data is: --uri (or MONGOLEDGER_URI) names a MongoDB replica set; otherwise
  the embedded store keeps it on this machine, in --store DIR (or MONGOLEDGER_STORE),
  else in the per-user default directory (created on first use, said once on stderr).
  One process opens a store at a time. --memory keeps nothing.

environment: MONGOLEDGER_URI (--uri), MONGOLEDGER_STORE (--store), MONGOLEDGER_DB (--db).

examples:
  mongoledger --uri mongodb://localhost:27017/?replicaSet=rs0 init
  mongoledger increase --account user_id=7 --account type=wallet 500 --data note=top-up
  mongoledger --major --currency-symbol '$' balance --account user_id=7 --account type=wallet
  mongoledger demo
"""


GLOBAL_HINT = """

The global options (--uri, --store, --db, --memory, --json, --major, the currency and date
formats, the ledger layout) may be given before or after the command; see
mongoledger --help, which also explains the value, amount and date syntax.
"""


def _env(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(name)
    return value if value else default


def connection_arguments(
    environ: Mapping[str, str], store: Path | None = None
) -> list[tuple[tuple[str, ...], Any]]:
    """The connection options (names, ``add_argument`` keywords), shared by ``mongoledger``
    and the notifier; ``store``: the default store, if already known. ``--uri`` and
    ``--store`` default to nothing: the environment's values are recorded by
    ``add_connection_defaults`` and ranked by ``_target.resolve``."""
    if store is None:
        store = default_store(environ)
    return [
        (
            ("--uri",),
            {
                "default": None,
                "help": "a MongoDB replica set's connection string (env MONGOLEDGER_URI; "
                "serverSelectionTimeoutMS=N bounds the wait, 10 s by default)",
            },
        ),
        (
            ("--store",),
            {
                "default": None,
                "metavar": "DIR",
                "help": "keep the data in the embedded store in DIR (env MONGOLEDGER_STORE; "
                f"default {store}); used when no URI is given",
            },
        ),
        (
            ("--db",),
            {
                "default": _env(environ, "MONGOLEDGER_DB", "ledger"),
                "help": "database name (env MONGOLEDGER_DB; default ledger)",
            },
        ),
        (
            ("--memory",),
            {
                "action": "store_true",
                "default": False,
                "help": "use a fresh in-memory engine, empty at every start (keeps nothing)",
            },
        ),
    ]


Connection = list[tuple[tuple[str, ...], Any]]  # connection_arguments()


def _add_global_options(
    parser: argparse.ArgumentParser, *, connection: Connection, suppress: bool
) -> None:
    """The global options (``connection``: the connection options, built once per parser);
    on subcommands they default to SUPPRESS so either place works."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    class _Group:
        """An argument group; on subcommands the options are accepted but not listed."""

        def __init__(self, title: str) -> None:
            self._group = parser if suppress else parser.add_argument_group(title)

        def add_argument(self, *names: str, **kwargs: Any) -> None:
            if suppress:
                kwargs["help"] = argparse.SUPPRESS
            self._group.add_argument(*names, **kwargs)

    conn = _Group("connection (default: the embedded store, see --store)")
    for names, options in connection:
        conn.add_argument(*names, **{**options, "default": default(options["default"])})

    layout = _Group("ledger layout (match the application's Ledger options)")
    layout.add_argument("--accounts-collection", default=default("accounts"), metavar="NAME")
    layout.add_argument(
        "--transactions-collection", default=default("transactions"), metavar="NAME"
    )
    layout.add_argument(
        "--idempotency-collection", default=default("ledger_idempotency"), metavar="NAME"
    )
    layout.add_argument("--holds-collection", default=default("holds"), metavar="NAME")
    layout.add_argument(
        "--currency-field",
        default=default(None),
        metavar="FIELD",
        help="accounts carry a currency in FIELD; operations never mix two (currency_field)",
    )
    layout.add_argument("--balance-field", default=default("balance"), metavar="FIELD")
    layout.add_argument(
        "--no-balance-field",
        dest="balance_field",
        action="store_const",
        const=None,
        default=default("balance"),
        help="accounts cache no balance (balance_field=None): balances are summed",
    )
    layout.add_argument("--account-link-field", default=default("account_id"), metavar="FIELD")
    layout.add_argument(
        "--extra-account-link-field", default=default("extra_account_id"), metavar="FIELD"
    )
    layout.add_argument(
        "--no-extra-account-link",
        dest="extra_account_link_field",
        action="store_const",
        const=None,
        default=default("extra_account_id"),
        help="legs do not name their counterpart (extra_account_link_field=None)",
    )
    layout.add_argument("--amount-field", default=default("amount"), metavar="FIELD")
    layout.add_argument("--date-field", default=default("date"), metavar="FIELD")
    layout.add_argument(
        "--data-field",
        default=default(None),
        metavar="FIELD",
        help="extra data is nested under FIELD (default: top-level fields)",
    )
    layout.add_argument(
        "--no-auto-create",
        dest="auto_create",
        action="store_false",
        default=default(True),
        help="write commands refuse unknown accounts instead of creating them",
    )
    layout.add_argument(
        "--require-transactions",
        action="store_true",
        default=default(False),
        help="refuse to write where the deployment lacks multi-document transactions",
    )
    layout.add_argument(
        "--sharded-accounts",
        action="store_true",
        default=default(False),
        help="accounts sharded on _id: no unique attributes_key index; an account created "
        "from attributes gets their digest as its _id",
    )

    fmt = _Group("output")
    fmt.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document (amounts as integers in the minor unit)",
    )
    fmt.add_argument(
        "--major",
        action="store_true",
        default=default(False),
        help="amounts on the command line are in major units (12.34), not minor units (1234)",
    )
    fmt.add_argument("--currency-symbol", default=default(None), metavar="SYMBOL")
    fmt.add_argument("--symbol-position", choices=("before", "after"), default=default("before"))
    fmt.add_argument("--thousands-sep", default=default(","), metavar="SEP")
    fmt.add_argument("--decimal-sep", default=default("."), metavar="SEP")
    fmt.add_argument(
        "--decimals",
        type=int,
        default=default(2),
        metavar="N",
        help="decimal places of the minor unit (2: 1234 is 12.34; 0: whole units)",
    )
    fmt.add_argument(
        "--date-format",
        default=default(DEFAULT_DATE_FORMAT),
        metavar="STRFTIME",
        help="strftime format for dates (UTC)",
    )
    fmt.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=default(True),
        help="never show a spinner (it only appears when stderr is a terminal)",
    )


def _add_account(parser: argparse.ArgumentParser, name: str = "account", what: str = "") -> None:
    group = parser.add_argument_group(f"{name} account{what}")
    group.add_argument(
        f"--{name}",
        dest=name,
        action="append",
        metavar="KEY=VALUE",
        help="an identifying attribute (repeat for each); _id=ID names the account by id",
    )
    group.add_argument(f"--{name}-id", dest=f"{name}_id", metavar="ID", help="the account's _id")


def _add_collections(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--collection", action="append", metavar="NAME", help="only this collection (repeatable)"
    )


def _add_write_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        action="append",
        metavar="KEY=VALUE",
        help="extra data stored on the transactions (repeatable)",
    )
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a retried command with the same key writes nothing and prints the first result",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    example: str,
    connection: Connection,
    description: str = "",
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description or summary, 88),
        epilog="example:\n" + example + GLOBAL_HINT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_global_options(parser, connection=connection, suppress=True)
    return parser


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The ``mongoledger`` parser; ``environ`` supplies the MONGOLEDGER_* defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="mongoledger",
        description=DESCRIPTION,
        epilog=VALUES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --account must never be read as --accounts-collection
    )
    store = default_store(environ)  # once: every subcommand takes the connection options
    connection = connection_arguments(environ, store)
    _add_global_options(parser, connection=connection, suppress=False)
    add_connection_defaults(parser, environ, store)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _command(
        sub,
        "init",
        "create the indexes the ledger needs (idempotent)",
        "  mongoledger init --uri mongodb://db0/?replicaSet=rs0 --db payments",
        connection,
    )

    p = _command(
        sub,
        "open",
        "get or create an account, optionally with an overdraft floor",
        "  mongoledger open --account user_id=7 --account type=wallet --min-balance 0",
        connection,
    )
    _add_account(p)
    p.add_argument(
        "--min-balance",
        metavar="AMOUNT",
        help="refuse operations that would take the balance below AMOUNT (e.g. 0)",
    )

    for name, summary, example in (
        (
            "increase",
            "move AMOUNT into an account (a negative AMOUNT moves it out)",
            "  mongoledger increase --account user_id=7 --account type=wallet 500 "
            "--data reason=bonus\n"
            "  mongoledger --major increase --account-id 65ab12cd34ef56ab78cd90ef 12.50",
        ),
        (
            "decrease",
            "move AMOUNT out of an account",
            "  mongoledger decrease --account user_id=7 --account type=wallet 250 "
            "--idempotency-key order-1187",
        ),
    ):
        p = _command(sub, name, summary, example, connection)
        _add_account(p)
        p.add_argument("amount", metavar="AMOUNT")
        _add_write_options(p)

    p = _command(
        sub,
        "transfer",
        "move AMOUNT (> 0) from one account to another, atomically",
        "  mongoledger transfer --from user_id=1 --from type=wallet "
        "--to user_id=2 --to type=wallet 1500 --data note=rent",
        connection,
    )
    _add_account(p, "from", " (debited)")
    _add_account(p, "to", " (credited)")
    p.add_argument("amount", metavar="AMOUNT")
    _add_write_options(p)

    p = _command(
        sub,
        "post",
        "post a balanced multi-leg operation (amounts must sum to zero)",
        "  mongoledger post --leg -1000 user_id=3 type=wallet \\\n"
        "                   --leg 900 user_id=3 type=purchases \\\n"
        "                   --leg 100 user_id=1 type=commission --data order=A-17",
        connection,
        description="Post a balanced multi-leg operation: every --leg is AMOUNT followed by the "
        "account's KEY=VALUE attributes (or _id=ID); the amounts must sum to zero.",
    )
    p.add_argument(
        "--leg",
        action="append",
        nargs="+",
        required=True,
        metavar=("AMOUNT", "KEY=VALUE"),
        help="one leg: a signed AMOUNT, then the account (repeat --leg for each leg)",
    )
    _add_write_options(p)

    p = _command(
        sub,
        "revert",
        "compensate an operation (never deletes); a leg reverts its whole operation",
        "  mongoledger revert 65ab12cd34ef56ab78cd90ef --data reason=refund",
        connection,
    )
    p.add_argument("transaction_id", metavar="TRANSACTION_ID", help="24 hex digits")
    _add_write_options(p)

    p = _command(
        sub,
        "hold",
        "reserve AMOUNT of an account's available balance for another (capture or void later)",
        "  mongoledger hold --from user_id=7 --from type=wallet --to shop_id=3 2500 "
        "--expires-in 7d --data order=A-17\n"
        "  mongoledger --json hold --from-id 65ab12cd34ef56ab78cd90ef --to-id shop-3 990",
        connection,
        description="Reserve AMOUNT (> 0) of the source account's available balance (its "
        "balance minus its pending holds) for the target. Nothing moves yet: capture moves "
        "all or part of it, void releases it, and past its expiry expire releases it.",
    )
    _add_account(p, "from", " (reserved from)")
    _add_account(p, "to", " (reserved for)")
    p.add_argument("amount", metavar="AMOUNT")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-at", metavar="DATE", help="the hold expires at DATE (UTC)")
    expiry.add_argument(
        "--expires-in", metavar="DURATION", help="the hold expires after DURATION (30m, 12h, 7d)"
    )
    _add_write_options(p)

    p = _command(
        sub,
        "capture",
        "move all (or --amount) of a pending hold; the rest of it is released",
        "  mongoledger capture 65ab12cd34ef56ab78cd90ef\n"
        "  mongoledger capture 65ab12cd34ef56ab78cd90ef --amount 1990 --data shipment=S-9",
        connection,
    )
    p.add_argument("hold_id", metavar="HOLD_ID", help="24 hex digits")
    p.add_argument("--amount", metavar="AMOUNT", help="at most the held amount (default: all)")
    _add_write_options(p)

    p = _command(
        sub,
        "void",
        "release a pending hold entirely",
        "  mongoledger void 65ab12cd34ef56ab78cd90ef --data reason=cancelled",
        connection,
    )
    p.add_argument("hold_id", metavar="HOLD_ID", help="24 hex digits")
    p.add_argument(
        "--data",
        action="append",
        metavar="KEY=VALUE",
        help="kept on the hold as its void_data (repeatable)",
    )

    p = _command(
        sub,
        "holds",
        "list holds, newest first: of an account (as source or target) or of all accounts",
        "  mongoledger holds --account user_id=7 --account type=wallet\n"
        "  mongoledger holds --status all --limit 20",
        connection,
    )
    _add_account(p, what=" (optional; default: all accounts)")
    p.add_argument("--status", choices=HOLD_STATUSES, default="pending", help="default pending")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="default 50; 0: all")

    p = _command(
        sub,
        "expire",
        "release every pending hold past its expiry (once, or --every SECONDS until Ctrl-C)",
        "  mongoledger expire\n  mongoledger expire --every 30",
        connection,
    )
    p.add_argument("--now", metavar="DATE", help="release holds expiring up to DATE (default: now)")
    p.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep running: release expired holds every SECONDS (several may run at once)",
    )

    p = _command(
        sub,
        "balance",
        "show an account's balance",
        "  mongoledger balance --account user_id=7 --account type=wallet\n"
        "  mongoledger balance --account-id 65ab12cd34ef56ab78cd90ef --at 2026-10-31",
        connection,
    )
    _add_account(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--at", metavar="DATE", help="the balance after everything up to DATE")
    how.add_argument(
        "--calculated",
        action="store_true",
        help="sum the transactions on the server instead of reading the cached balance",
    )

    p = _command(
        sub,
        "history",
        "the balance sheet: an account's transactions, newest first, with running balance",
        "  mongoledger history --account user_id=7 --account type=wallet --start 2026-11-01 "
        "--limit 20\n"
        "  mongoledger history --account user_id=7 --account type=wallet --limit 20 "
        "--before-seq 41",
        connection,
    )
    _add_account(p)
    p.add_argument("--start", metavar="DATE", help="from DATE (inclusive)")
    p.add_argument("--end", metavar="DATE", help="up to DATE (inclusive)")
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="rows per page (default 50; 0: all)"
    )
    p.add_argument(
        "--before-seq",
        type=int,
        metavar="SEQ",
        help="next page: rows older than SEQ (the last row's seq)",
    )

    p = _command(
        sub,
        "report",
        "every account with its balance (the all-balances report)",
        "  mongoledger report --sort -balance --limit 20 --where type=wallet",
        connection,
    )
    p.add_argument("--sort", choices=REPORT_SORTS, default="-balance", help="default %(default)s")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N accounts")
    p.add_argument("--skip", type=int, default=0, metavar="N", help="skip the first N accounts")
    p.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="only accounts with this attribute value (repeatable)",
    )
    p.add_argument("--currency", metavar="CODE", help="only accounts in CODE (--currency-field)")

    p = _command(
        sub,
        "stats",
        "credit and debit totals per day, month or year (all accounts or one)",
        "  mongoledger stats --period day --start 2026-11-01\n"
        "  mongoledger stats --period month --account user_id=7 --account type=wallet",
        connection,
    )
    p.add_argument("--period", choices=PERIODS, default="month")
    _add_account(p, what=" (optional; default: all accounts)")
    p.add_argument("--start", metavar="DATE", help="from DATE (inclusive)")
    p.add_argument("--end", metavar="DATE", help="up to DATE (inclusive)")
    p.add_argument(
        "--currency", metavar="CODE", help="only transactions in CODE (--currency-field)"
    )

    p = _command(
        sub,
        "verify",
        "check balances, running balances, floors, operation legs, revert links and holds; "
        "exit 1 on a discrepancy",
        "  mongoledger verify\n  mongoledger verify --repair",
        connection,
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="rebuild what drifted from the source of truth: cached balances and running "
        "balances from the transactions, held sums from the pending holds (floors and broken "
        "operations are reported, never changed)",
    )

    p = _command(
        sub,
        "watch",
        "print committed operations as JSON lines, one per operation (needs change streams)",
        "  mongoledger watch --kind transfer | jq .transactions[].amount\n"
        '  mongoledger watch --resume-after \'{"_data": "8263..."}\' --limit 100',
        connection,
    )
    p.add_argument(
        "--account",
        dest="account",
        action="append",
        metavar="KEY=VALUE",
        help="only operations touching this account (its attributes; repeatable)",
    )
    p.add_argument(
        "--account-id",
        dest="account_ids",
        action="append",
        metavar="ID",
        help="only operations touching this account _id (repeatable)",
    )
    p.add_argument("--kind", action="append", choices=KINDS, help="only these kinds (repeatable)")
    p.add_argument(
        "--resume-after",
        metavar="TOKEN",
        help="continue after this resume_token (as printed in an event)",
    )
    p.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N operations")

    p = _command(
        sub,
        "export",
        "write the database's collections as files mongorestore (or mongoimport) reads",
        "  mongoledger export backup/\n"
        "  mongorestore --uri 'mongodb://db0/?replicaSet=rs0' backup/   # into a replica set\n"
        "  mongoledger --store ~/ledger export --format json backup-json/",
        connection,
        description="Write every collection of --db (indexes included) under DIR/<db>/ in "
        "mongodump's layout: <collection>.bson and <collection>.metadata.json, which "
        "mongorestore reads; with --format json, <collection>.json (canonical extended JSON, "
        "one document per line) for mongoimport. The way to move a store into a replica set.",
    )
    p.add_argument("directory", metavar="DIR", help="a new or empty directory")
    p.add_argument("--format", choices=("bson", "json"), default="bson", help="default bson")
    _add_collections(p)

    p = _command(
        sub,
        "import",
        "load an export (or mongodump/mongoexport output) into the database",
        "  mongoledger import backup/ --drop\n"
        "  mongoledger --uri 'mongodb://db0/?replicaSet=rs0' --db shop import backup/",
        connection,
        description="Insert the collections exported under DIR (DIR/<db>/ or the folder itself; "
        ".bson or extended JSON files) into --db, creating their indexes first. Collections "
        "that already hold documents are refused (nothing is written) unless --drop replaces "
        "them.",
    )
    p.add_argument("directory", metavar="DIR", help="what export (or mongodump) wrote")
    p.add_argument("--drop", action="store_true", help="drop each collection before loading it")
    _add_collections(p)

    p = _command(
        sub,
        "serve",
        "serve the balance pages and JSON API (mongoledger[web]) with a login",
        "  mongoledger users add admin --permission view_all --permission adjust\n"
        "  mongoledger serve --port 8000\n"
        "  mongoledger --memory serve --demo      # a throwaway demo with printed logins",
        connection,
        description="Serve the balance pages and the JSON API over HTTP with uvicorn, on the "
        "same database the other commands use. Visitors log in as users of the users "
        "collection (mongoledger users); anonymous visitors get the login page. Sessions are "
        "signed with MONGOLEDGER_SECRET_KEY (default: a random key per start, so a restart "
        "logs everyone out). Needs the web extra: pip install 'mongoledger[web]'.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="seed the demo scenario (the database must be empty) and print demo logins",
    )
    p.add_argument(
        "--users-collection", default="web_users", metavar="NAME", help="default %(default)s"
    )
    p.add_argument("--title", default="Balances", help="the pages' title (default %(default)s)")

    users = _command(
        sub,
        "users",
        "manage the login users of mongoledger serve (add, remove, list, passwd)",
        "  mongoledger users add alice --permission view_own --account user_id=1 "
        "--account type=wallet\n"
        "  printf '%s\\n' \"$PASSWORD\" | mongoledger users add admin --admin --password-stdin\n"
        "  mongoledger users list\n  mongoledger users passwd alice\n"
        "  mongoledger users remove alice",
        connection,
        description="Manage the users who can log in to mongoledger serve. Passwords are read "
        "from a prompt (or one line of standard input with --password-stdin), never from the "
        "command line, and stored as Argon2id hashes. Permissions: view_own (the user's own "
        "account), view_all (every account and the reports), adjust (credit, debit, transfer, "
        "revert). Changing a password or removing a user ends their sessions.",
    )
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    for action, summary in (
        ("add", "add a user (asks for the password)"),
        ("remove", "remove a user"),
        ("list", "list the users"),
        ("passwd", "set a user's password (asks for it)"),
    ):
        q = users_sub.add_parser(action, help=summary, description=summary, allow_abbrev=False)
        _add_global_options(q, connection=connection, suppress=True)
        q.add_argument(
            "--users-collection", default="web_users", metavar="NAME", help="default %(default)s"
        )
        if action != "list":
            q.add_argument("name", metavar="NAME", help="the user name")
        if action in ("add", "passwd"):
            q.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from one line of standard input instead of a prompt",
            )
        if action == "add":
            q.add_argument(
                "--permission",
                action="append",
                choices=("view_own", "view_all", "adjust"),
                help="a permission (repeatable)",
            )
            q.add_argument(
                "--admin", action="store_true", help="all permissions: view_own, view_all, adjust"
            )
            _add_account(q, what=" (the user's own account; optional)")

    _command(
        sub,
        "demo",
        "run a realistic scenario on the in-memory engine (no server needed)",
        "  mongoledger demo\n  mongoledger --currency-symbol ' EUR' --symbol-position after "
        "--thousands-sep . --decimal-sep , demo",
        connection,
        description="Run a realistic scenario on the in-memory engine, no server needed: users "
        "with virtual-money, payment-gateway and purchases accounts; top-ups, purchases, a "
        "refund, a refused overdraft, an idempotent retry, a commission split, a change-stream "
        "consumer, the zero-sum check, a balance sheet and the all-balances report. Amounts "
        "are shown in dollars unless --currency-symbol is given.",
    )

    from mongoledger.cli import _serve_db

    _serve_db.register(sub, _command, connection)
    return parser
