"""The commands each operation sends, counted by the in-memory engine (steady state).

These are the floors the ledger promises: no read before a write, one guarded ``$inc`` per
account, one insert for all legs, one commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mongoledger import Ledger
from mongoledger.memory import MemoryClient


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger(MemoryClient()["test"])
    for account in ("a", "b", "c", "d", "e"):
        ledger.increase(account, 1000)  # warm: indexes, transaction support, accounts exist
    return ledger


def commands(ledger: Ledger, call: Callable[[], Any]) -> Counter[str]:
    server = ledger.database.client.server
    server.reset_command_counts()
    call()
    return Counter({k: v for k, v in server.command_counts.items() if v})


def test_increase_and_decrease(ledger: Ledger) -> None:
    expected = {"findAndModify": 1, "insert": 1, "commitTransaction": 1}
    assert commands(ledger, lambda: ledger.increase("a", 5)) == expected
    assert commands(ledger, lambda: ledger.decrease("a", 5)) == expected


def test_transfer_between_known_accounts(ledger: Ledger) -> None:
    sent = commands(ledger, lambda: ledger.transfer("a", "b", 5))
    assert sent == {"findAndModify": 2, "insert": 1, "commitTransaction": 1}


def test_five_leg_post(ledger: Ledger) -> None:
    legs = [("a", -4), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]
    sent = commands(ledger, lambda: ledger.post(legs))
    assert sent == {"findAndModify": 5, "insert": 1, "commitTransaction": 1}


def test_revert_of_a_transfer(ledger: Ledger) -> None:
    ids = ledger.transfer("a", "b", 5)
    sent = commands(ledger, lambda: ledger.revert(ids[0]))
    # two reads (the leg, its operation), one bulk update marking both, 2 $inc, 1 insert
    assert sent == {
        "find": 2,
        "update": 1,
        "findAndModify": 2,
        "insert": 1,
        "commitTransaction": 1,
    }


def test_attribute_reference_costs_one_read(ledger: Ledger) -> None:
    ledger.increase({"user_id": 1}, 5)
    sent = commands(ledger, lambda: ledger.increase({"user_id": 1}, 5))
    assert sent == {"find": 1, "findAndModify": 1, "insert": 1, "commitTransaction": 1}


def test_idempotency_key_costs_one_read_and_one_insert(ledger: Ledger) -> None:
    # the retry check, and the key's record written in the same DB transaction
    sent = commands(ledger, lambda: ledger.increase("a", 5, idempotency_key="k"))
    assert sent == {"find": 1, "findAndModify": 1, "insert": 2, "commitTransaction": 1}
    assert commands(ledger, lambda: ledger.increase("a", 5, idempotency_key="k")) == {"find": 1}


def test_reads(ledger: Ledger) -> None:
    assert commands(ledger, lambda: ledger.balance("a")) == {"find": 1}
    assert commands(ledger, lambda: ledger.history("a", limit=10)) == {"find": 2}
    assert commands(ledger, lambda: ledger.balance_at("a", ledger.config.operation_date())) == {
        "find": 2
    }


def test_a_backdated_account_pays_an_aggregation_only_where_the_shortcut_is_wrong() -> None:
    from datetime import datetime

    day = 10
    ledger = Ledger(MemoryClient()["test"], date_value=lambda: datetime(2026, 1, day))
    ledger.increase("a", 100)
    day = 5
    sent = commands(ledger, lambda: ledger.increase("a", 10))  # written below Jan 10
    # the same floor plus one findAndModify recording backdated_from, only for this operation
    assert sent == {"findAndModify": 2, "insert": 1, "commitTransaction": 1}
    mid = commands(ledger, lambda: ledger.balance_at("a", datetime(2026, 1, 6)))
    assert mid == {"find": 1, "aggregate": 1}
    for outside in (datetime(2026, 1, 4), datetime(2026, 1, 10)):
        assert commands(ledger, lambda w=outside: ledger.balance_at("a", w)) == {"find": 2}
    day = 11
    steady = {"findAndModify": 1, "insert": 1, "commitTransaction": 1}
    assert commands(ledger, lambda: ledger.increase("a", 1)) == steady


def test_first_use_creates_the_account_once(ledger: Ledger) -> None:
    # A server refuses $expr (the floor guard) in an upsert: a new account is created first.
    first_use = {"findAndModify": 2, "update": 1, "insert": 1, "commitTransaction": 1}
    assert commands(ledger, lambda: ledger.decrease("new", 5)) == first_use
    assert commands(ledger, lambda: ledger.increase("newer", 5)) == first_use
    assert ledger.balance("new") == -5
    assert ledger.balance("newer") == 5
    steady = {"findAndModify": 1, "insert": 1, "commitTransaction": 1}
    assert commands(ledger, lambda: ledger.increase("newer", 5)) == steady


def test_an_oversize_document_is_refused_before_anything_is_sent(ledger: Ledger) -> None:
    from mongoledger import InvalidData

    blob = {"blob": "x" * (16 * 1024 * 1024)}
    server = ledger.database.client.server
    server.reset_command_counts()
    with pytest.raises(InvalidData, match="16777216"):
        ledger.transfer("a", "b", 5, blob)
    assert not any(server.command_counts.values())


def test_a_new_instance_lists_indexes_and_creates_none(ledger: Ledger) -> None:
    """Indexes built at deploy time (or by another instance) are listed, never re-requested:
    a createIndexes on a large collection can stall while the build waits for its quorum."""
    again = Ledger(ledger.database)
    sent = commands(again, lambda: again.increase("a", 5))
    assert sent["listIndexes"] == 4  # accounts, transactions, idempotency, holds
    assert "createIndexes" not in sent
    assert commands(again, lambda: again.increase("a", 5)) == {
        "findAndModify": 1,
        "insert": 1,
        "commitTransaction": 1,
    }


def test_only_a_missing_index_is_created(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    ledger.transactions.drop_index("ledger_date")
    again = Ledger(ledger.database)
    sent = commands(again, again.ensure_indexes)
    assert sent == {"listIndexes": 4, "createIndexes": 1}
    assert "ledger_date" in ledger.transactions.index_information()
    assert not caplog.records  # asked for: no warning
    # Built lazily before a first write on a collection in use: said, with the deploy step.
    ledger.transactions.drop_index("ledger_date")
    third = Ledger(ledger.database)
    with caplog.at_level("WARNING", logger="mongoledger"):
        third.increase("a", 1)
    assert "ledger_date" in caplog.text
    assert "mongoledger init" in caplog.text


# Holds: the guarded steps return what the next step needs, so nothing is read first.


def test_hold_is_one_guarded_update_and_one_insert(ledger: Ledger) -> None:
    sent = commands(ledger, lambda: ledger.hold("a", "b", 5))
    assert sent == {"findAndModify": 1, "insert": 1, "commitTransaction": 1}


def test_capture_closes_the_hold_and_moves_both_accounts(ledger: Ledger) -> None:
    # the hold's closing update returns it: no read before the DB transaction
    expected = {"findAndModify": 3, "insert": 1, "commitTransaction": 1}
    whole = ledger.hold("a", "b", 5)
    assert commands(ledger, lambda: ledger.capture(whole)) == expected
    part = ledger.hold("a", "b", 5)
    assert commands(ledger, lambda: ledger.capture(part, 2)) == expected


def test_void_closes_the_hold_and_releases_it(ledger: Ledger) -> None:
    hold_id = ledger.hold("a", "b", 5)
    sent = commands(ledger, lambda: ledger.void(hold_id))
    assert sent == {"findAndModify": 1, "update": 1, "commitTransaction": 1}


def test_expire_holds_reads_one_batch_then_closes_each(ledger: Ledger) -> None:
    from datetime import datetime, timedelta, timezone

    for _ in range(3):
        ledger.hold("a", "b", 5, expires_at=timedelta(minutes=1))
    later = datetime.now(timezone.utc) + timedelta(minutes=2)
    sent = commands(ledger, lambda: ledger.expire_holds(later))
    assert sent == {"find": 1, "findAndModify": 3, "update": 3, "commitTransaction": 3}


def test_keyed_hold_and_capture_cost_one_read_and_one_insert_more(ledger: Ledger) -> None:
    sent = commands(ledger, lambda: ledger.hold("a", "b", 5, idempotency_key="h"))
    assert sent == {"find": 1, "findAndModify": 1, "insert": 2, "commitTransaction": 1}
    hold_id = ledger.hold("a", "b", 5)
    sent = commands(ledger, lambda: ledger.capture(hold_id, idempotency_key="c"))
    assert sent == {"find": 1, "findAndModify": 3, "insert": 2, "commitTransaction": 1}


def test_currencies_cost_no_extra_read_for_a_transfer(ledger: Ledger) -> None:
    fx = Ledger(ledger.database, currency_field="currency")
    eur_1 = fx.open_account({"user_id": 1, "currency": "EUR"})
    eur_2 = fx.open_account({"user_id": 2, "currency": "EUR"})
    fx.increase(eur_1, 10)
    fx.increase(eur_2, 10)
    sent = commands(fx, lambda: fx.transfer(eur_1, eur_2, 5))
    assert sent == {"findAndModify": 2, "insert": 1, "commitTransaction": 1}
    # a hold by _id reads its target once: its currency is not in the source's update
    sent = commands(fx, lambda: fx.hold(eur_1, eur_2, 5))
    assert sent == {"find": 1, "findAndModify": 1, "insert": 1, "commitTransaction": 1}
