"""An example change-stream consumer: print every ledger operation as it commits.

    python -m mongoledger.notifier --uri mongodb://localhost/?replicaSet=rs0 --db shop
    scripts/notifier --db shop --checkpoint receipts --kind transfer

It runs ``Ledger.listen`` with a named checkpoint, so a restarted notifier continues where it
stopped (at least once: the operation in flight at a crash may print twice). Ctrl-C stops it.
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

from mongoledger.models import LedgerEvent

__all__ = ["describe", "main", "printer"]


def describe(
    event: LedgerEvent,
    *,
    name: Callable[[Any], str] = str,
    amount: Callable[[int], str] = "{:+d}".format,
    details: bool = True,
) -> str:
    """One line for an operation: what, and every leg (for a hold, void or expiry, which move no
    money: the hold's accounts and amount); with ``details``, also when, the running balances,
    the extra data and the operation id."""
    hold = event.hold
    if event.transactions:
        legs = ", ".join(
            f"{name(t.account_id)} {amount(t.amount)}"
            + ("" if not details or t.balance_after is None else f" (= {amount(t.balance_after)})")
            for t in event.transactions
        )
        data = event.transactions[0].data
    elif hold is not None:
        held = amount(hold.amount).lstrip("+")
        legs = f"{held} of {name(hold.from_account_id)} for {name(hold.to_account_id)}"
        data = hold.void_data if event.kind == "void" else hold.data
    else:  # the hold was deleted before the event was read
        legs, data = f"hold {event.hold_id}", {}
    if not details:
        return f"{event.kind}: {legs}"
    when = event.committed_at
    stamp = when.strftime("%Y-%m-%d %H:%M:%S") if hasattr(when, "strftime") else str(when)
    note = f"  {data}" if data else ""
    return f"{stamp}  {event.kind}: {legs}{note}  [{event.operation_id}]"


def printer(out: TextIO = sys.stdout) -> Callable[[LedgerEvent], None]:
    """A ``listen`` handler that prints each operation and flushes (for pipes)."""

    def handle(event: LedgerEvent) -> None:
        print(describe(event), file=out, flush=True)

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="notifier", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--uri", default=os.environ.get("MONGOLEDGER_URI", "mongodb://localhost"))
    parser.add_argument("--db", default=os.environ.get("MONGOLEDGER_DB", "ledger"))
    parser.add_argument("--checkpoint", default="notifier", help="resume-token name to keep")
    parser.add_argument("--kind", action="append", dest="kinds", help="only these kinds")
    args = parser.parse_args(argv)

    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from mongoledger import Ledger, LedgerError

    client: Any = MongoClient(args.uri)
    ledger = Ledger(client[args.db])
    try:
        ledger.listen(printer(), checkpoint=args.checkpoint, kinds=args.kinds)
    except KeyboardInterrupt:
        return 0
    except (LedgerError, PyMongoError) as exc:
        print(f"notifier: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
