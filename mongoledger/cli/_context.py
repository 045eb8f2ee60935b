"""What every command shares: the :class:`Context` it runs with (the ledger, the output and
its formats), and how a ledger is built with the command line's layout options."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from mongoledger._format import CurrencyFormat, format_date, to_jsonable
from mongoledger._sync.ledger import Ledger
from mongoledger._text import UsageError
from mongoledger.cli._progress import progress
from mongoledger.errors import LedgerError

__all__ = ["Context", "async_database", "ledger_for"]


@dataclass
class Context:
    """What a command needs besides its arguments."""

    ledger: Ledger
    money: CurrencyFormat
    date_format: str
    json: bool
    show_progress: bool
    major: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    client: Any = None  # the connection main() opened (None when given a database)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def emit(self, document: Any) -> None:
        """One JSON document on stdout."""
        self.print(json.dumps(to_jsonable(document), indent=2, ensure_ascii=False))

    def emit_line(self, document: Any) -> None:
        """One JSON document on one line of stdout, flushed (JSON lines: ``watch``, ``expire
        --every``, read by a pipe as they come)."""
        self.print(json.dumps(to_jsonable(document), ensure_ascii=False))
        self.out.flush()

    def amount(self, text: str) -> int:
        try:
            return self.money.parse(text, major=self.major)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def date(self, value: Any) -> str:
        return format_date(value, self.date_format)

    def progress(self, label: str) -> Any:
        return progress(label, enabled=self.show_progress and not self.json)


def async_database(args: argparse.Namespace, ctx: Context) -> Any:
    """The async twin of the database the command connected to (for ``mongoledger serve``).

    The in-process engine (``--memory``, the embedded store) is shared through its server, so
    both twins see one set of data; a MongoDB URI gets a ``pymongo.AsyncMongoClient``.
    """
    from mongoledger.memory import AsyncMemoryClient, MemoryServer

    database = ctx.ledger.database
    server = getattr(getattr(database, "client", None), "server", None)
    if isinstance(server, MemoryServer):
        return AsyncMemoryClient(server=server)[database.name]
    from mongoledger.cli._connection import connect_async
    from mongoledger.cli._target import resolve

    return connect_async(resolve(args), appname="mongoledger-serve")[database.name]


def ledger_for(args: argparse.Namespace, database: Any, cls: Any) -> Any:
    """A ledger of class ``cls`` (``Ledger`` or ``AsyncLedger``) with the command's layout."""
    try:
        return cls(
            database,
            accounts_collection=args.accounts_collection,
            transactions_collection=args.transactions_collection,
            balance_field=args.balance_field,
            account_link_field=args.account_link_field,
            extra_account_link_field=args.extra_account_link_field,
            idempotency_collection=args.idempotency_collection,
            holds_collection=args.holds_collection,
            currency_field=args.currency_field,
            amount_field=args.amount_field,
            date_field=args.date_field,
            data_field=args.data_field,
            auto_create_account=args.auto_create,
            require_transactions=args.require_transactions,
            sharded_accounts=args.sharded_accounts,
        )
    except ValueError as exc:
        if isinstance(exc, LedgerError):
            raise
        raise UsageError(str(exc)) from None
