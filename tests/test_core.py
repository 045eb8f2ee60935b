"""The I/O-free core, tested without a database."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone

import bson
import pytest
from bson import ObjectId

from mongoledger._core import clock, schema
from mongoledger._core.accounts import (
    AccountRef,
    account_creation,
    attributes_key,
    validate_account,
)
from mongoledger._core.amounts import validate_amount
from mongoledger._core.config import LedgerConfig
from mongoledger._core.data import validate_data
from mongoledger._core.dates import settle_date
from mongoledger._core.guards import below_floor, explain_refusal, kept_conflicting, leg_update
from mongoledger._core.idempotency import fingerprint
from mongoledger._core.indexes import (
    IndexSpec,
    QueryShape,
    index_definition,
    index_matches,
    index_plan,
    index_serves,
    index_specs,
    query_shapes,
)
from mongoledger._core.transactions import Leg, transaction_document, transaction_to_model
from mongoledger.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    InvalidConfiguration,
    InvalidData,
)


def test_validate_amount_accepts_int64_range() -> None:
    assert validate_amount(1) == 1
    assert validate_amount(-(2**63) + 1) == -(2**63) + 1
    assert validate_amount(2**63 - 1) == 2**63 - 1
    assert type(validate_amount(bson.Int64(5))) is int


@pytest.mark.parametrize("bad", [0, True, False, 1.0, "1", None, 2**63, -(2**63) - 1, -(2**63)])
def test_validate_amount_rejects(bad: object) -> None:
    with pytest.raises(InvalidAmount, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        validate_amount(bad)


def test_attributes_key_is_order_independent_and_type_sensitive() -> None:
    assert attributes_key({"a": 1, "b": "x"}) == attributes_key({"b": "x", "a": 1})
    assert attributes_key({"a": 1}) != attributes_key({"a": "1"})
    assert attributes_key({"a": 1}) != attributes_key({"a": 1, "b": 1})


ONE = [1, 1.0, bson.Int64(1), bson.Decimal128("1"), bson.Decimal128("1.000")]


@pytest.mark.parametrize("spelling", ONE)
def test_attributes_key_compares_numbers_by_value(spelling: object) -> None:
    """A query for ``{"a": 1}`` finds ``{"a": 1.0}``, ``Int64(1)``, ``Decimal128("1.0")``."""
    assert attributes_key({"a": spelling, "b": "x"}) == attributes_key({"a": 1, "b": "x"})


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),  # booleans are not numbers
        (False, 0),
        (0.1, bson.Decimal128("0.1")),  # the double is not exactly one tenth
        (2**53 + 1, float(2**53 + 1)),  # MongoDB compares int64 and double exactly
        (2**63 - 1, float(2**63)),
        (1, "1"),
    ],
)
def test_attributes_key_keeps_apart_what_mongodb_does(a: object, b: object) -> None:
    assert attributes_key({"a": a}) != attributes_key({"a": b})


def test_attributes_key_exact_values() -> None:
    key = attributes_key
    assert key({"a": -0.0}) == key({"a": 0}) == key({"a": bson.Decimal128("-0")})
    assert key({"a": 0.5}) == key({"a": bson.Decimal128("0.50")})
    assert key({"a": 2**53}) == key({"a": float(2**53)})
    # Strings, dates and the other types keep their encoding (keys of existing accounts).
    legacy = hashlib.sha256(bson.encode({"a": {"s": "x"}})).hexdigest()
    assert key({"s": "x"}) == legacy


def test_same_account_as_mongodb_compares() -> None:
    ref = validate_account
    assert ref({"a": 1}).same_account(ref({"a": bson.Int64(1)}))
    assert ref(1).same_account(ref(1.0))
    assert not ref(1).same_account(ref(True))
    assert not ref({"a": 1}).same_account(ref({"a": True}))
    assert not ref("1").same_account(ref({"a": "1"}))


def test_non_finite_decimal_attributes_are_refused() -> None:
    with pytest.raises(InvalidAccount, match="non-finite"):
        validate_account({"a": bson.Decimal128("NaN")})


def test_oversize_attribute_set_is_invalid_data() -> None:
    with pytest.raises(InvalidData, match="attribute set"):
        validate_account({"name": "x" * schema.MAX_DOCUMENT_SIZE})
    validate_account({"name": "x" * 1_000_000})  # large, but fits


def test_account_reference_forms() -> None:
    assert validate_account("x").id == "x"
    oid = ObjectId()
    assert validate_account(oid).id is oid
    ref = validate_account({"user_id": 7})
    assert ref.attributes == {"user_id": 7}
    assert ref.key == attributes_key({"user_id": 7})
    with pytest.raises(InvalidAccount, match="owns"):
        validate_account({"balance": 1}, owned={"balance"})


def test_config_rejects_colliding_and_unusable_names() -> None:
    with pytest.raises(InvalidConfiguration, match="amount_field='kind'"):
        LedgerConfig(amount_field="kind")
    with pytest.raises(InvalidConfiguration, match="also used"):
        LedgerConfig(amount_field="x", date_field="x")
    with pytest.raises(InvalidConfiguration, match=r"\$x"):
        LedgerConfig(date_field="$x")
    with pytest.raises(InvalidConfiguration, match=r"a\.b"):
        LedgerConfig(data_field="a.b")
    with pytest.raises(InvalidConfiguration, match="seq"):
        LedgerConfig(balance_field="seq")


def test_leg_update_guards_overflow_and_floor() -> None:
    cfg = LedgerConfig()
    when = datetime(2026, 1, 5, tzinfo=timezone.utc)
    credit = leg_update(cfg, AccountRef(id=1), 5, when)
    assert credit.filter == {"_id": 1, "balance": {"$lte": 2**63 - 1 - 5}}
    # The same update raises the account's last_date (what tells balance_at its shortcut).
    assert credit.update == {"$inc": {"seq": 1, "balance": 5}, "$max": {"last_date": when}}
    assert credit.projection == {"seq": 1, "balance": 1, "last_date": 1}
    debit = leg_update(cfg, AccountRef(id=1), -5, when)
    assert debit.filter["balance"] == {"$gte": -(2**63) + 5}
    assert "$or" in debit.filter
    flt, create = account_creation(cfg, AccountRef(attributes={"u": 1}, key="k"), 0)
    assert flt == {"attributes_key": "k"}
    assert create["$setOnInsert"]["balance"] == 0
    assert create["$setOnInsert"]["min_balance"] == 0


def _refused(cfg: LedgerConfig, amount: int, doc: dict[str, object], held: int = 0) -> Leg:
    leg = Leg(account=AccountRef(id=doc["_id"]), amount=amount, data={}, held=held)
    leg.account_id = doc["_id"]
    explain_refusal(cfg, leg, doc)
    return leg


def test_explain_refusal_names_what_the_guard_saw() -> None:
    cfg = LedgerConfig()
    account = {"_id": 1, "balance": 10, "min_balance": 0, "held": 4}
    with pytest.raises(InsufficientFunds) as info:  # available 6, not 7
        _refused(cfg, -7, account)
    assert (info.value.balance, info.value.held, info.value.available) == (10, 4, 6)
    assert "available balance 6 (balance 10, held 4) -7 would be -1" in str(info.value)
    with pytest.raises(InsufficientFunds):  # a hold of 7 is refused the same way
        _refused(cfg, 0, account, held=7)
    _refused(cfg, -6, account)  # the cause went away: nothing refuses it now
    _refused(cfg, 0, account, held=6)
    with pytest.raises(InvalidAmount, match="overflow the int64 balance"):
        _refused(cfg, 1, {**account, "balance": schema.INT64_MAX})
    with pytest.raises(InvalidAmount, match="overflow the int64 held sum"):
        _refused(cfg, 0, {**account, "held": schema.INT64_MAX}, held=1)
    with pytest.raises(InvalidAccount, match="no integer 'held'"):
        _refused(cfg, -1, {**account, "held": "4"})
    for bad in (None, 1.5, True):  # null would let a floor's $add pass any debit
        with pytest.raises(InvalidAccount, match="no integer 'held'"):
            _refused(cfg, -1, {**account, "held": bad})
        with pytest.raises(InvalidAccount, match="no integer 'held'"):
            _refused(cfg, 0, {**account, "held": bad}, held=1)
        with pytest.raises(InvalidAmount, match="overflow the int64 balance"):  # held unread
            _refused(cfg, 1, {**account, "held": bad, "balance": schema.INT64_MAX})
        _refused(cfg, -1, {**account, "held": bad, "min_balance": None})  # no floor to read it
    with pytest.raises(InvalidAccount, match="no integer 'balance'"):
        _refused(cfg, -1, {**account, "balance": 1.5})
    eur = LedgerConfig(currency_field="currency")
    leg = Leg(account=AccountRef(id=1), amount=-1, data={}, currency_guard=("USD", 2))
    with pytest.raises(CurrencyMismatch, match="'EUR'"):
        explain_refusal(eur, leg, {**account, "currency": "EUR"})


def test_below_floor_is_on_the_available_balance() -> None:
    assert below_floor(10, 4, 7)
    assert not below_floor(10, 3, 7)
    assert not below_floor(-5, 0, None)  # no floor
    assert "refused 5 times" in str(kept_conflicting("transfer", "account 'a'", 5))


def test_settle_date_keeps_each_accounts_dates_in_commit_order() -> None:
    day = [datetime(2026, 1, n, tzinfo=timezone.utc) for n in range(1, 12)]
    naive = day[5].replace(tzinfo=None)  # how a stored date comes back
    # The common path: every account carries the operation's date.
    assert settle_date(day[5], [("a", naive), ("b", naive)], chosen=True) == (day[5], [])
    # The ledger's "now" moves up to the latest date an account carries; the others follow.
    later = day[10].replace(tzinfo=None)
    assert settle_date(day[5], [("a", later), ("b", naive)], chosen=True) == (day[10], ["b"])
    # A date_value stays as given; the accounts it backdates are listed once each.
    moves = [("a", later), ("b", naive), ("a", later)]
    assert settle_date(day[5], moves, chosen=False) == (day[5], ["a"])


def test_transaction_document_shape() -> None:
    cfg = LedgerConfig()
    op = ObjectId()
    leg = Leg(
        account=AccountRef(id="a"),
        amount=-5,
        data={"note": "x"},
        extra_account_id="b",
        account_id="a",
        balance_after=10,
        account_seq=3,
    )
    doc = transaction_document(
        cfg,
        leg,
        index=0,
        count=2,
        kind="transfer",
        operation_id=op,
        date=datetime(2026, 1, 1),
        idempotency=("k", "h"),
    )
    assert doc == {
        "_id": leg.id,
        "account_id": "a",
        "amount": -5,
        "date": datetime(2026, 1, 1),
        "operation_id": op,
        "kind": "transfer",
        "leg": 0,
        "legs": 2,
        "account_seq": 3,
        "balance_after": 10,
        "extra_account_id": "b",
        "idempotency_key": "k",
        "idempotency_hash": "h",
        "note": "x",
    }
    model = transaction_to_model(cfg, doc)
    assert model.data == {"note": "x"}
    assert model.extra_account_id == "b"


def test_validate_data_copies_deeply() -> None:
    cfg = LedgerConfig()
    source = {"a": {"b": [1, {"c": 2}]}}
    copy = validate_data(cfg, source)
    copy["a"]["b"][1]["c"] = 3
    assert source["a"]["b"][1]["c"] == 2
    with pytest.raises(InvalidData, match=r"a\.b\[1\]"):
        validate_data(cfg, {"a": {"b": [1, {"$c": 1}]}})


def test_fingerprint_distinguishes_arguments() -> None:
    a, b = AccountRef(id="a"), AccountRef(attributes={"u": 1}, key="k")
    x1, x2 = {"x": 1}, {"x": 2}
    base = fingerprint("transfer", [(a, -5, x1), (b, 5, x1)])
    assert base == fingerprint("transfer", [(a, -5, {"x": 1}), (b, 5, {"x": 1})])
    assert base != fingerprint("transfer", [(a, -6, x1), (b, 6, x1)])
    assert base != fingerprint("transfer", [(a, -5, x2), (b, 5, x2)])
    assert base != fingerprint("transfer", [(a, -5, x1), (b, 5, x2)])  # one leg's data
    assert base != fingerprint("post", [(a, -5, x1), (b, 5, x1)])


def test_fingerprints_are_those_recorded_in_stored_idempotency_records() -> None:
    """Idempotency records keep the digest: this version's and the previous version's
    (``earlier``) must stay what they were, or a retry after an upgrade is a conflict."""
    args = [
        (validate_account({"user_id": bson.Int64(7), "type": "wallet"}), -5, {"tags": [2.0]}),
        (validate_account(ObjectId("64b000000000000000000001")), 5, {"n": {"b": 1, "a": 2}}),
    ]
    assert fingerprint("transfer", args) == (
        "17d31f6e10193f4957ff3dbf8e830e3c33d51f8e87d6fc4bb9fd78f716d9c291"
    )
    assert fingerprint("transfer", args, earlier=True) == (
        "91d324a330310c0692fce7e53cf515b2641ccb02fb63b5d65ef54ffd50736ea2"
    )


@pytest.mark.parametrize(
    "cfg",
    [
        LedgerConfig(),
        LedgerConfig(balance_field=None),
        LedgerConfig(account_link_field="acc", amount_field="delta", date_field="at"),
    ],
)
def test_every_query_shape_is_served_by_a_declared_index(cfg: LedgerConfig) -> None:
    specs = index_specs(cfg)
    for shape in query_shapes(cfg):
        serving = [s.name for s in specs if index_serves(s, shape)]
        assert serving, f"no index serves the {shape.name!r} query"


def test_index_serves_rejects_wrong_prefix() -> None:
    spec = IndexSpec("transactions", (("account_id", 1), ("account_seq", -1)), "x")
    assert not index_serves(spec, QueryShape("q", "transactions", ("date",)))
    assert not index_serves(spec, QueryShape("q", "accounts", ("account_id",)))
    assert not index_serves(spec, QueryShape("q", "transactions", ("account_id",), sort=("date",)))


def test_index_matches_what_list_indexes_returns() -> None:
    cfg = LedgerConfig()
    specs = {spec.name: spec for spec in index_specs(cfg)}
    seq = specs["ledger_account_seq"]
    listed = {"key": {"account_id": 1, "account_seq": -1}, "name": "mine", "v": 2}
    assert index_matches(seq, listed)  # under another name: it serves as well
    assert index_matches(seq, {**listed, "key": {"account_id": 1.0, "account_seq": -1.0}})
    assert not index_matches(seq, {**listed, "key": {"account_id": 1, "account_seq": 1}})
    assert not index_matches(seq, {**listed, "key": {"account_id": 1}})
    assert not index_matches(seq, {**listed, "unique": True})
    unique = specs["ledger_attributes_key"]
    listed = {
        "key": {"attributes_key": 1},
        "unique": True,
        "partialFilterExpression": {"attributes_key": {"$exists": True}},
    }
    assert index_matches(unique, listed)
    assert not index_matches(unique, {**listed, "unique": False})
    assert not index_matches(unique, {**listed, "partialFilterExpression": None})
    wildcard = specs["ledger_attributes"]
    projection = dict.fromkeys(wildcard.wildcard_projection or {}, False)
    assert index_matches(wildcard, {"key": {"$**": 1}, "wildcardProjection": projection})
    assert not index_matches(wildcard, {"key": {"$**": 1}, "wildcardProjection": {"a": 1}})
    assert index_matches(wildcard, {"key": {"$**": 1}})  # every field: it serves too
    assert "ledger_attributes_key" not in {
        s.name for s in index_specs(LedgerConfig(sharded_accounts=True))
    }


def test_index_plan_tells_missing_from_outdated() -> None:
    specs = [s for s in index_specs(LedgerConfig()) if s.collection == "accounts"]
    by_name = {s.name: s for s in specs}
    earlier = {"key": {"$**": 1}, "name": "ledger_attributes", "wildcardProjection": {"seq": 0}}
    mine = {"key": {"created_at": 1, "_id": 1}, "name": "by_age"}  # serves under my name
    taken = {"key": {"x": 1}, "name": "ledger_balance"}  # our name, other keys: a conflict
    missing, outdated = index_plan(specs, [earlier, mine, taken])
    assert outdated == [(by_name["ledger_attributes"], earlier)]
    assert [s.name for s in missing] == ["ledger_attributes_key", "ledger_balance"]
    assert index_definition(earlier) == {"key": {"$**": 1}, "wildcardProjection": {"seq": 0}}
    assert index_definition(by_name["ledger_attributes_key"]) == {
        "key": {"attributes_key": 1},
        "unique": True,
        "partialFilterExpression": {"attributes_key": {"$exists": True}},
    }


def test_the_clock_reads_now_in_utc_to_the_millisecond() -> None:
    before = datetime.now(timezone.utc)
    now = clock.utcnow()
    after = datetime.now(timezone.utc)
    assert now.tzinfo is timezone.utc
    assert now.microsecond % 1000 == 0
    assert before - timedelta(milliseconds=1) < now <= after


@pytest.mark.parametrize("seed", range(3))
def test_the_clock_truncates_to_exactly_the_millisecond(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole milliseconds over two centuries come back exact (no float rounding to .999)."""
    rng = random.Random(seed)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for _ in range(20_000):
        ns = rng.randrange(0, 230 * 365 * 86_400 * 10**9)  # up to the year 2200
        monkeypatch.setattr(clock, "_time_ns", lambda ns=ns: ns)
        assert clock.utcnow() == epoch + timedelta(milliseconds=ns // 1_000_000), ns
