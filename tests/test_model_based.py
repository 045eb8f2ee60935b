"""Model-based test: random operation sequences against a plain-Python model of the ledger.

Hypothesis drives a ``Ledger`` on the memory engine with increases (of either sign),
decreases, transfers, multi-leg posts (an account may appear in several legs), reverts of any
transaction (reversals included, captures too), ``open_account`` with floors, holds (with and
without expiry), full and partial captures, voids, the passing of time and expiry sweeps,
idempotent retries and key conflicts. The model predicts every outcome, refusals included;
after every step the balances, the available balances and ``held`` sums, each account's
history (rows, order and running balances), every hold's status and ``verify()`` must agree
with it, and the ledger's invariants must hold: ``balance - held >= min_balance`` on floored
accounts, ``held`` = the sum of the account's pending holds, the balances sum to the money
that entered and left, and a hold closes at most once.

With concurrency on (the ``concurrently`` rule), a step runs a batch of increases and
transfers in threads at once: their transactions overlap and conflict on the engine as on a
replica set. The batch holds only operations no order can refuse, so the model predicts the
balances; each account's new rows must be exactly the batch's legs, in some commit order,
with running balances that chain.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mongoledger import (
    AlreadyReverted,
    HoldClosed,
    HoldExpired,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    Ledger,
)
from mongoledger._core import clock
from mongoledger.memory import MemoryClient

NAMES = st.integers(min_value=0, max_value=4)
AMOUNTS = st.integers(min_value=1, max_value=500)
FLOORS = st.sampled_from([0, -50, 100])


def ref(name: int) -> dict[str, Any]:
    return {"user_id": name}


@dataclass
class ModelAccount:
    floor: int | None = None
    balance: int = 0
    rows: list[tuple[ObjectId, int, int]] = field(default_factory=list)  # (id, amount, after)


@dataclass
class ModelOperation:
    legs: list[tuple[int, int]]  # (account name, amount), in leg order
    ids: list[ObjectId]
    external: int  # money that entered (or left) the ledger: increases, decreases
    reverted: bool = False


@dataclass
class ModelHold:
    source: int
    sink: int
    amount: int
    expires: datetime | None
    status: str = "pending"
    closes: int = 0  # how many times the ledger let it close: at most once


@dataclass
class Kw:
    """Keyword arguments of a recorded call (``expires_at`` of a hold)."""

    values: dict[str, Any]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # The ledger's clock, moved by the ``wait`` rule (holds expire against it).
        self.now = datetime.now(timezone.utc).replace(microsecond=0)
        self.real_utcnow = clock.utcnow
        clock.utcnow = lambda: self.now  # type: ignore[assignment]
        self.ledger = Ledger(MemoryClient()["model"])
        self.accounts: dict[int, ModelAccount] = {}
        self.operations: list[ModelOperation] = []
        self.by_id: dict[ObjectId, ModelOperation] = {}
        self.keys: dict[str, tuple[Any, list[ObjectId]]] = {}  # key -> (call, ids)
        self.holds: dict[ObjectId, ModelHold] = {}
        self.lowest: dict[int, int] = {}  # per floored account: the lowest available seen
        self.next_key = 0

    def teardown(self) -> None:
        clock.utcnow = self.real_utcnow  # type: ignore[assignment]

    # The model

    def held(self, name: int) -> int:
        return sum(
            h.amount for h in self.holds.values() if h.source == name and h.status == "pending"
        )

    def refused(self, legs: list[tuple[int, int]], holding: int = 0) -> bool:
        """Would applying ``legs`` in order take a guarded account's available balance below
        its floor? (``holding``: a hold's amount, reserved on the first leg's account.)"""
        balances = {name: acc.balance - self.held(name) for name, acc in self.accounts.items()}
        for name, amount in legs:
            after = balances.get(name, 0) + amount - (holding if holding else 0)
            floor = self.accounts[name].floor if name in self.accounts else None
            if (amount < 0 or holding) and floor is not None and after < floor:
                return True
            balances[name] = after
        return False

    def apply(
        self, legs: list[tuple[int, int]], ids: list[ObjectId], external: int = 0
    ) -> ModelOperation:
        op = ModelOperation(legs, ids, external)
        for (name, amount), tid in zip(legs, ids, strict=True):
            acc = self.accounts.setdefault(name, ModelAccount())
            acc.balance += amount
            acc.rows.append((tid, amount, acc.balance))
            self.by_id[tid] = op
        self.operations.append(op)
        return op

    def key(self, use: bool) -> str | None:
        if not use:
            return None
        self.next_key += 1
        return f"key-{self.next_key}"

    def perform(
        self,
        call: tuple[Any, ...],
        legs: list[tuple[int, int]],
        key: str | None,
        external: int = 0,
    ) -> None:
        """Run one ledger call; expect a refusal exactly when the model predicts one."""
        if self.refused(legs):
            with pytest.raises(InsufficientFunds):
                self.invoke(call, key)
            return
        result = self.invoke(call, key)
        ids = result if isinstance(result, list) else [result]
        self.apply(legs, ids, external)
        if key is not None:
            self.keys[key] = (call, ids)

    def invoke(self, call: tuple[Any, ...], key: str | None) -> Any:
        method, *args = call
        kwargs = args.pop().values if args and isinstance(args[-1], Kw) else {}
        return getattr(self.ledger, method)(*args, idempotency_key=key, **kwargs)

    def state_of(self, hold: ModelHold) -> str:
        """The hold's status as callers see it: past its expiry it is expired, swept or not."""
        if hold.status == "pending" and hold.expires is not None and hold.expires <= self.now:
            return "expired"
        return hold.status

    # Rules

    @rule(name=NAMES, floor=FLOORS)
    def open_account(self, name: int, floor: int) -> None:
        existing = self.accounts.get(name)
        if existing is not None and existing.floor != floor:
            with pytest.raises(InvalidAccount, match="min_balance"):
                self.ledger.open_account(ref(name), min_balance=floor)
            return
        account_id = self.ledger.open_account(ref(name), min_balance=floor)
        assert self.ledger.get_account(ref(name)).id == account_id
        if existing is None:
            self.accounts[name] = ModelAccount(floor=floor)
            self.lowest[name] = min(floor, 0)

    @rule(
        name=NAMES,
        amount=AMOUNTS,
        negative=st.booleans(),
        keyed=st.booleans(),
    )
    def increase(self, name: int, amount: int, negative: bool, keyed: bool) -> None:
        value = -amount if negative else amount
        self.perform(("increase", ref(name), value), [(name, value)], self.key(keyed), value)

    @rule(name=NAMES, amount=AMOUNTS, keyed=st.booleans())
    def decrease(self, name: int, amount: int, keyed: bool) -> None:
        legs = [(name, -amount)]
        self.perform(("decrease", ref(name), amount), legs, self.key(keyed), -amount)

    @rule(source=NAMES, sink=NAMES, amount=AMOUNTS, keyed=st.booleans())
    def transfer(self, source: int, sink: int, amount: int, keyed: bool) -> None:
        if source == sink:
            with pytest.raises(InvalidAccount):
                self.ledger.transfer(ref(source), ref(sink), amount)
            return
        legs = [(source, -amount), (sink, amount)]
        self.perform(("transfer", ref(source), ref(sink), amount), legs, self.key(keyed))

    @rule(
        legs=st.lists(st.tuples(NAMES, AMOUNTS, st.booleans()), min_size=1, max_size=3),
        sink=NAMES,
        keyed=st.booleans(),
    )
    def post(self, legs: list[tuple[int, int, bool]], sink: int, keyed: bool) -> None:
        planned = [(name, -amount if negative else amount) for name, amount, negative in legs]
        total = sum(amount for _, amount in planned)
        if total == 0:
            planned.append((sink, 1))
            planned.append((sink, -1))
        else:
            planned.append((sink, -total))
        call = ("post", [(ref(name), amount) for name, amount in planned])
        self.perform(call, planned, self.key(keyed))

    @precondition(lambda self: self.by_id)
    @rule(pick=st.integers(min_value=0), keyed=st.booleans())
    def revert(self, pick: int, keyed: bool) -> None:
        ids = sorted(self.by_id, key=str)
        tid = ids[pick % len(ids)]
        original = self.by_id[tid]
        key = self.key(keyed)
        if original.reverted:
            with pytest.raises(AlreadyReverted):
                self.ledger.revert(tid, idempotency_key=key)
            return
        legs = [(name, -amount) for name, amount in original.legs]
        if self.refused(legs):
            with pytest.raises(InsufficientFunds):
                self.ledger.revert(tid, idempotency_key=key)
            return
        result = self.ledger.revert(tid, idempotency_key=key)
        ids_new = result if isinstance(result, list) else [result]
        assert len(ids_new) == len(legs)
        self.apply(legs, ids_new, -original.external)
        original.reverted = True
        for old, new in zip(original.ids, ids_new, strict=True):
            assert self.ledger.get_transaction(old).reverted_by == new
            assert self.ledger.get_transaction(new).reverts == old
        if key is not None:
            self.keys[key] = (("revert", tid), ids_new)

    # Holds

    @rule(
        source=NAMES,
        sink=NAMES,
        amount=AMOUNTS,
        minutes=st.sampled_from([None, 1, 3]),
        keyed=st.booleans(),
    )
    def hold(self, source: int, sink: int, amount: int, minutes: int | None, keyed: bool) -> None:
        expires = None if minutes is None else timedelta(minutes=minutes)
        call = ("hold", ref(source), ref(sink), amount, Kw({"expires_at": expires}))
        if source == sink:
            with pytest.raises(InvalidAccount):
                self.invoke(call, None)
            return
        key = self.key(keyed)
        if self.refused([(source, 0)], holding=amount):
            with pytest.raises(InsufficientFunds):
                self.invoke(call, key)
            return
        hold_id = self.invoke(call, key)
        assert hold_id not in self.holds
        self.accounts.setdefault(source, ModelAccount())
        self.accounts.setdefault(sink, ModelAccount())
        self.holds[hold_id] = ModelHold(
            source, sink, amount, None if expires is None else self.now + expires
        )
        if key is not None:
            self.keys[key] = (call, [hold_id])

    def closing(self, pick: int) -> tuple[ObjectId, ModelHold, str]:
        hold_id = sorted(self.holds, key=str)[pick % len(self.holds)]
        hold = self.holds[hold_id]
        return hold_id, hold, self.state_of(hold)

    @precondition(lambda self: self.holds)
    @rule(
        pick=st.integers(min_value=0),
        part=st.one_of(st.none(), st.integers(min_value=1, max_value=600)),
        keyed=st.booleans(),
    )
    def capture(self, pick: int, part: int | None, keyed: bool) -> None:
        hold_id, hold, state = self.closing(pick)
        key = self.key(keyed)
        if state != "pending":
            error = HoldExpired if state == "expired" else HoldClosed
            with pytest.raises(error):
                self.ledger.capture(hold_id, part, idempotency_key=key)
            return
        if part is not None and part > hold.amount:
            with pytest.raises(InvalidAmount):
                self.ledger.capture(hold_id, part, idempotency_key=key)
            return
        ids = self.ledger.capture(hold_id, part, idempotency_key=key)
        captured = hold.amount if part is None else part
        hold.status = "captured"
        hold.closes += 1
        self.apply([(hold.source, -captured), (hold.sink, captured)], ids)
        if key is not None:
            self.keys[key] = (("capture", hold_id, part), ids)

    @precondition(lambda self: self.holds)
    @rule(pick=st.integers(min_value=0))
    def void(self, pick: int) -> None:
        hold_id, hold, state = self.closing(pick)
        if state != "pending":
            error = HoldExpired if state == "expired" else HoldClosed
            with pytest.raises(error):
                self.ledger.void(hold_id)
            return
        self.ledger.void(hold_id)
        hold.status = "voided"
        hold.closes += 1

    @rule(minutes=st.integers(min_value=1, max_value=2), sweep=st.booleans())
    def wait(self, minutes: int, sweep: bool) -> None:
        self.now += timedelta(minutes=minutes)
        if sweep:
            self.expire()

    @rule()
    def expire(self) -> None:
        due = [
            h
            for h in self.holds.values()
            if h.status == "pending" and self.state_of(h) == "expired"
        ]
        assert self.ledger.expire_holds() == len(due)
        for hold in due:
            hold.status = "expired"
            hold.closes += 1

    @precondition(lambda self: self.keys)
    @rule(pick=st.integers(min_value=0))
    def retry(self, pick: int) -> None:
        """A caller retries an earlier keyed call: the first ids come back, nothing is written."""
        keys = sorted(self.keys)
        key = keys[pick % len(keys)]
        call, ids = self.keys[key]
        count = self.ledger.transactions.count_documents({})
        result = self.invoke(call, key)
        assert (result if isinstance(result, list) else [result]) == ids
        assert self.ledger.transactions.count_documents({}) == count

    @precondition(lambda self: self.keys)
    @rule(pick=st.integers(min_value=0), name=NAMES)
    def reuse_key_with_other_arguments(self, pick: int, name: int) -> None:
        keys = sorted(self.keys)
        key = keys[pick % len(keys)]
        call, _ = self.keys[key]
        count = self.ledger.transactions.count_documents({})
        other: tuple[Any, ...] = ("increase", ref(name), 999_999)
        if call[0] == "increase":
            other = ("decrease", *call[1:])
        with pytest.raises(IdempotencyConflict, match=key):
            self.invoke(other, key)
        assert self.ledger.transactions.count_documents({}) == count

    # Invariants

    @rule(
        ops=st.lists(
            st.tuples(st.booleans(), NAMES, NAMES, AMOUNTS, st.booleans()), min_size=2, max_size=5
        )
    )
    def concurrently(self, ops: list[tuple[bool, int, int, int, bool]]) -> None:
        """Increases and transfers at once, each in its own thread."""
        batch: list[tuple[tuple[Any, ...], list[tuple[int, int]], str | None]] = []
        debits: dict[int, int] = {}
        for is_transfer, a, b, amount, keyed in ops:
            if is_transfer and a == b:
                continue
            legs = [(a, -amount), (b, amount)] if is_transfer else [(a, amount)]
            source = self.accounts.get(a)
            floor = None if source is None else source.floor
            debit = debits.get(a, 0) + (amount if is_transfer else 0)
            available = 0 if source is None else source.balance - self.held(a)
            if is_transfer and floor is not None and available - debit < floor:
                continue  # some order could refuse it: not a batch the model can predict
            debits[a] = debit
            call = (
                ("transfer", ref(a), ref(b), amount)
                if is_transfer
                else ("increase", ref(a), amount)
            )
            batch.append((call, legs, self.key(keyed)))
        results: list[Any] = [None] * len(batch)
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(batch)) if batch else None

        def run(i: int) -> None:
            try:
                assert barrier is not None
                barrier.wait()
                results[i] = self.invoke(batch[i][0], batch[i][2])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batch))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        new_rows: dict[int, dict[ObjectId, int]] = {}
        for (call, legs, key), result in zip(batch, results, strict=True):
            ids = result if isinstance(result, list) else [result]
            external = legs[0][1] if call[0] == "increase" else 0
            op = ModelOperation(legs, ids, external)
            self.operations.append(op)
            for (name, amount), tid in zip(legs, ids, strict=True):
                self.by_id[tid] = op
                new_rows.setdefault(name, {})[tid] = amount
            if key is not None:
                self.keys[key] = (call, ids)
        for name, rows in new_rows.items():
            acc = self.accounts.setdefault(name, ModelAccount())
            latest = self.ledger.history(ref(name), limit=len(rows))[::-1]  # commit order
            assert {row.id for row in latest} == set(rows), name
            for row in latest:
                acc.balance += rows[row.id]
                assert row.balance_after == acc.balance, name
                acc.rows.append((row.id, rows[row.id], acc.balance))

    @invariant()
    def balances_match(self) -> None:
        for name, acc in self.accounts.items():
            account = self.ledger.get_account(ref(name))
            assert account.balance == acc.balance, name
            assert account.held == self.held(name), name  # held = the sum of pending holds
            assert self.ledger.available_balance(ref(name)) == acc.balance - self.held(name)
            available = acc.balance - self.held(name)
            if acc.floor is not None:
                # balance - held >= floor. An account opened with a floor above its balance
                # (100 at 0) sits below it at first: until it reaches it, its available
                # balance never goes down.
                assert available >= self.lowest[name], name
                self.lowest[name] = min(acc.floor, available)
        assert self.ledger.accounts.count_documents({}) == len(self.accounts)
        # Money enters and leaves only through increases and decreases (and their reverts).
        total = sum(acc.balance for acc in self.accounts.values())
        assert total == sum(op.external for op in self.operations)

    @invariant()
    def holds_match(self) -> None:
        for hold_id, hold in self.holds.items():
            assert hold.closes <= 1, hold_id
            assert self.ledger.get_hold(hold_id).status == hold.status, hold_id
        holds = self.ledger.database[self.ledger.config.holds_collection]
        assert holds.count_documents({}) == len(self.holds)

    @invariant()
    def histories_match(self) -> None:
        for name, acc in self.accounts.items():
            rows = self.ledger.history(ref(name), limit=len(acc.rows) + 1)  # one page: all
            got = [(row.id, row.amount, row.balance_after) for row in rows]
            assert got == list(reversed(acc.rows)), name

    @invariant()
    def verify_is_ok(self) -> None:
        report = self.ledger.verify()
        assert report.ok, report
        assert report.transactions_checked == len(self.by_id)
        assert report.operations_checked == len(self.operations)


DEFAULT = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerModel = LedgerMachine.TestCase
TestLedgerModel.settings = DEFAULT


@pytest.mark.slow
def test_ledger_model_long_runs(request: pytest.FixtureRequest) -> None:
    if not (
        os.environ.get("MONGOLEDGER_SLOW") or "slow" in str(request.config.getoption("markexpr"))
    ):
        pytest.skip("heavier variant: set MONGOLEDGER_SLOW=1 or select -m slow")
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(DEFAULT, max_examples=300, stateful_step_count=60),
    )
