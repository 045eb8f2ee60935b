"""Races on holds: a hold closes exactly once, reserved money is never spent twice.

The sync twin runs its workers as threads sharing one ``Ledger`` over one client; the async
source runs them as asyncio tasks sharing one ``AsyncLedger``, with a ``before_write`` hook
that yields, so tasks interleave between a call's reads and its DB transaction.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId

from mongoledger import AsyncLedger, HoldClosed, HoldExpired, InsufficientFunds
from mongoledger._async._io import sleep, to_list
from tests._async.racing import run_concurrently, yield_point
from tests._async.stored import holds_of
from tests._async.test_concurrency import async_shared_db  # noqa: F401 (a fixture)

_IS_SYNC = False

WALLET = {"user_id": 1, "type": "wallet"}  # min_balance 0
SHOP = {"shop_id": 1}
CLOSERS = 12
ROUNDS = 8
# Who races in each round (a sweep, without hooks to wait for, is the quickest closer).
MIXES = [
    ("capture", "capture-part", "void", "expire"),
    ("capture", "capture-part", "void"),
    ("capture", "capture-part"),
    ("void", "capture", "expire"),
]
# (workers, operations per worker): threads in the sync twin, tasks in the async source.
MIXED = (8, 60) if _IS_SYNC else (200, 3)


async def test_twelve_closers_race_on_one_hold(async_shared_db: Any) -> None:
    """Captures (whole and partial), voids and expiry sweeps race on one hold, round after
    round: exactly one closes it, the others get HoldClosed (HoldExpired after the sweep)."""
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    await ledger.open_account(WALLET, min_balance=0)
    await ledger.increase(WALLET, 10_000)
    winners: Counter[str] = Counter()
    moved = 0
    rng = random.Random(13)
    for round_number in range(ROUNDS):
        hold_id = await ledger.hold(WALLET, SHOP, 100, expires_at=timedelta(hours=1))
        later = datetime.now(timezone.utc) + timedelta(hours=2)
        outcomes: list[tuple[str, Any]] = []
        lock = threading.Lock()

        def closer(
            i: int,
            hold_id: ObjectId = hold_id,
            later: datetime = later,
            round_number: int = round_number,
            lock: threading.Lock = lock,
            outcomes: list[tuple[str, Any]] = outcomes,
        ) -> Any:
            async def go() -> None:
                kinds = MIXES[round_number % len(MIXES)]
                # The first closer to start often wins: a different kind leads each round.
                kind = kinds[(i + round_number) % len(kinds)]
                for _ in range(rng.randrange(4)):  # tasks start in a different order each round
                    await sleep(0)
                try:
                    if kind == "capture":
                        result: Any = await ledger.capture(hold_id)
                    elif kind == "capture-part":
                        result = await ledger.capture(hold_id, 30)
                    elif kind == "void":
                        result = await ledger.void(hold_id)
                    else:
                        result = await ledger.expire_holds(later)
                        if result == 0:
                            kind = "expire-none"
                except HoldExpired:
                    kind, result = "expired", None
                except HoldClosed:
                    kind, result = "closed", None
                with lock:
                    outcomes.append((kind, result))

            return go

        await run_concurrently([closer(i) for i in range(CLOSERS)])
        wins = [(k, r) for k, r in outcomes if k in ("capture", "capture-part", "void", "expire")]
        assert len(wins) == 1, outcomes
        ((winner, result),) = wins
        winners[winner] += 1
        losers = [k for k, _ in outcomes]
        losers.remove(winner)
        assert set(losers) <= {"closed", "expired", "expire-none"}, outcomes
        hold = await ledger.get_hold(hold_id)
        expected = {"capture": "captured", "capture-part": "captured", "void": "voided"}
        assert hold.status == expected.get(winner, "expired")
        if winner.startswith("capture"):
            moved += 100 if winner == "capture" else 30
            assert len(result) == 2
            legs = await ledger.transactions.count_documents({"hold_id": hold_id})
            assert legs == 2
        else:
            assert await ledger.transactions.count_documents({"hold_id": hold_id}) == 0
        if winner == "expire":
            assert result == 1
        account = await ledger.get_account(WALLET)
        assert (account.balance, account.held) == (10_000 - moved, 0)
    assert await ledger.balance(SHOP) == moved
    assert (await ledger.verify()).ok
    assert len(winners) >= 3, winners  # the race had several possible outcomes


@dataclass
class Mixed:
    lock: threading.Lock = field(default_factory=threading.Lock)
    holds: dict[ObjectId, int] = field(default_factory=dict)  # pending as far as we know
    closed: Counter[ObjectId] = field(default_factory=Counter)  # successful closes per hold
    out: int = 0  # money that left the wallet: decreases, transfers, captures
    into: int = 0  # money that entered it: increases
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    done: Counter[str] = field(default_factory=Counter)


async def mixed_step(ledger: AsyncLedger, state: Mixed, rng: random.Random) -> None:
    roll = rng.random()
    amount = rng.randint(1, 60)
    with state.lock:
        pick = rng.choice(sorted(state.holds, key=str)) if state.holds else None
    try:
        if roll < 0.30:
            hold_id = await ledger.hold(WALLET, SHOP, amount)
            with state.lock:
                state.holds[hold_id] = amount
            kind = "hold"
        elif roll < 0.45:
            await ledger.decrease(WALLET, amount)
            with state.lock:
                state.out += amount
            kind = "decrease"
        elif roll < 0.60:
            await ledger.transfer(WALLET, {"user_id": 2}, amount)
            with state.lock:
                state.out += amount
            kind = "transfer"
        elif roll < 0.65:
            await ledger.increase(WALLET, amount)
            with state.lock:
                state.into += amount
            kind = "increase"
        elif pick is None:
            return
        elif roll < 0.85:
            whole = rng.random() < 0.5
            ids = await ledger.capture(pick, None if whole else 1)
            assert len(ids) == 2
            with state.lock:
                state.out += state.holds.pop(pick, 0) if whole else 1
                state.holds.pop(pick, None)
                state.closed[pick] += 1
            kind = "capture"
        else:
            await ledger.void(pick)
            with state.lock:
                state.holds.pop(pick, None)
                state.closed[pick] += 1
            kind = "void"
        with state.lock:
            state.done[kind] += 1
    except (InsufficientFunds, HoldClosed):
        with state.lock:
            state.refused += 1
    except Exception as exc:  # anything else is a bug
        with state.lock:
            state.errors.append(f"{type(exc).__name__}: {exc}")


async def test_holds_and_debits_race_on_one_account(async_shared_db: Any) -> None:
    """Holds, captures, voids, debits and credits race on one guarded account: the available
    balance never goes below the floor, held stays the exact sum of the pending holds, every
    hold closes at most once, and every cent is accounted for."""
    ledger = AsyncLedger(async_shared_db)
    ledger.before_write(yield_point)
    await ledger.open_account(WALLET, min_balance=0)
    await ledger.increase(WALLET, 2_000)
    state = Mixed()
    workers, per_worker = MIXED

    def worker(w: int) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            rng = random.Random(1_000 + w)
            for _ in range(per_worker):
                await mixed_step(ledger, state, rng)

        return work

    await run_concurrently([worker(w) for w in range(workers)])
    assert not state.errors, state.errors[:5]
    assert state.refused > 0
    assert {"hold", "capture", "void", "decrease", "transfer"} <= set(state.done), state.done
    assert max(state.closed.values()) == 1  # no hold closed twice

    account = await ledger.get_account(WALLET)
    docs = await to_list(holds_of(ledger).find({"from_account_id": account.id}))
    pending = [d for d in docs if d["status"] == "pending"]
    assert account.held == sum(d["amount"] for d in pending)
    assert account.available >= 0
    assert account.balance == 2_000 + state.into - state.out
    assert {d["_id"] for d in pending} == set(state.holds)
    captured = [d for d in docs if d["status"] == "captured"]
    legs = await ledger.transactions.count_documents({"kind": "capture"})
    assert legs == 2 * len(captured)
    rows = await ledger.history(WALLET)
    assert all(row.balance_after is not None and row.balance_after >= 0 for row in rows)
    assert (await ledger.verify()).ok
