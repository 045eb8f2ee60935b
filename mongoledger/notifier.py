"""An example change-stream consumer: print every ledger operation as it commits.

    python -m mongoledger.notifier --uri mongodb://localhost/?replicaSet=rs0 --db shop
    scripts/notifier --db shop --checkpoint receipts --kind transfer

It runs ``Ledger.listen`` with a named checkpoint, so a restarted notifier continues where it
stopped (at least once: the operation in flight at a crash may print twice). Ctrl-C stops it.
It takes the command line's connection options (``--uri``, ``--store``, ``--db``,
``--memory``) with the same messages: a bad value is one line (exit 2), a slow server is
announced, an unreachable one is one line naming the host (exit 1). Without ``--uri``,
``--store`` or their environment variables it follows the server at localhost, not the
embedded store: a store is open in one process at a time, so a notifier holding it would
lock every writer out (on a store it catches up from its checkpoint, then waits alone).
Copy it as the skeleton of a real consumer: replace ``describe`` + ``print`` with the work to do
(send a receipt, update a projection), keyed by ``event.operation_id`` so a re-delivery is
harmless.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from mongoledger._core.events import KINDS
from mongoledger._format import describe_event as describe
from mongoledger._format import one_line
from mongoledger.models import LedgerEvent

__all__ = ["describe", "main", "printer"]


def printer(out: TextIO = sys.stdout) -> Callable[[LedgerEvent], None]:
    """A ``listen`` handler that prints each operation and flushes (for pipes)."""

    def handle(event: LedgerEvent) -> None:
        print(describe(event), file=out, flush=True)

    return handle


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Any = None,
    stderr: TextIO | None = None,
    stop: Any = None,
    ready: Any = None,
) -> int:
    """Run the notifier; returns the exit status (0, 1 an error, 2 a usage error)."""
    from mongoledger.cli._parser import connection_arguments
    from mongoledger.cli._target import add_connection_defaults

    err = stderr if stderr is not None else sys.stderr
    parser = argparse.ArgumentParser(
        prog="notifier", description=__doc__.splitlines()[0] if __doc__ else None
    )
    environ = os.environ if environ is None else environ
    for names, options in connection_arguments(environ):
        parser.add_argument(*names, **options)
    add_connection_defaults(parser, environ)
    parser.add_argument("--checkpoint", default="notifier", help="resume-token name to keep")
    parser.add_argument(
        "--kind", action="append", dest="kinds", choices=KINDS, help="only these kinds"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2

    from pymongo.errors import PyMongoError

    from mongoledger import Ledger, LedgerError
    from mongoledger._text import UsageError
    from mongoledger.cli._connection import connect, validate_db_name
    from mongoledger.cli._target import resolve

    client: Any = None
    try:
        target = resolve(args, fallback="uri")
        validate_db_name(args.db)
        client, database = connect(
            target, args.db, err, appname="mongoledger-notifier", prog="notifier"
        )
        if target.kind == "memory":
            err.write(
                "notifier: listening on a fresh in-memory engine: only this process can write "
                "to it, so nothing will print (use --uri to follow a server)\n"
            )
        elif target.kind == "store":
            err.write(
                f"notifier: listening on {target.describe()}: it prints what was written since "
                "its checkpoint, then holds the store, so no other process can write to it "
                "(use --uri to follow a server)\n"
            )
        ledger = Ledger(database)
        ledger.listen(
            printer(), checkpoint=args.checkpoint, kinds=args.kinds, stop=stop, ready=ready
        )
    except KeyboardInterrupt:
        return 0
    except UsageError as exc:
        err.write(f"usage: notifier --help\nnotifier: error: {exc}\n")
        return 2
    except (LedgerError, PyMongoError) as exc:
        err.write(f"notifier: error: {one_line(exc)}\n")
        return 1
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
