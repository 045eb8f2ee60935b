"""The ``mongoledger`` commands: each takes the parsed arguments and a :class:`Context`."""

from __future__ import annotations

import argparse
import io
import math
import time  # noqa: F401 - tests/test_cli.py patches _commands.time.sleep (the sweep's nap)
from collections.abc import Callable, Sequence
from typing import Any

from mongoledger._core import clock
from mongoledger._format import (
    format_value,
    render_table,
    to_jsonable,
)
from mongoledger._text import UsageError, parse_account_id, parse_duration, parse_when
from mongoledger.cli._context import Context
from mongoledger.cli._values import parse_account, parse_data, parse_pairs, parse_resume_token
from mongoledger.errors import LedgerError
from mongoledger.models import Account, Hold, Transaction

__all__ = ["COMMANDS", "VerifyFailed"]


class VerifyFailed(LedgerError):
    """``verify`` found inconsistencies (exit status 1)."""


# Shared rendering


def account_label(account: Account) -> str:
    return format_value(account.attributes) if account.attributes else format_value(account.id)


def _labels(ctx: Context, account_ids: Sequence[Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for account_id in account_ids:
        key = repr(account_id)
        if key not in labels:
            try:
                labels[key] = account_label(ctx.ledger.get_account(account_id))
            except LedgerError:
                labels[key] = format_value(account_id)
    return labels


def _flags(row: Transaction) -> str:
    flags = []
    if row.reverts is not None:
        flags.append(f"reverts {row.reverts}")
    if row.reverted_by is not None:
        flags.append(f"reverted by {row.reverted_by}")
    if row.data:
        flags.append(format_value(row.data))
    return "; ".join(flags)


def _print_written(ctx: Context, kind: str, ids: Sequence[Any]) -> None:
    rows = [ctx.ledger.get_transaction(i) for i in ids]
    if ctx.json:
        ctx.emit(
            {
                "kind": kind,
                "operation_id": rows[0].operation_id if rows else None,
                "transaction_ids": list(ids),
                "transactions": rows,
            }
        )
        return
    labels = _labels(ctx, [r.account_id for r in rows])
    operation = rows[0].operation_id if rows else None
    ctx.print(f"{kind} committed: operation {operation}, {len(rows)} transaction(s)")
    ctx.print(
        render_table(
            ["transaction", "account", "amount", "balance after"],
            [
                [
                    str(r.id),
                    labels[repr(r.account_id)],
                    ctx.money.signed(r.amount),
                    ctx.money.format(r.balance_after),
                ]
                for r in rows
            ],
            right=(2, 3),
        )
    )


def _not_negative(value: int, option: str, zero: str) -> None:
    """The command-line counts (``--limit``, ``--skip``): 0 means ``zero`` ("all", ...)."""
    if value < 0:
        raise UsageError(f"{option} {value} must be 0 ({zero}) or positive")


def _account(args: argparse.Namespace, name: str = "account") -> Any:
    return parse_account(getattr(args, name), getattr(args, f"{name}_id"), option=f"--{name}")


# Commands


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.progress("creating indexes"):
        ctx.ledger.ensure_indexes()
    cfg = ctx.ledger.config
    collections = [
        cfg.accounts_collection,
        cfg.transactions_collection,
        cfg.idempotency_collection,
        cfg.holds_collection,
    ]
    if ctx.json:
        ctx.emit({"ok": True, "collections": collections})
    else:
        ctx.print(f"indexes ensured on {', '.join(collections)}")
    return 0


def cmd_open(args: argparse.Namespace, ctx: Context) -> int:
    account = _account(args)
    floor = None if args.min_balance is None else ctx.amount(args.min_balance)
    if isinstance(account, dict):
        account_id = ctx.ledger.open_account(account, min_balance=floor)
    else:
        if floor is not None:
            raise UsageError("--min-balance needs an attribute set (--account KEY=VALUE)")
        account_id = ctx.ledger.get_account(account).id
    model = ctx.ledger.get_account(account_id)
    if ctx.json:
        ctx.emit(model)
    else:
        _print_accounts(ctx, [model], total=False)
    return 0


def cmd_increase(args: argparse.Namespace, ctx: Context) -> int:
    account = _account(args)
    amount = ctx.amount(args.amount)
    data = parse_data(args.data)
    write = ctx.ledger.increase if args.command == "increase" else ctx.ledger.decrease
    tid = write(account, amount, data, idempotency_key=args.idempotency_key)
    _print_written(ctx, args.command, [tid])
    return 0


def cmd_transfer(args: argparse.Namespace, ctx: Context) -> int:
    source = _account(args, "from")
    target = _account(args, "to")
    amount = ctx.amount(args.amount)
    ids = ctx.ledger.transfer(
        source, target, amount, parse_data(args.data), idempotency_key=args.idempotency_key
    )
    _print_written(ctx, "transfer", ids)
    return 0


def cmd_post(args: argparse.Namespace, ctx: Context) -> int:
    legs = []
    for i, tokens in enumerate(args.leg):
        if len(tokens) < 2:
            raise UsageError(f"--leg {' '.join(tokens)!r}: give AMOUNT then the account KEY=VALUE")
        amount = ctx.amount(tokens[0])
        legs.append((parse_account(tokens[1:], None, option=f"--leg {i + 1}"), amount))
    ids = ctx.ledger.post(legs, parse_data(args.data), idempotency_key=args.idempotency_key)
    _print_written(ctx, "post", ids)
    return 0


def cmd_revert(args: argparse.Namespace, ctx: Context) -> int:
    result = ctx.ledger.revert(
        args.transaction_id, parse_data(args.data), idempotency_key=args.idempotency_key
    )
    _print_written(ctx, "revert", result if isinstance(result, list) else [result])
    return 0


def cmd_balance(args: argparse.Namespace, ctx: Context) -> int:
    when = None if args.at is None else parse_when(args.at, end_of_day=True)
    account = ctx.ledger.get_account(_account(args))
    if when is not None:
        balance = ctx.ledger.balance_at(account.id, when)
    elif args.calculated:
        balance = ctx.ledger.calculate_balance(account.id)
    else:
        balance = account.balance
    if ctx.json:
        document: dict[str, Any] = {
            "account_id": account.id,
            "attributes": account.attributes,
            "balance": balance,
        }
        if when is not None:
            document["at"] = when
        else:  # pending holds are a present-tense notion
            document["held"] = account.held
            document["available"] = balance - account.held
        ctx.emit(document)
    else:
        suffix = "" if when is None else f" at {ctx.date(when)}"
        line = f"{account_label(account)}{suffix}: {ctx.money.format(balance)}"
        if when is None and account.held:
            available = ctx.money.format(balance - account.held)
            line += f" (available {available}, held {ctx.money.format(account.held)})"
        ctx.print(line)
    return 0


# Holds


def _print_holds(ctx: Context, holds: Sequence[Hold]) -> None:
    labels = _labels(ctx, [i for h in holds for i in (h.from_account_id, h.to_account_id)])
    ctx.print(
        render_table(
            ["hold", "from", "to", "amount", "status", "captured", "expires", "created"],
            [
                [
                    str(h.id),
                    labels[repr(h.from_account_id)],
                    labels[repr(h.to_account_id)],
                    ctx.money.format(h.amount),
                    h.status,
                    ctx.money.format(h.captured_amount),
                    ctx.date(h.expires_at) if h.expires_at else "",
                    ctx.date(h.created_at),
                ]
                for h in holds
            ],
            right=(3, 5),
        )
    )


def _print_hold(ctx: Context, title: str, hold: Hold) -> None:
    if ctx.json:
        ctx.emit(hold)
        return
    ctx.print(f"{title}: hold {hold.id}")
    _print_holds(ctx, [hold])


def cmd_hold(args: argparse.Namespace, ctx: Context) -> int:
    source = _account(args, "from")
    target = _account(args, "to")
    amount = ctx.amount(args.amount)
    expires: Any = None
    if args.expires_at is not None:
        expires = parse_when(args.expires_at)
    elif args.expires_in is not None:
        expires = parse_duration(args.expires_in, what="--expires-in")
    hold_id = ctx.ledger.hold(
        source,
        target,
        amount,
        parse_data(args.data),
        expires_at=expires,
        idempotency_key=args.idempotency_key,
    )
    _print_hold(ctx, "hold placed", ctx.ledger.get_hold(hold_id))
    return 0


def cmd_capture(args: argparse.Namespace, ctx: Context) -> int:
    amount = None if args.amount is None else ctx.amount(args.amount)
    ids = ctx.ledger.capture(
        args.hold_id, amount, parse_data(args.data), idempotency_key=args.idempotency_key
    )
    _print_written(ctx, "capture", ids)
    return 0


def cmd_void(args: argparse.Namespace, ctx: Context) -> int:
    ctx.ledger.void(args.hold_id, parse_data(args.data))
    _print_hold(ctx, "voided", ctx.ledger.get_hold(args.hold_id))
    return 0


def cmd_holds(args: argparse.Namespace, ctx: Context) -> int:
    _not_negative(args.limit, "--limit", "all")
    account = _account(args) if args.account or args.account_id else None
    status = None if args.status == "all" else args.status
    holds = ctx.ledger.holds(account, status=status, limit=args.limit or None)
    total = sum(h.amount for h in holds)
    if ctx.json:
        ctx.emit({"holds": holds, "count": len(holds), "total": total})
        return 0
    _print_holds(ctx, holds)
    ctx.print(f"{len(holds)} hold(s), {ctx.money.format(total)}")
    return 0


def cmd_expire(args: argparse.Namespace, ctx: Context) -> int:
    now = None if args.now is None else parse_when(args.now)
    if args.every is None:
        released = ctx.ledger.expire_holds(now)
        if ctx.json:
            ctx.emit({"released": released})
        else:
            ctx.print(f"released {released} expired hold(s)")
        return 0
    if now is not None or not 0 < args.every < math.inf:
        raise UsageError("--every takes a positive number of seconds, and no --now")

    def report(outcome: int | Exception) -> None:
        if isinstance(outcome, Exception):
            raise outcome  # a database error ends the command (exit 1), not retried
        if outcome:
            at = clock.utcnow()
            if ctx.json:
                ctx.emit_line({"released": outcome, "at": at})
            else:
                ctx.print(f"{ctx.date(at)}  released {outcome} expired hold(s)")
                ctx.out.flush()

    ctx.ledger.sweep_holds(interval=args.every, report=report)  # until Ctrl-C (exit 130)
    return 0


def cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    _not_negative(args.limit, "--limit", "all")
    start = None if args.start is None else parse_when(args.start)
    end = None if args.end is None else parse_when(args.end, end_of_day=True)
    account = ctx.ledger.get_account(_account(args))
    with ctx.progress("reading the balance sheet"):
        rows = _pages(
            lambda size, rows: ctx.ledger.history(
                account.id,
                start=start,
                end=end,
                limit=size,
                before_seq=rows[-1].account_seq if rows else args.before_seq,
            ),
            args.limit,
        )
    more = None
    if args.limit and len(rows) == args.limit and (rows[-1].account_seq or 0) > 1:
        more = rows[-1].account_seq
    if ctx.json:
        ctx.emit(
            {
                "account": account,
                "transactions": rows,
                "next_before_seq": more,
            }
        )
        return 0
    ctx.print(
        f"balance sheet of {account_label(account)} ({account.id}), "
        f"balance {ctx.money.format(account.balance)}"
    )
    ctx.print(
        render_table(
            ["seq", "date", "kind", "amount", "balance", "transaction", "notes"],
            [
                [
                    "" if r.account_seq is None else str(r.account_seq),
                    ctx.date(r.date),
                    r.kind,
                    ctx.money.signed(r.amount),
                    ctx.money.format(r.balance_after),
                    str(r.id),
                    _flags(r),
                ]
                for r in rows
            ],
            right=(0, 3, 4),
        )
    )
    if not rows:
        ctx.print("(no transactions)")
    if more is not None:
        ctx.print(f"more: add --before-seq {more}")
    return 0


_PAGE = 1000  # rows per read when the command shows everything (--limit 0)


def _pages(read: Callable[[int, list[Any]], list[Any]], limit: int) -> list[Any]:
    """``limit`` rows (0: all of them, read page by page, as the ledger returns one page at a
    time). ``read(size, rows)`` reads the page that follows ``rows``."""
    rows: list[Any] = []
    while True:
        size = _PAGE if not limit else min(_PAGE, limit - len(rows))
        page = read(size, rows)
        rows.extend(page)
        if len(page) < size or (limit and len(rows) >= limit):
            return rows


def _print_accounts(ctx: Context, accounts: Sequence[Account], *, total: bool) -> None:
    ctx.print(
        render_table(
            ["account", "attributes", "balance", "min balance", "created"],
            [
                [
                    str(a.id),
                    format_value(a.attributes) if a.attributes else "",
                    ctx.money.format(a.balance),
                    ctx.money.format(a.min_balance),
                    ctx.date(a.created_at),
                ]
                for a in accounts
            ],
            right=(2, 3),
        )
    )
    if total:
        total_balance = ctx.money.format(sum(a.balance for a in accounts))
        ctx.print(f"{len(accounts)} account(s), total {total_balance}")


def cmd_report(args: argparse.Namespace, ctx: Context) -> int:
    _not_negative(args.limit, "--limit", "all")
    _not_negative(args.skip, "--skip", "none")
    where = parse_pairs(args.where, option="--where")
    with ctx.progress("reading balances"):
        accounts = _pages(
            lambda size, rows: ctx.ledger.report(
                sort=args.sort,
                limit=size,
                skip=args.skip + len(rows),
                attributes=where,
                currency=args.currency,
            ),
            args.limit,
        )
    if ctx.json:
        ctx.emit(
            {
                "accounts": accounts,
                "count": len(accounts),
                "total": sum(a.balance for a in accounts),
            }
        )
    else:
        _print_accounts(ctx, accounts, total=True)
    return 0


def cmd_stats(args: argparse.Namespace, ctx: Context) -> int:
    start = None if args.start is None else parse_when(args.start)
    end = None if args.end is None else parse_when(args.end, end_of_day=True)
    account_id = None
    if args.account or args.account_id:
        account_id = ctx.ledger.get_account(_account(args)).id
    with ctx.progress("computing statistics"):
        rows = ctx.ledger.statistics(
            account_id, period=args.period, start=start, end=end, currency=args.currency
        )
    if ctx.json:
        ctx.emit({"account_id": account_id, "period": args.period, "periods": rows})
        return 0
    m = ctx.money
    body = [
        [r.period, m.format(r.credit), m.format(r.debit), m.format(r.net), str(r.count)]
        for r in rows
    ]
    if rows:
        body.append(
            [
                "total",
                m.format(sum(r.credit for r in rows)),
                m.format(sum(r.debit for r in rows)),
                m.format(sum(r.net for r in rows)),
                str(sum(r.count for r in rows)),
            ]
        )
    ctx.print(
        render_table([args.period, "credit", "debit", "net", "count"], body, right=(1, 2, 3, 4))
    )
    return 0


def cmd_verify(args: argparse.Namespace, ctx: Context) -> int:
    label = "verifying and repairing the ledger" if args.repair else "verifying the ledger"
    with ctx.progress(label):
        report = ctx.ledger.verify(repair=args.repair)
    if ctx.json:
        document = to_jsonable(report)
        document["ok"] = report.ok
        ctx.emit(document)
    else:
        ctx.print(
            f"checked {report.accounts_checked} accounts, {report.transactions_checked} "
            f"transactions, {report.operations_checked} operations, {report.holds_checked} holds"
        )
        repaired = {repr(r) for r in report.repaired}
        for m in report.balance_mismatches:
            fixed = " (repaired)" if repr(m.account_id) in repaired else ""
            ctx.print(
                f"  balance mismatch on {m.account_id}: cached {ctx.money.format(m.cached)}, "
                f"calculated {_total(ctx, m.calculated)}{fixed}"
            )
        for u in report.unbalanced_operations:
            ctx.print(f"  unbalanced {u.kind} operation {u.operation_id}: {u.problem}")
        for b in report.broken_links:
            ctx.print(f"  broken link on transaction {b.transaction_id}: {b.problem}")
        for a in report.missing_accounts:
            ctx.print(f"  transactions reference missing account {format_value(a)}")
        rewritten = {repr(r) for r in report.repaired_histories}
        for r in report.running_balance_mismatches:
            fixed = " (repaired)" if repr(r.account_id) in rewritten else ""
            ctx.print(
                f"  history of {format_value(r.account_id)}: transaction {r.transaction_id} "
                f"is #{r.account_seq} with balance after {r.balance_after}, should be "
                f"#{r.expected_seq} with {r.expected_balance_after}{fixed}"
            )
        for f in report.floor_violations:
            at = ctx.money.format(f.balance)
            if f.held:
                held = ctx.money.format(f.held)
                at = f"available {ctx.money.format(f.available)} (balance {at}, held {held})"
            ctx.print(
                f"  account {format_value(f.account_id)} is at {at}, below its min_balance "
                f"{ctx.money.format(f.min_balance)}"
            )
        fixed_held = {repr(r) for r in report.repaired_held}
        for h in report.held_mismatches:
            fixed = " (repaired)" if repr(h.account_id) in fixed_held else ""
            ctx.print(
                f"  held on {format_value(h.account_id)}: cached {ctx.money.format(h.cached)}, "
                f"pending holds {_total(ctx, h.calculated)}{fixed}"
            )
        reopened = {repr(r) for r in report.repaired_holds}
        for hold in report.broken_holds:
            fixed = " (reopened)" if repr(hold.hold_id) in reopened else ""
            ctx.print(f"  hold {format_value(hold.hold_id)}: {hold.problem}{fixed}")
        ctx.print("ok" if report.ok else "NOT OK")
    if not report.ok:
        hint = "" if args.repair else "; balance drift can be rebuilt with verify --repair"
        raise VerifyFailed(f"the ledger is inconsistent{hint}")
    return 0


def _total(ctx: Context, amount: int | None) -> str:
    """A sum verify computed; None is a sum past int64 (written around the ledger)."""
    return "past int64" if amount is None else ctx.money.format(amount)


def cmd_watch(args: argparse.Namespace, ctx: Context) -> int:
    _not_negative(args.limit, "--limit", "no limit")
    accounts: list[Any] = [parse_account_id(i) for i in args.account_ids or []]
    if args.account:
        accounts.append(parse_account(args.account, None))
    resume = None if args.resume_after is None else parse_resume_token(args.resume_after)
    count = 0
    watch = ctx.ledger.watch
    with watch(accounts=accounts or None, kinds=args.kind or None, resume_after=resume) as stream:
        for event in stream:
            ctx.emit_line(event)
            count += 1
            if args.limit and count >= args.limit:
                break
    return 0


def _print_counts(ctx: Context, verb: str, where: str, counts: dict[str, int]) -> None:
    total = sum(counts.values())
    ctx.print(f"{verb} {len(counts)} collection(s), {total:,} document(s) {where}")
    rows = [[name, f"{n:,}"] for name, n in counts.items()]
    if rows:
        ctx.print(render_table(["collection", "documents"], rows, right=(1,)))


def cmd_export(args: argparse.Namespace, ctx: Context) -> int:
    from pathlib import Path

    from mongoledger.cli._dump import export_database

    db = ctx.ledger.database
    directory = Path(args.directory).expanduser()
    counts = export_database(db, directory, fmt=args.format, only=args.collection or ())
    folder = directory / db.name
    if ctx.json:
        ctx.emit(
            {
                "database": db.name,
                "directory": str(folder),
                "format": args.format,
                "collections": counts,
            }
        )
        return 0
    _print_counts(ctx, "exported", f"of database {db.name!r} to {folder}", counts)
    if args.format == "bson":
        ctx.print(f'into MongoDB: mongorestore --uri "mongodb://HOST/?replicaSet=RS" {directory}')
    else:
        ctx.print(
            f'into MongoDB: mongoimport --uri "mongodb://HOST/?replicaSet=RS" --db {db.name} '
            f"--collection NAME --file {folder}/NAME.json (for each collection), then "
            "mongoledger init"
        )
    ctx.print(f"or: mongoledger --uri URI --db {db.name} import {directory}")
    return 0


def cmd_import(args: argparse.Namespace, ctx: Context) -> int:
    from pathlib import Path

    from mongoledger.cli._dump import import_database

    db = ctx.ledger.database
    directory = Path(args.directory).expanduser()
    with ctx.progress("importing"):
        counts = import_database(db, directory, drop=args.drop, only=args.collection or ())
    if ctx.json:
        ctx.emit({"database": db.name, "collections": counts})
        return 0
    _print_counts(ctx, "imported", f"into database {db.name!r}", counts)
    return 0


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    from mongoledger.demo import run_demo

    if not ctx.json:
        return run_demo(out=ctx.out, money=ctx.money, date_format=ctx.date_format)
    summary: dict[str, Any] = {}
    status = run_demo(out=io.StringIO(), money=ctx.money, summary=summary)
    ctx.emit(summary)
    return status


def cmd_serve_db(args: argparse.Namespace, ctx: Context) -> int:
    from mongoledger.cli._serve_db import cmd_serve_db as serve

    return serve(args, ctx)


Command = Callable[[argparse.Namespace, Context], int]

COMMANDS: dict[str, Command] = {
    "init": cmd_init,
    "open": cmd_open,
    "increase": cmd_increase,
    "decrease": cmd_increase,
    "transfer": cmd_transfer,
    "post": cmd_post,
    "revert": cmd_revert,
    "hold": cmd_hold,
    "capture": cmd_capture,
    "void": cmd_void,
    "holds": cmd_holds,
    "expire": cmd_expire,
    "balance": cmd_balance,
    "history": cmd_history,
    "report": cmd_report,
    "stats": cmd_stats,
    "verify": cmd_verify,
    "watch": cmd_watch,
    "export": cmd_export,
    "import": cmd_import,
    "demo": cmd_demo,
    "serve-db": cmd_serve_db,
    "serve": lambda args, ctx: _web_command("serve", args, ctx),
    "users": lambda args, ctx: _web_command("users", args, ctx),
}


def _web_command(name: str, args: argparse.Namespace, ctx: Context) -> int:
    from mongoledger.cli import _web

    return _web.cmd_serve(args, ctx) if name == "serve" else _web.cmd_users(args, ctx)
