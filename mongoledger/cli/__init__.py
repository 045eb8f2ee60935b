"""The ``mongoledger`` command: operate a ledger from a shell (``mongoledger --help``).

``main(argv)`` runs one command in-process and returns its exit status: 0 success, 1 a ledger
or database error (one line on stderr, no traceback), 2 a usage error (130 on Ctrl-C, 141
when the reader of stdout went away). ``database=`` runs the
command against a database object you already hold (several commands can share one in-memory
engine)::

    from mongoledger.cli import main
    from mongoledger.memory import MemoryClient

    db = MemoryClient()["ledger"]
    main(["increase", "--account", "user_id=7", "500"], database=db)
    main(["--json", "balance", "--account", "user_id=7"], database=db)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from mongoledger._format import CurrencyFormat, one_line
from mongoledger._sync.ledger import Ledger
from mongoledger._text import UsageError
from mongoledger.cli._commands import COMMANDS
from mongoledger.cli._connection import connect, validate_db_name
from mongoledger.cli._context import Context, ledger_for
from mongoledger.cli._parser import build_parser
from mongoledger.cli._target import resolve
from mongoledger.errors import LedgerError

__all__ = ["build_parser", "main", "run"]


def main(
    argv: Sequence[str] | None = None,
    *,
    database: Any = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``mongoledger`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``database`` (a PyMongo-compatible database) replaces ``--uri``/``--store``/``--db``/
    ``--memory`` (where the data goes otherwise: ``_target``);
    ``environ`` replaces ``os.environ`` for the MONGOLEDGER_* defaults.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser(environ)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        money = CurrencyFormat(
            symbol=_symbol(args),
            position=args.symbol_position,
            thousands_sep=args.thousands_sep,
            decimal_sep=args.decimal_sep,
            decimals=args.decimals,
        )
        _check_date_format(args.date_format)
    except ValueError as exc:  # a global option: reported as the command's own, not a subcommand's
        return _usage_error(parser, None, str(exc), err)
    client = None
    log_printer = _LogPrinter(err)
    logger = logging.getLogger("mongoledger")
    logger.addHandler(log_printer)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(err)
        try:
            if args.command in ("demo", "serve-db"):
                ledger: Any = None
            else:
                if database is None:
                    client, database = _connect(args, err)
                ledger = _ledger(args, database)
            ctx = Context(
                ledger=ledger,
                money=money,
                date_format=args.date_format,
                json=args.json,
                show_progress=args.progress,
                major=args.major,
                out=out,
                client=client,
            )
            return COMMANDS[args.command](args, ctx)
        except UsageError as exc:
            return _usage_error(parser, args, str(exc), err)
        except LedgerError as exc:
            err.write(f"mongoledger: error: {exc}\n")
            return 1
        except BrokenPipeError:  # the reader left (mongoledger watch | head -1): stop quietly
            if out is sys.stdout:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes
            return 141
        except KeyboardInterrupt:
            err.write("mongoledger: interrupted\n")
            return 130
        except Exception as exc:
            from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

            if isinstance(exc, ServerSelectionTimeoutError):
                reason = one_line(exc).split(", Timeout:", 1)[0]
                err.write(
                    f"mongoledger: error: cannot reach MongoDB ({reason}); check --uri or "
                    "MONGOLEDGER_URI (without a URI, commands use the embedded store)\n"
                )
                return 1
            from mongoledger.memory import StoreError

            if isinstance(exc, StoreError):  # its message names the store and what to do
                err.write(f"mongoledger: error: {one_line(exc)}\n")
                return 1
            if isinstance(exc, PyMongoError):
                err.write(f"mongoledger: database error: {one_line(exc)}\n")
                return 1
            raise
        finally:
            logger.removeHandler(log_printer)
            with contextlib.suppress(BrokenPipeError):
                out.flush()
            if client is not None:
                client.close()


def run() -> None:
    """The ``mongoledger`` console script: :func:`main`, then exit.

    The engine's documents (an embedded store holds every one in memory) are reference
    cycles the interpreter would otherwise collect one by one as it exits: frozen, they are
    left to the operating system, which frees the whole process at once."""
    code = main()
    gc.freeze()
    sys.exit(code)


def _symbol(args: argparse.Namespace) -> str:
    if args.currency_symbol is not None:
        return str(args.currency_symbol)
    return "$" if args.command == "demo" or getattr(args, "demo", False) else ""


def _connect(args: argparse.Namespace, err: TextIO) -> tuple[Any, Any]:
    """The one connection path of every command (``_target`` chooses, ``_connection``
    connects): bad names and URIs are usage errors naming the value, a slow server is
    announced, an unreachable one is one line, a store that cannot be opened says why and
    what to do."""
    validate_db_name(args.db)
    target = resolve(args)
    if target.kind == "memory" and args.command == "watch":
        raise UsageError(
            "--memory watch would wait forever: a fresh in-memory engine has no other "
            "writer. Watch a server (--uri), or see events in mongoledger demo"
        )
    return connect(target, args.db, err, appname="mongoledger-cli")


def _check_date_format(fmt: str) -> None:
    from datetime import datetime

    try:
        datetime(2026, 11, 25).strftime(fmt)
    except ValueError as exc:
        raise ValueError(f"--date-format {fmt!r} is not a strftime format: {exc}") from None


def _ledger(args: argparse.Namespace, database: Any) -> Ledger:
    ledger: Ledger = ledger_for(args, database, Ledger)
    return ledger


def _usage_error(
    parser: argparse.ArgumentParser, args: argparse.Namespace | None, message: str, err: TextIO
) -> int:
    command = getattr(args, "command", None)
    prog = f"{parser.prog} {command}" if command else parser.prog
    err.write(f"usage: {prog} --help\n{prog}: error: {message}\n")
    return 2


class _LogPrinter(logging.Handler):
    """The ledger's log warnings (an index rebuilt by init, a build before a first write) as
    one line on stderr each, like the command's other warnings."""

    def __init__(self, err: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.err = err

    def emit(self, record: logging.LogRecord) -> None:
        text = one_line(Exception(record.getMessage()))
        self.err.write(f"mongoledger: {record.levelname.lower()}: {text}\n")


def _warning_printer(err: TextIO) -> Any:
    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        err.write(f"mongoledger: warning: {one_line(Exception(str(message)))}\n")

    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
