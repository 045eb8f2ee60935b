"""Every query the ledger sends is served by an index that ``ensure_indexes`` declares.

A recording proxy captures the filter and sort of every read and guarded write the ledger
sends while it exercises its whole API; each must be served by a declared index (or the
implicit ``_id`` index). Only the deliberate whole-collection reads are exempt.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from mongoledger import Ledger
from mongoledger._core.config import LedgerConfig
from mongoledger._core.indexes import index_specs
from mongoledger.memory import MemoryClient

OPERATORS_THAT_BOUND = {"$lt", "$lte", "$gt", "$gte", "$eq", "$in"}


class RecordingCollection:
    def __init__(self, inner: Any, log: list[tuple[str, str, dict[str, Any], Any]]) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in ("find", "find_one", "find_one_and_update", "update_one", "count_documents"):
            # (find_one_and_update and update_one: the guarded writes and closing updates)

            def call(filter: Any = None, *args: Any, **kwargs: Any) -> Any:
                self._log.append((self._inner.name, name, dict(filter or {}), kwargs.get("sort")))
                result = attr(filter, *args, **kwargs)
                if name == "find":
                    return RecordingCursor(result, self._log, self._inner.name, dict(filter or {}))
                return result

            return call
        if name == "aggregate":

            def aggregate(pipeline: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
                match = pipeline[0].get("$match", {}) if pipeline else {}
                self._log.append((self._inner.name, "aggregate", dict(match), None))
                return attr(pipeline, *args, **kwargs)

            return aggregate
        return attr


class RecordingCursor:
    def __init__(self, inner: Any, log: list[Any], coll: str, flt: dict[str, Any]) -> None:
        self._inner, self._log, self._coll, self._flt = inner, log, coll, flt

    def sort(self, key: Any, direction: Any = None) -> RecordingCursor:
        spec = [(key, direction or 1)] if isinstance(key, str) else list(key)
        self._log.append((self._coll, "find.sort", self._flt, spec))
        self._inner = self._inner.sort(key, direction) if direction else self._inner.sort(key)
        return self

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in ("limit", "skip"):
            return lambda n: (setattr(self, "_inner", attr(n)), self)[1]
        return attr

    def __iter__(self) -> Any:
        return iter(self._inner)


class RecordingDatabase:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.log: list[tuple[str, str, dict[str, Any], Any]] = []

    def __getitem__(self, name: str) -> RecordingCollection:
        return RecordingCollection(self._inner[name], self.log)

    def get_collection(self, name: str, **options: Any) -> RecordingCollection:
        return RecordingCollection(self._inner.get_collection(name, **options), self.log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _served(cfg: LedgerConfig, coll: str, flt: dict[str, Any], sort: Any) -> bool:
    if set(flt) == {"$or"}:  # each branch must be served on its own (then merged in order)
        return all(_served(cfg, coll, branch, sort) for branch in flt["$or"])
    specs = [s for s in index_specs(cfg) if _collection(cfg, s.collection) == coll]
    bounded = {
        key
        for key, value in flt.items()
        if not key.startswith("$")
        and (
            not isinstance(value, dict)
            or bool(OPERATORS_THAT_BOUND & set(value))
            or value.get("$exists") is True  # served by a partial index on {$exists: true}
        )
    }
    if "_id" in bounded:
        return True
    sort_fields = [k for k, _ in sort] if sort else []
    if sort_fields and bounded and coll != cfg.accounts_collection:
        # Equality (or $in) fields first, in any order, then the sort field: an index scan
        # in order, no blocking sort. (Accounts filtered by attributes use the wildcard index.)
        equal = {
            key
            for key in bounded
            if not isinstance(flt[key], dict) or set(flt[key]) <= {"$eq", "$in"}
        }
        return any(
            {k for k, _ in spec.keys[: len(equal)]} == equal
            and len(spec.keys) > len(equal)
            and spec.keys[len(equal)][0] == sort_fields[0]
            for spec in specs
        )
    if sort_fields == ["_id"]:
        return True  # the implicit _id index
    if len(sort_fields) > 1 and not bounded:
        # A compound sort is an index scan only if the index has these fields in this order,
        # with every direction equal or every direction reversed.
        wanted = [d for _, d in sort]
        for spec in specs:
            keys = list(spec.keys)[: len(sort_fields)]
            if [k for k, _ in keys] == sort_fields:
                dirs = [d for _, d in keys]
                if dirs == wanted or dirs == [-d for d in wanted]:
                    return True
        return False
    owned = cfg.owned_account_fields
    for spec in specs:
        leading = spec.keys[0][0]
        if leading == "$**":
            if coll == cfg.accounts_collection and bounded and not (bounded & owned):
                return True
            continue
        if leading in bounded or (not bounded and sort_fields and leading == sort_fields[0]):
            return True
    return False


def _collection(cfg: LedgerConfig, name: str) -> str:
    return {
        "accounts": cfg.accounts_collection,
        "transactions": cfg.transactions_collection,
        "holds": cfg.holds_collection,
        "idempotency": cfg.idempotency_collection,
    }[name]


def test_every_query_sent_is_served_by_a_declared_index() -> None:
    db = RecordingDatabase(MemoryClient()["test"])
    ledger = Ledger(db)
    wallet = ledger.open_account({"user_id": 1}, min_balance=0)
    ledger.increase(wallet, 100, idempotency_key="k1")
    ledger.increase({"user_id": 2}, 5)
    ids = ledger.transfer({"user_id": 1}, {"user_id": 2}, 10)
    ledger.post([(wallet, -3), ("x", 2), ("y", 1)])
    ledger.revert(ids[1], idempotency_key="k2")
    ledger.decrease("x", 1)
    ledger.balance(wallet)
    ledger.calculate_balance({"user_id": 2})
    ledger.balance_at(wallet, datetime(2100, 1, 1))
    ledger.history(wallet, start=datetime(2000, 1, 1), limit=2, before_seq=10)
    ledger.get_account({"user_id": 2})
    ledger.get_transaction(ids[0])
    ledger.statistics(wallet, period="day")
    ledger.statistics(start=datetime(2000, 1, 1))
    ledger.report(sort="-balance", limit=5)
    ledger.report(sort="created_at")
    ledger.report(sort="-id")
    ledger.statistics(wallet, timezone="Europe/Paris")
    ledger.statistics(timezone="Asia/Tokyo", end=datetime(2100, 1, 1))
    dated = Ledger(db, date_value=lambda: datetime(2000, 1, 1))  # a backdated entry
    dated.increase(wallet, 1)
    dated.balance_at(wallet, datetime(2050, 1, 1))  # the aggregation path
    # holds: every step, the listings, the sweep, verify's checks
    held = ledger.hold(wallet, {"user_id": 2}, 10, expires_at=timedelta(minutes=1))
    ledger.capture(held, 5)
    voided = ledger.hold({"user_id": 1}, "x", 1, idempotency_key="k3")
    ledger.void(voided)
    ledger.hold(wallet, "y", 1, expires_at=timedelta(minutes=1))
    ledger.hold("x", wallet, 1)
    ledger.expire_holds(datetime.now(timezone.utc) + timedelta(minutes=2))
    ledger.get_hold(held)
    ledger.holds(wallet)
    ledger.holds({"user_id": 2}, status=None, limit=3)
    ledger.holds(status="captured")
    ledger.holds(status=["voided", "expired"])
    ledger.available_balance(wallet)
    ledger.verify()
    assert_all_served(db, ledger)


def test_currency_queries_are_served_too() -> None:
    db = RecordingDatabase(MemoryClient()["test"])
    ledger = Ledger(db, currency_field="currency")
    eur = ledger.open_account({"user_id": 1, "currency": "EUR"})
    ledger.transfer(eur, {"user_id": 2, "currency": "EUR"}, 5)
    ledger.hold(eur, {"user_id": 2, "currency": "EUR"}, 1)
    ledger.statistics(currency="EUR", start=datetime(2000, 1, 1))
    ledger.report(currency="EUR", sort="-balance", limit=5)
    assert_all_served(db, ledger, minimum=5)


def assert_all_served(db: RecordingDatabase, ledger: Ledger, minimum: int = 30) -> None:
    cfg = ledger.config
    exempt = []
    unserved = []
    for coll, op, flt, sort in db.log:
        if not flt and not sort:
            exempt.append((coll, op))  # verify and full reports read whole collections on purpose
            continue
        if not _served(cfg, coll, flt, sort):
            unserved.append((coll, op, flt, sort))
    assert not unserved
    assert len(db.log) > minimum
    assert {op for _, op in exempt} <= {"find", "aggregate"}
