"""The I/O-free core, tested without a database."""

from __future__ import annotations

from datetime import datetime, timezone

import bson
import pytest
from bson import ObjectId

from mongoledger import _core
from mongoledger._core import AccountRef, LedgerConfig, Leg
from mongoledger.errors import InvalidAccount, InvalidAmount, InvalidConfiguration, InvalidData


def test_validate_amount_accepts_int64_range() -> None:
    assert _core.validate_amount(1) == 1
    assert _core.validate_amount(-(2**63)) == -(2**63)
    assert _core.validate_amount(2**63 - 1) == 2**63 - 1
    assert type(_core.validate_amount(bson.Int64(5))) is int


@pytest.mark.parametrize("bad", [0, True, False, 1.0, "1", None, 2**63, -(2**63) - 1])
def test_validate_amount_rejects(bad: object) -> None:
    with pytest.raises(InvalidAmount, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        _core.validate_amount(bad)


def test_attributes_key_is_order_independent_and_type_sensitive() -> None:
    assert _core.attributes_key({"a": 1, "b": "x"}) == _core.attributes_key({"b": "x", "a": 1})
    assert _core.attributes_key({"a": 1}) != _core.attributes_key({"a": "1"})
    assert _core.attributes_key({"a": 1}) != _core.attributes_key({"a": 1, "b": 1})


def test_account_reference_forms() -> None:
    assert _core.validate_account("x").id == "x"
    oid = ObjectId()
    assert _core.validate_account(oid).id is oid
    ref = _core.validate_account({"user_id": 7})
    assert ref.attributes == {"user_id": 7}
    assert ref.key == _core.attributes_key({"user_id": 7})
    with pytest.raises(InvalidAccount, match="owns"):
        _core.validate_account({"balance": 1}, owned={"balance"})


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
    credit = _core.leg_update(cfg, AccountRef(id=1), 5, when)
    assert credit.filter == {"_id": 1, "balance": {"$lte": 2**63 - 1 - 5}}
    # The same update raises the account's last_date (what tells balance_at its shortcut).
    assert credit.update == {"$inc": {"seq": 1, "balance": 5}, "$max": {"last_date": when}}
    assert credit.projection == {"seq": 1, "balance": 1, "last_date": 1}
    debit = _core.leg_update(cfg, AccountRef(id=1), -5, when)
    assert debit.filter["balance"] == {"$gte": -(2**63) + 5}
    assert "$or" in debit.filter
    flt, create = _core.account_creation(cfg, AccountRef(attributes={"u": 1}, key="k"), 0)
    assert flt == {"attributes_key": "k"}
    assert create["$setOnInsert"]["balance"] == 0
    assert create["$setOnInsert"]["min_balance"] == 0


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
    doc = _core.transaction_document(
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
    model = _core.transaction_to_model(cfg, doc)
    assert model.data == {"note": "x"}
    assert model.extra_account_id == "b"


def test_validate_data_copies_deeply() -> None:
    cfg = LedgerConfig()
    source = {"a": {"b": [1, {"c": 2}]}}
    copy = _core.validate_data(cfg, source)
    copy["a"]["b"][1]["c"] = 3
    assert source["a"]["b"][1]["c"] == 2
    with pytest.raises(InvalidData, match=r"a\.b\[1\]"):
        _core.validate_data(cfg, {"a": {"b": [1, {"$c": 1}]}})


def test_fingerprint_distinguishes_arguments() -> None:
    a, b = AccountRef(id="a"), AccountRef(attributes={"u": 1}, key="k")
    x1, x2 = {"x": 1}, {"x": 2}
    base = _core.fingerprint("transfer", [(a, -5, x1), (b, 5, x1)])
    assert base == _core.fingerprint("transfer", [(a, -5, {"x": 1}), (b, 5, {"x": 1})])
    assert base != _core.fingerprint("transfer", [(a, -6, x1), (b, 6, x1)])
    assert base != _core.fingerprint("transfer", [(a, -5, x2), (b, 5, x2)])
    assert base != _core.fingerprint("transfer", [(a, -5, x1), (b, 5, x2)])  # one leg's data
    assert base != _core.fingerprint("post", [(a, -5, x1), (b, 5, x1)])


@pytest.mark.parametrize(
    "cfg",
    [
        LedgerConfig(),
        LedgerConfig(balance_field=None),
        LedgerConfig(account_link_field="acc", amount_field="delta", date_field="at"),
    ],
)
def test_every_query_shape_is_served_by_a_declared_index(cfg: LedgerConfig) -> None:
    specs = _core.index_specs(cfg)
    for shape in _core.query_shapes(cfg):
        serving = [s.name for s in specs if _core.index_serves(s, shape)]
        assert serving, f"no index serves the {shape.name!r} query"


def test_index_serves_rejects_wrong_prefix() -> None:
    spec = _core.IndexSpec("transactions", (("account_id", 1), ("account_seq", -1)), "x")
    assert not _core.index_serves(spec, _core.QueryShape("q", "transactions", ("date",)))
    assert not _core.index_serves(spec, _core.QueryShape("q", "accounts", ("account_id",)))
    assert not _core.index_serves(
        spec, _core.QueryShape("q", "transactions", ("account_id",), sort=("date",))
    )
