"""The I/O-free side of holds and currencies: guards, documents, diagnosis, events (no database)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from bson import Int64, ObjectId
from hypothesis import given
from hypothesis import strategies as st
from mongomock import filtering

from mongoledger import (
    CurrencyMismatch,
    HoldClosed,
    HoldExpired,
    HoldNotFound,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
)
from mongoledger._core.accounts import AccountRef
from mongoledger._core.audit import check_captures, held_sums
from mongoledger._core.config import LedgerConfig
from mongoledger._core.currencies import check_currencies
from mongoledger._core.events import Grouper, change_stream_pipeline
from mongoledger._core.guards import leg_update
from mongoledger._core.holds import (
    capture_update,
    closing_filter,
    diagnose,
    expiry_fingerprint,
    hold_document,
    hold_to_model,
    holds_query,
    reopen,
    validate_expiry,
    validate_hold_id,
    validate_statuses,
    void_update,
)
from mongoledger._core.transactions import Leg
from mongoledger.memory._match import match as fast_match

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CFG = LedgerConfig()
INT64 = st.integers(min_value=-(2**40), max_value=2**40)


# The guarded update: the floor applies to the available balance


def guard_matches(doc: dict[str, Any], amount: int, held: int) -> bool:
    """mongomock's verdict (the reference), which the memory engine's fast path must share
    without falling back: every write sends this filter."""
    update = leg_update(CFG, AccountRef(id=1), amount, NOW, held=held)
    reference = bool(filtering.filter_applies(update.filter, {"_id": 1, **doc}))
    assert fast_match(update.filter, {"_id": 1, **doc}) is reference
    return reference


@given(
    balance=INT64,
    cached_held=st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)),
    floor=st.one_of(st.none(), INT64),
    amount=INT64,
    held=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_the_guard_is_balance_minus_held_against_the_floor(
    balance: int, cached_held: int | None, floor: int | None, amount: int, held: int
) -> None:
    doc: dict[str, Any] = {"balance": Int64(balance)}
    if cached_held is not None:  # accounts without holds have no held field
        doc["held"] = Int64(cached_held)
    if floor is not None:
        doc["min_balance"] = Int64(floor)
    change = amount - held  # what the leg does to the available balance
    available_after = balance + amount - ((cached_held or 0) + held)
    expected = floor is None or change >= 0 or available_after >= floor
    assert guard_matches(doc, amount, held) is expected


def test_a_missing_held_field_is_zero() -> None:
    doc = {"balance": Int64(10), "min_balance": Int64(0)}
    assert guard_matches(doc, -10, 0)
    assert not guard_matches(doc, -11, 0)
    assert guard_matches(doc, 0, 10)  # a hold of all of it
    assert not guard_matches(doc, 0, 11)


def test_the_update_moves_balance_held_and_sequence() -> None:
    hold = leg_update(CFG, AccountRef(id=1), 0, NOW, held=5)
    # a hold is not a leg: no sequence number, no date
    assert hold.update == {"$inc": {"held": 5}}
    capture = leg_update(CFG, AccountRef(id=1), -3, NOW, held=-5)
    assert capture.update == {
        "$inc": {"seq": 1, "held": -5, "balance": -3},
        "$max": {"last_date": NOW},
    }
    assert "$or" not in capture.filter  # releasing 5 to pay 3 never lowers the available
    overflow = leg_update(CFG, AccountRef(id=1), 0, NOW, held=5)
    assert not filtering.filter_applies(overflow.filter, {"_id": 1, "held": Int64(2**63 - 3)})
    assert filtering.filter_applies(overflow.filter, {"_id": 1, "held": Int64(2**63 - 6)})


# Arguments


def test_expiry_forms_and_refusals() -> None:
    assert validate_expiry(None, NOW) is None
    assert validate_expiry(timedelta(minutes=5), NOW) == NOW + timedelta(minutes=5)
    naive = datetime(2026, 6, 1, 13, 0, 0, 999_999)
    assert validate_expiry(naive, NOW) == datetime(
        2026, 6, 1, 13, 0, 0, 999_000, tzinfo=timezone.utc
    )
    for bad in ("2030-01-01", 5, date(2030, 1, 1), True, NOW, timedelta(0)):
        with pytest.raises(InvalidArgument, match="expires_at"):
            validate_expiry(bad, NOW)
    assert expiry_fingerprint(timedelta(seconds=2)) == {"in_ms": 2000}
    assert expiry_fingerprint(naive) == expiry_fingerprint(naive.replace(tzinfo=timezone.utc))


def test_statuses_and_ids() -> None:
    assert validate_statuses(None) == ["pending", "captured", "voided", "expired"]
    assert validate_statuses(["voided", "voided"]) == ["voided"]
    for bad in ("open", [], ["pending", 1], 3):
        with pytest.raises(InvalidArgument):
            validate_statuses(bad)
    oid = ObjectId()
    assert validate_hold_id(str(oid)) == oid
    with pytest.raises(HoldNotFound, match="not a hold id"):
        validate_hold_id("x" * 24)


# Diagnosis of a closing update that matched nothing


def test_diagnosis_names_the_reason() -> None:
    hid = ObjectId()
    pending = {"_id": hid, "status": "pending", "amount": Int64(50)}
    with pytest.raises(HoldNotFound):
        diagnose(None, hid, NOW)
    for status in ("captured", "voided"):
        with pytest.raises(HoldClosed, match=status) as info:
            diagnose({**pending, "status": status}, hid, NOW)
        assert not isinstance(info.value, HoldExpired)
    with pytest.raises(HoldExpired):
        diagnose({**pending, "status": "expired"}, hid, NOW)
    due = {**pending, "expires_at": NOW.replace(tzinfo=None)}  # as PyMongo returns it
    with pytest.raises(HoldExpired):
        diagnose(due, hid, NOW)
    with pytest.raises(InvalidAmount, match="51 exceeds"):
        diagnose(pending, hid, NOW, 51)
    diagnose(pending, hid, NOW, 50)  # pending after all: the caller retries


def test_closing_filters_and_updates() -> None:
    hid, op = ObjectId(), ObjectId()
    flt = closing_filter(hid, NOW, amount=5)
    live = {"_id": hid, "status": "pending", "amount": 5}
    assert filtering.filter_applies(flt, live)
    assert filtering.filter_applies(flt, {**live, "expires_at": NOW + timedelta(seconds=1)})
    assert not filtering.filter_applies(flt, {**live, "expires_at": NOW})
    assert not filtering.filter_applies(flt, {**live, "amount": 4})
    assert not filtering.filter_applies(flt, {**live, "status": "voided"})
    update = capture_update(None, NOW, op)
    assert update[0]["$set"]["captured_amount"] == "$amount"
    assert capture_update(7, NOW, op)[0]["$set"]["captured_amount"] == {"$literal": 7}
    assert void_update({}, NOW, op) == {
        "$set": {"status": "voided", "closed_at": NOW, "operation_id": op}
    }
    flt, undo = reopen(hid, "voided", op)
    assert flt == {"_id": hid, "status": "voided", "operation_id": op}
    assert set(undo["$unset"]) == {"captured_amount", "closed_at", "operation_id", "void_data"}


def test_hold_documents_follow_the_data_and_currency_options() -> None:
    cfg = LedgerConfig(data_field="data", currency_field="currency")
    hid = ObjectId()
    doc = hold_document(
        cfg,
        hid,
        from_account_id=1,
        to_account_id=2,
        amount=5,
        expires_at=None,
        created_at=NOW,
        data={"status": "mine"},  # nested: any name
        idempotency=("k", "h"),
        currency="EUR",
    )
    assert doc["data"] == {"status": "mine"}
    assert (doc["status"], doc["currency"], doc["idempotency_key"]) == ("pending", "EUR", "k")
    hold = hold_to_model(cfg, {**doc, "created_at": NOW.replace(tzinfo=None)})
    assert (hold.data, hold.currency, hold.created_at) == ({"status": "mine"}, "EUR", NOW)
    assert holds_query(None, ["pending"]) == {"status": "pending"}
    assert holds_query(7, ["voided", "expired"])["$or"][1] == {
        "to_account_id": 7,
        "status": {"$in": ["voided", "expired"]},
    }


# Errors


def test_error_messages_name_the_values() -> None:
    err = InsufficientFunds("w", 100, -31, 0, held=70)
    assert "available balance 30 (balance 100, held 70) -31 would be -1" in str(err)
    assert "available" not in str(InsufficientFunds("w", 5, -6, 0))
    mismatch = CurrencyMismatch({"a": "EUR", "b": None}, "currency")
    assert "account 'a' in 'EUR'" in str(mismatch)
    assert "account 'b' with no 'currency'" in str(mismatch)


def test_currency_check_of_the_legs() -> None:
    cfg = LedgerConfig(currency_field="currency")
    legs = [Leg(account=AccountRef(id=i), amount=1, data={}, account_id=i) for i in (1, 2)]
    legs[0].currency = legs[1].currency = "EUR"
    check_currencies(cfg, legs)
    legs[1].currency = "USD"
    with pytest.raises(CurrencyMismatch, match="'USD'"):
        check_currencies(cfg, legs)
    check_currencies(CFG, legs)  # no currency_field: nothing to check


# Change-stream events of holds


def change(op: str, coll: str, token: int, **fields: Any) -> dict[str, Any]:
    return {
        "_id": {"_data": f"{token:04d}"},
        "operationType": op,
        "ns": {"db": "test", "coll": coll},
        "wallTime": NOW,
        **fields,
    }


def test_the_pipeline_drops_other_collections_before_any_lookup() -> None:
    first, _ = change_stream_pipeline(CFG, account_ids=None, kinds=None)
    assert "fullDocument" not in str(first)  # no post-image needed to decide
    assert first["$match"]["$or"][0] == {"ns.coll": {"$in": ["transactions", "holds"]}}
    voids = change_stream_pipeline(CFG, account_ids=None, kinds=["void"])[1]
    branches = voids["$match"]["$or"]
    assert {"ns.coll": "transactions", "operationType": "insert"} not in branches
    assert branches[0]["updateDescription.updatedFields.status"] == {"$in": ["voided"]}


def test_grouper_turns_hold_steps_into_events() -> None:
    grouper = Grouper(CFG)
    hid, op = ObjectId(), ObjectId()
    hold = {"_id": hid, "from_account_id": 1, "to_account_id": 2, "amount": 9}
    done = grouper.feed(
        change(
            "insert",
            "holds",
            1,
            fullDocument={**hold, "status": "pending"},
            documentKey={"_id": hid},
        )
    )
    assert done is not None
    event = grouper.event(done[1], {"_data": "0001"})
    assert (event.kind, event.operation_id, event.transactions) == ("hold", hid, [])
    assert event.account_ids == [1, 2]
    # a capture: the hold's update first, then its legs, all one event
    captured = {**hold, "status": "captured", "captured_amount": 9, "operation_id": op}
    update = {"updatedFields": {"status": "captured", "operation_id": op}}
    assert (
        grouper.feed(
            change(
                "update",
                "holds",
                2,
                fullDocument=captured,
                updateDescription=update,
                documentKey={"_id": hid},
            )
        )
        is None
    )
    assert grouper.safe_token({"_data": "0002"}) == {"_data": "0001"}  # before the capture
    legs = [
        {
            "_id": ObjectId(),
            "account_id": a,
            "amount": Int64(n),
            "operation_id": op,
            "kind": "capture",
            "leg": i,
            "legs": 2,
            "hold_id": hid,
        }
        for i, (a, n) in enumerate([(1, -9), (2, 9)])
    ]
    assert grouper.feed(change("insert", "transactions", 3, fullDocument=legs[0])) is None
    done = grouper.feed(change("insert", "transactions", 4, fullDocument=legs[1]))
    assert done is not None
    event = grouper.event(done[1], {"_data": "0004"})
    assert (event.kind, event.hold_id, len(event.transactions)) == ("capture", hid, 2)
    assert event.hold is not None
    assert event.hold.captured_amount == 9
    # a void of a hold deleted since: the event still names it
    gone = {"updatedFields": {"status": "voided", "operation_id": op}}
    done = grouper.feed(
        change(
            "update",
            "holds",
            5,
            fullDocument=None,
            updateDescription=gone,
            documentKey={"_id": hid},
        )
    )
    assert done is not None
    event = grouper.event(done[1], None)
    assert (event.kind, event.hold_id, event.hold, event.operation_id) == ("void", hid, None, op)
    other = {"updatedFields": {"note": "x"}}
    assert grouper.feed(change("update", "holds", 6, updateDescription=other)) is None
    # a server may log a pipeline update as a replacement: the same event
    expired = {**hold, "_id": ObjectId(), "status": "expired", "operation_id": ObjectId()}
    done = grouper.feed(
        change("replace", "holds", 7, fullDocument=expired, documentKey={"_id": expired["_id"]})
    )
    assert done is not None
    assert grouper.event(done[1], None).kind == "expire"


def test_captured_holds_and_their_legs() -> None:
    hid, op = ObjectId(), ObjectId()
    ok = check_captures([{"_id": hid, "operation_id": op}], [{"_id": hid, "operations": [op]}])
    assert ok == []
    (never,) = check_captures([{"_id": hid, "operation_id": op}], [])
    assert "no transactions" in never.problem
    (stray,) = check_captures([], [{"_id": hid, "operations": [op]}])
    assert "not captured by that operation" in stray.problem


def test_held_sums_give_every_account_what_its_held_must_be() -> None:
    """Zero without pending holds, None past int64 (verify reports it, never truncates), and
    nothing for holds of an account that does not exist (verify reports those apart)."""
    a, b, c, gone = ObjectId(), ObjectId(), ObjectId(), ObjectId()
    pending = {
        repr(a): {"_id": a, "held": Int64(7), "count": 2},
        repr(c): {"_id": c, "held": 2**63, "count": 2},
        repr(gone): {"_id": gone, "held": 3, "count": 1},
    }
    sums = held_sums([{"_id": a}, {"_id": b}, {"_id": c}], pending)
    assert sums == {repr(a): 7, repr(b): 0, repr(c): None}
