"""``mongoledger demo``: a realistic scenario on the in-memory engine (no server needed).

Users keep three accounts each, as in yii2tech/balance's example: ``virtual-money`` (the
spendable balance, never below zero), ``payment-gateway`` (money that came in from the card
processor; it goes negative as users top up) and ``purchases`` (what they bought). The
scenario: top-ups, a signup bonus and a fee (money entering and leaving the ledger), purchases,
a pre-order authorized with a hold and captured for less at shipping, a refund through
``revert``, an overdraft refused with nothing written, an idempotent retry, a commission split
as one multi-leg ``post`` (Drupal's invite commissions), a change-stream consumer printing each
operation as it commits, the zero-sum check, a balance sheet, the all-balances report and
``verify()``.
"""

from __future__ import annotations

import sys
import textwrap
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TextIO

from mongoledger._format import (
    DEFAULT_DATE_FORMAT,
    CurrencyFormat,
    describe_event,
    format_date,
    render_table,
)
from mongoledger._sync.ledger import Ledger
from mongoledger.errors import InsufficientFunds
from mongoledger.memory import MemoryClient
from mongoledger.models import HookContext, LedgerEvent

__all__ = ["run_demo"]

USERS = {1: "alice", 2: "bob", 3: "carol"}
ACCOUNT_TYPES = ("virtual-money", "payment-gateway", "purchases")
_WAIT_SECONDS = 10.0
_WIDTH = 88


class _StreamConsumer:
    """Prints operations from ``ledger.watch()`` in a thread, as they commit.

    The main thread waits for each operation's event before writing the next, so the output
    reads in order; ``stop_after_next()`` before the last write lets the thread end by itself.
    """

    def __init__(self, demo: _Demo) -> None:
        self._demo = demo
        self._cond = threading.Condition()
        self._seen: list[str] = []
        self._stop_at: int | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="demo-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(_WAIT_SECONDS):
            raise RuntimeError("the change stream did not open")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with self._demo.ledger.watch() as stream:
                self._stream = stream
                self._ready.set()
                for event in stream:
                    self._demo.print_event(event)
                    with self._cond:
                        self._seen.append(str(event.operation_id))
                        self._cond.notify_all()
                        if self._stop_at is not None and len(self._seen) >= self._stop_at:
                            break
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self._ready.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, operation_id: Any) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: str(operation_id) in self._seen or self.error is not None,
                _WAIT_SECONDS,
            )
        if self.error is not None:
            raise self.error

    def stop_after_next(self) -> None:
        with self._cond:
            self._stop_at = len(self._seen) + 1

    def join(self) -> None:
        self._thread.join(_WAIT_SECONDS)

    def shutdown(self) -> None:
        """End the thread early (the scenario failed before its last write)."""
        if self._thread.is_alive() and self._stream is not None:
            self._stream.close()
            self._thread.join(_WAIT_SECONDS)


class _Demo:
    def __init__(
        self,
        out: TextIO,
        money: CurrencyFormat,
        date_format: str,
        *,
        use_watch: bool,
        ledger: Ledger | None = None,
    ) -> None:
        self.out = out
        self.use_watch = use_watch
        self.money = money
        self.date_format = date_format
        self.client: MemoryClient | None = None
        if ledger is None:
            self.client = MemoryClient()
            ledger = Ledger(self.client["demo"])
        self.ledger = ledger
        self.names: dict[str, str] = {}
        self.accounts: dict[tuple[str, str], Any] = {}
        self.consumer: _StreamConsumer | None = None
        self.summary: dict[str, Any] = {}

    # Output

    def say(self, text: str = "", *, wrap: bool = True) -> None:
        """Print a line; long prose is wrapped for an 88-column terminal."""
        if wrap and "\n" not in text and len(text) > _WIDTH:
            indent = " " * (len(text) - len(text.lstrip()))
            text = textwrap.fill(
                text,
                _WIDTH,
                subsequent_indent=indent + "    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        self.out.write(text + "\n")

    def section(self, title: str) -> None:
        self.say()
        self.say(f"== {title} ==")

    def name(self, account_id: Any) -> str:
        return self.names.get(repr(account_id), str(account_id))

    def print_event(self, event: LedgerEvent) -> None:
        line = describe_event(event, name=self.name, amount=self.money.signed, details=False)
        self.say(f"   [change stream] {line}")

    def print_hook(self, ctx: HookContext) -> None:
        self.say(
            f"   [after_write] {ctx.kind}: {self.name(ctx.account_id)} "
            f"{self.money.signed(ctx.amount)}"
        )

    def balance(self, user: str, kind: str) -> str:
        return self.money.format(self.ledger.balance(self.accounts[user, kind]))

    # Writes, each followed by its change-stream event

    def committed(self, ids: Any) -> None:
        first = ids[0] if isinstance(ids, list) else ids
        if self.consumer is not None:
            self.consumer.wait_for(self.ledger.get_transaction(first).operation_id)

    def held(self, hold_id: Any) -> None:
        """Wait for a hold's event (its operation id is the hold's id)."""
        if self.consumer is not None:
            self.consumer.wait_for(hold_id)

    def top_up(self, user: str, amount: int, ref: str, key: str | None = None) -> list[Any]:
        return self.ledger.transfer(
            self.accounts[user, "payment-gateway"],
            self.accounts[user, "virtual-money"],
            amount,
            {"gateway": "stripe", "payment_ref": ref},
            idempotency_key=key,
        )

    def purchase(self, user: str, amount: int, item: str, order: str) -> list[Any]:
        return self.ledger.transfer(
            self.accounts[user, "virtual-money"],
            self.accounts[user, "purchases"],
            amount,
            {"item": item, "order": order},
        )

    # The scenario

    def run(self) -> int:
        m = self.money
        ledger = self.ledger
        self.say("mongoledger demo: a wallet service on the in-memory engine (no server)")
        self.say(f"amounts are integers in the minor unit, shown as {m.format(123456)}")

        self.section("1. accounts")
        ledger.ensure_indexes()
        for user_id, user in USERS.items():
            for kind in ACCOUNT_TYPES:
                floor = 0 if kind == "virtual-money" else None
                account_id = ledger.open_account(
                    {"user_id": user_id, "type": kind}, min_balance=floor
                )
                self.accounts[user, kind] = account_id
                self.names[repr(account_id)] = f"{user}/{kind}"
        pool = ledger.open_account({"owner": "platform", "type": "commissions"})
        self.accounts["platform", "commissions"] = pool
        self.names[repr(pool)] = "platform/commissions"
        self.say(
            f"opened {len(self.accounts)} accounts: virtual-money, payment-gateway and purchases "
            "for alice, bob and carol (virtual-money with min_balance 0), and the platform's "
            "commission pool"
        )

        self.section("2. a change-stream consumer")
        if self.use_watch and hasattr(ledger, "watch"):
            self.consumer = _StreamConsumer(self)
            self.consumer.start()
            self.say("a thread follows ledger.watch(); it prints every operation once committed")
        else:
            # TODO(watch): switch to the change-stream consumer once Ledger.watch() lands; until
            # then the in-process after_write hook stands in (it sees only this process's writes).
            ledger.after_write(self.print_hook)
            self.say("after_write hooks print each transaction (in-process only, no change stream)")

        self.section("3. top-ups through the payment gateway")
        for user, amount, ref in (("alice", 5000, "ch_1001"), ("bob", 2000, "ch_1002")):
            self.say(f"{user} tops up {m.format(amount)} (stripe {ref})")
            self.committed(self.top_up(user, amount, ref))
        self.say(f"carol tops up {m.format(3000)} (stripe ch_1003)")
        self.committed(self.top_up("carol", 3000, "ch_1003"))

        self.section("4. money entering and leaving the ledger (single-entry)")
        self.say(f"carol gets a {m.format(500)} signup bonus (increase)")
        self.committed(
            ledger.increase(
                self.accounts["carol", "virtual-money"], 500, {"reason": "signup bonus"}
            )
        )
        self.say(f"bob pays a {m.format(100)} monthly fee (decrease)")
        self.committed(
            ledger.decrease(self.accounts["bob", "virtual-money"], 100, {"reason": "monthly fee"})
        )

        self.section("5. purchases")
        self.say(f"alice buys the Pro plan for {m.format(1250)}")
        pro_plan = self.purchase("alice", 1250, "pro-plan", "A-1001")
        self.committed(pro_plan)
        self.say(f"bob buys an e-book for {m.format(799)}")
        self.committed(self.purchase("bob", 799, "e-book", "A-1002"))
        self.say(
            f"carol pre-orders a keyboard: {m.format(1500)} of her virtual money is held for the "
            "order (a card-style authorization, expiring in 7 days); nothing moves yet"
        )
        carol = self.accounts["carol", "virtual-money"]
        hold_id = ledger.hold(
            carol,
            self.accounts["carol", "purchases"],
            1500,
            {"item": "keyboard", "order": "A-1005"},
            expires_at=timedelta(days=7),
        )
        self.held(hold_id)
        self.say(
            f"carol's virtual money: {self.balance('carol', 'virtual-money')}, of which "
            f"{m.format(ledger.available_balance(carol))} is available: held money cannot be "
            "spent twice"
        )
        self.say(
            f"the keyboard ships with a discount: capture {m.format(1350)} of the hold; the "
            f"other {m.format(150)} is released in the same DB transaction"
        )
        self.committed(ledger.capture(hold_id, 1350, {"shipment": "S-77"}))
        self.say(
            f"alice's virtual money: {self.balance('alice', 'virtual-money')}, "
            f"bob's: {self.balance('bob', 'virtual-money')}"
        )

        self.section("6. a refund through revert")
        self.say("alice asks for a refund of the Pro plan: revert one leg of the purchase")
        refund = ledger.revert(pro_plan[0], {"reason": "customer request"})
        self.committed(refund)
        original = ledger.get_transaction(pro_plan[0])
        self.say(
            f"the purchase is kept and marked reverted_by {original.reverted_by}; "
            f"alice's virtual money is back to {self.balance('alice', 'virtual-money')}"
        )

        self.section("7. an overdraft, refused with nothing written")
        before_count = ledger.transactions.count_documents({})
        before_balance = self.balance("bob", "virtual-money")
        self.say(f"bob ({before_balance}) tries to buy headphones for {m.format(2500)}")
        try:
            self.purchase("bob", 2500, "headphones", "A-1004")
        except InsufficientFunds as exc:
            self.say(
                f"refused: {type(exc).__name__} on {self.name(exc.account_id)}: balance "
                f"{m.format(exc.balance)} {m.signed(exc.amount)} would go below its "
                f"min_balance {m.format(exc.min_balance)}"
            )
        else:  # pragma: no cover - min_balance guards the account
            self.say("ERROR: the overdraft was accepted")
            return 1
        after_count = ledger.transactions.count_documents({})
        self.say(
            f"nothing written: bob still has {self.balance('bob', 'virtual-money')}, "
            f"transactions {before_count} -> {after_count}"
        )

        self.section("8. an idempotent retry")
        self.say(
            f"alice tops up {m.format(1000)} with idempotency key 'topup-ch_1004'; the network "
            "drops the answer and the client sends the same request again"
        )
        first = self.top_up("alice", 1000, "ch_1004", key="topup-ch_1004")
        self.committed(first)
        count = ledger.transactions.count_documents({})
        retry = self.top_up("alice", 1000, "ch_1004", key="topup-ch_1004")
        same = [str(i) for i in first] == [str(i) for i in retry]
        self.say(
            f"the retry returned {'the same' if same else 'DIFFERENT'} transaction ids; "
            f"transactions {count} -> {ledger.transactions.count_documents({})}; alice has "
            f"{self.balance('alice', 'virtual-money')}"
        )

        self.section("9. a commission split as one multi-leg post")
        self.say(
            f"carol (invited by alice) buys a course for {m.format(2000)}; the platform pays "
            f"alice a 10% invite commission ({m.format(200)}) in the same operation"
        )
        if self.consumer is not None:
            self.consumer.stop_after_next()  # the last write: the consumer ends after it
        legs: Sequence[tuple[Any, int]] = [
            (self.accounts["carol", "virtual-money"], -2000),
            (self.accounts["carol", "purchases"], 2000),
            (self.accounts["platform", "commissions"], -200),
            (self.accounts["alice", "virtual-money"], 200),
        ]
        self.committed(ledger.post(legs, {"order": "A-1003", "invited_by": 1}))
        if self.consumer is not None:
            self.consumer.join()

        alice_wallet = self.accounts["alice", "virtual-money"]
        self.section("10. alice's balance sheet (virtual-money)")
        rows = ledger.history(alice_wallet)
        self.say(
            render_table(
                ["seq", "date", "kind", "amount", "balance", "notes"],
                [
                    [
                        str(r.account_seq or ""),
                        format_date(r.date, self.date_format),
                        r.kind,
                        m.signed(r.amount),
                        m.format(r.balance_after),
                        _notes(r.data, r.reverted_by is not None),
                    ]
                    for r in rows
                ],
                right=(0, 3, 4),
                indent="  ",
            )
        )

        self.section("11. all balances")
        accounts = ledger.report(sort="id")
        self.say(
            render_table(
                ["account", "balance", "min balance"],
                [[self.name(a.id), m.format(a.balance), m.format(a.min_balance)] for a in accounts],
                right=(1, 2),
                indent="  ",
            )
        )

        self.section("12. the zero-sum check")
        total = sum(a.balance for a in accounts)
        external = [d for d in ledger.transactions.find({}) if int(d.get("legs", 1)) == 1]
        net_external = sum(int(d["amount"]) for d in external)
        self.say(
            "every transfer, post and their reversals sum to zero, so all balances together "
            "equal the money that entered or left through single-entry operations:"
        )
        for d in external:
            self.say(f"  {d['kind']:<9} {self.name(d['account_id']):<20} {m.signed(d['amount'])}")
        holds = total == net_external
        self.say(
            f"zero-sum check: sum of all balances {total} = net external money {net_external} "
            f"(minor units): {'holds' if holds else 'FAILS'}",
            wrap=False,
        )

        self.section("13. verify")
        report = ledger.verify()
        self.summary.update(
            ok=holds and report.ok,
            accounts=[
                {"name": self.name(a.id), **a.model_dump(exclude={"attributes"})} for a in accounts
            ],
            zero_sum={"total": total, "net_external": net_external, "holds": holds},
            verify={**report.model_dump(), "ok": report.ok},
        )
        self.say(
            f"verify(): checked {report.accounts_checked} accounts, "
            f"{report.transactions_checked} transactions, {report.operations_checked} "
            f"operations: {'ok' if report.ok else 'NOT OK'}"
        )
        return 0 if holds and report.ok else 1


def _notes(data: dict[str, Any], reverted: bool) -> str:
    notes = [f"{k}={v}" for k, v in data.items()]
    if reverted:
        notes.append("(reverted)")
    return " ".join(notes)


def run_demo(
    *,
    out: TextIO | None = None,
    money: CurrencyFormat | None = None,
    date_format: str = DEFAULT_DATE_FORMAT,
    use_watch: bool = True,
    ledger: Ledger | None = None,
    summary: dict[str, Any] | None = None,
) -> int:
    """Run the scenario, printing to ``out`` (default stdout); 0 when every check held.

    ``use_watch=False`` prints operations from an ``after_write`` hook instead of a
    change-stream consumer. ``ledger`` runs the scenario on that ledger (``mongoledger serve
    --demo`` seeds its database so) instead of a fresh in-memory one. ``summary``, when given,
    receives the outcome: every account with its balance, the zero-sum check and the verify
    report.
    """
    demo = _Demo(
        out if out is not None else sys.stdout,
        money if money is not None else CurrencyFormat(symbol="$"),
        date_format,
        use_watch=use_watch,
        ledger=ledger,
    )
    try:
        return demo.run()
    finally:
        if summary is not None:
            summary.update(demo.summary)
        if demo.consumer is not None:
            demo.consumer.shutdown()
        if demo.client is not None:
            demo.client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
