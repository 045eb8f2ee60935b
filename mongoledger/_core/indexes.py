"""Indexes: every index the ledger's queries need (:func:`index_specs`), how an index that
``listIndexes`` returns is recognised as one of them, and the query shapes the ledger sends,
with the rule that decides whether an index serves one (a test holds every query to it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mongoledger._core.config import LedgerConfig
from mongoledger._core.schema import (
    ACCOUNT_SEQ,
    ATTRIBUTES_KEY,
    CREATED_AT,
    EXPIRES_AT,
    FROM_ACCOUNT_ID,
    HOLD_ID,
    LEG,
    OPERATION_ID,
    REVERTED_BY,
    REVERTS,
    STATUS,
    TO_ACCOUNT_ID,
)

__all__ = [
    "IndexSpec",
    "QueryShape",
    "index_definition",
    "index_matches",
    "index_plan",
    "index_serves",
    "index_specs",
    "query_shapes",
]


@dataclass(frozen=True)
class IndexSpec:
    collection: str  # "accounts" | "transactions" | "idempotency" | "holds"
    keys: tuple[tuple[str, int | str], ...]
    name: str
    unique: bool = False
    partial: dict[str, Any] | None = None
    wildcard_projection: dict[str, int] | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.unique:
            out["unique"] = True
        if self.partial is not None:
            out["partialFilterExpression"] = self.partial
        if self.wildcard_projection is not None:
            out["wildcardProjection"] = self.wildcard_projection
        return out


def index_matches(spec: IndexSpec, index: Mapping[str, Any]) -> bool:
    """Whether an index ``listIndexes`` returned is ``spec`` (keys and options; its name may
    differ): then ``ensure_indexes`` does not ask the server to create it."""
    return (
        _same_keys(spec, index)
        and bool(index.get("unique")) == spec.unique
        and index.get("partialFilterExpression") == spec.partial
        and (
            spec.wildcard_projection is None
            # A wildcard index over every field serves attribute lookups as well.
            or "wildcardProjection" not in index
            or _same_projection(index["wildcardProjection"], spec.wildcard_projection)
        )
    )


def index_plan(
    specs: Sequence[IndexSpec], existing: Sequence[Mapping[str, Any]]
) -> tuple[list[IndexSpec], list[tuple[IndexSpec, Mapping[str, Any]]]]:
    """What ``ensure_indexes`` must do on a collection whose indexes are ``existing`` (as
    ``listIndexes`` returns them): the specs no index serves yet (to create), and the outdated
    ones: an index holds the spec's name and keys with other options (the ledger owns its
    index names, all ``ledger_...``: an earlier version created it, e.g. a wildcard index
    before this version's ``wildcardProjection``). An index under the spec's name with other
    keys is neither: creating the spec then fails, naming the conflict."""
    missing: list[IndexSpec] = []
    outdated: list[tuple[IndexSpec, Mapping[str, Any]]] = []
    for spec in specs:
        if any(index_matches(spec, index) for index in existing):
            continue
        named = next((index for index in existing if index.get("name") == spec.name), None)
        if named is not None and _same_keys(spec, named):
            outdated.append((spec, named))
        else:
            missing.append(spec)
    return missing, outdated


_OPTIONS = ("unique", "partialFilterExpression", "wildcardProjection")


def index_definition(index: IndexSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The keys and options of a spec or of a listed index, for messages."""
    if isinstance(index, IndexSpec):
        options = index.kwargs()
        keys = dict(index.keys)
    else:
        options = dict(index)
        keys = dict(index.get("key") or {})
    return {"key": keys, **{k: options[k] for k in _OPTIONS if k in options}}


def _same_keys(spec: IndexSpec, index: Mapping[str, Any]) -> bool:
    keys = list(dict(index.get("key") or {}).items())
    return len(keys) == len(spec.keys) and all(
        name == want_name and _same_direction(direction, want)
        for (name, direction), (want_name, want) in zip(keys, spec.keys, strict=True)
    )


def _same_direction(got: Any, want: int | str) -> bool:
    if isinstance(want, str) or isinstance(got, str | bool):
        return bool(got == want)
    return isinstance(got, int | float) and got == want


def _same_projection(got: Any, want: Mapping[str, int]) -> bool:
    """A server may list a wildcard projection's 0s as ``false``."""
    return isinstance(got, Mapping) and {k: int(v) for k, v in got.items()} == dict(want)


def index_specs(cfg: LedgerConfig) -> list[IndexSpec]:
    """Every index the ledger's queries need (see ``QUERY_SHAPES``)."""
    acc, date = cfg.account_link_field, cfg.date_field
    specs = [
        IndexSpec("transactions", ((acc, 1), (ACCOUNT_SEQ, -1)), "ledger_account_seq"),
        IndexSpec("transactions", ((acc, 1), (date, 1)), "ledger_account_date"),
        IndexSpec("transactions", ((OPERATION_ID, 1), (LEG, 1)), "ledger_operation"),
        IndexSpec("transactions", ((date, 1),), "ledger_date"),
        # Keys live in their own collection, unique by _id: that works on a sharded cluster,
        # where a unique index on the transactions would need their shard key as its prefix.
        # This index also creates the collection before the first DB transaction inserts.
        IndexSpec("idempotency", ((CREATED_AT, 1),), "ledger_idempotency_created"),
        # verify() reads every revert link: sparse indexes keep that proportional to reverts.
        IndexSpec(
            "transactions", ((REVERTS, 1),), "ledger_reverts", partial={REVERTS: {"$exists": True}}
        ),
        IndexSpec(
            "transactions",
            ((REVERTED_BY, 1),),
            "ledger_reverted_by",
            partial={REVERTED_BY: {"$exists": True}},
        ),
        # Attribute-set lookups query arbitrary fields: one wildcard index serves them all.
        IndexSpec(
            "accounts",
            (("$**", 1),),
            "ledger_attributes",
            wildcard_projection=dict.fromkeys(sorted(cfg.owned_account_fields - {"_id"}), 0),
        ),
    ]
    if not cfg.sharded_accounts:
        specs.append(
            IndexSpec(
                "accounts",
                ((ATTRIBUTES_KEY, 1),),
                "ledger_attributes_key",
                unique=True,
                partial={ATTRIBUTES_KEY: {"$exists": True}},
            )
        )
    if cfg.balance_field:
        specs.append(IndexSpec("accounts", ((cfg.balance_field, 1), ("_id", 1)), "ledger_balance"))
    specs.append(IndexSpec("accounts", ((CREATED_AT, 1), ("_id", 1)), "ledger_created_at"))
    # A capture's legs name their hold: verify matches captured holds with their legs.
    specs.append(
        IndexSpec(
            "transactions",
            ((HOLD_ID, 1),),
            "ledger_hold_legs",
            partial={HOLD_ID: {"$exists": True}},
        )
    )
    if cfg.currency_field:
        specs.append(
            IndexSpec("transactions", ((cfg.currency_field, 1), (date, 1)), "ledger_currency_date")
        )
    # Holds: an account's holds (as source or target) by status, newest first; every hold of
    # a status; the expiry sweep (pending, oldest expires_at first) and verify's pending sums.
    page = ((STATUS, 1), (CREATED_AT, 1), ("_id", 1))
    specs += [
        IndexSpec("holds", ((FROM_ACCOUNT_ID, 1), *page), "ledger_holds_from"),
        IndexSpec("holds", ((TO_ACCOUNT_ID, 1), *page), "ledger_holds_to"),
        IndexSpec("holds", page, "ledger_holds_status"),
        IndexSpec("holds", ((STATUS, 1), (EXPIRES_AT, 1)), "ledger_holds_expiry"),
    ]
    return specs


@dataclass(frozen=True)
class QueryShape:
    """A query the ledger sends: equality fields, then range fields, then the sort."""

    name: str
    collection: str
    equality: tuple[str, ...]
    sort: tuple[str, ...] = ()
    range: tuple[str, ...] = ()
    attribute_lookup: bool = False


def query_shapes(cfg: LedgerConfig) -> list[QueryShape]:
    acc, date = cfg.account_link_field, cfg.date_field
    shapes = [
        QueryShape("history", "transactions", (acc,), sort=(ACCOUNT_SEQ,), range=(ACCOUNT_SEQ,)),
        QueryShape("history by date", "transactions", (acc,), sort=(ACCOUNT_SEQ,)),
        QueryShape("balance_at", "transactions", (acc,), sort=(ACCOUNT_SEQ,)),
        QueryShape("calculate_balance", "transactions", (acc,)),
        QueryShape("balance_at of a backdated account", "transactions", (acc,), range=(date,)),
        QueryShape("account statistics", "transactions", (acc,), range=(date,)),
        QueryShape("statistics", "transactions", (), range=(date,)),
        QueryShape("account statistics bounds", "transactions", (acc,), sort=(date,)),
        QueryShape("statistics bounds", "transactions", (), sort=(date,)),
        QueryShape("operation legs", "transactions", (OPERATION_ID,), sort=(LEG,)),
        QueryShape("idempotency", "idempotency", ("_id",)),
        QueryShape("revert links", "transactions", (), range=(REVERTS,)),
        QueryShape("reverted links", "transactions", (), range=(REVERTED_BY,)),
        QueryShape("account by id", "accounts", ("_id",)),
        QueryShape("account by attributes", "accounts", (), attribute_lookup=True),
    ]
    if not cfg.sharded_accounts:  # there the digest is the _id
        shapes.append(QueryShape("account by key", "accounts", (ATTRIBUTES_KEY,)))
    if cfg.balance_field:
        shapes.append(QueryShape("report by balance", "accounts", (), sort=(cfg.balance_field,)))
    shapes.append(QueryShape("report by creation", "accounts", (), sort=(CREATED_AT,)))
    shapes.append(QueryShape("capture legs", "transactions", (), range=(HOLD_ID,)))
    if cfg.currency_field:
        shapes.append(
            QueryShape(
                "statistics by currency", "transactions", (cfg.currency_field,), range=(date,)
            )
        )
    shapes += [
        QueryShape("hold by id", "holds", ("_id",)),
        QueryShape("holds from an account", "holds", (FROM_ACCOUNT_ID, STATUS), sort=(CREATED_AT,)),
        QueryShape("holds to an account", "holds", (TO_ACCOUNT_ID, STATUS), sort=(CREATED_AT,)),
        QueryShape("holds by status", "holds", (STATUS,), sort=(CREATED_AT,)),
        QueryShape("expiry sweep", "holds", (STATUS,), sort=(EXPIRES_AT,), range=(EXPIRES_AT,)),
        QueryShape("pending holds per account", "holds", (STATUS,)),
    ]
    return shapes


def index_serves(spec: IndexSpec, shape: QueryShape) -> bool:
    """Whether ``spec`` can serve ``shape`` (equality prefix, then a sort or range field)."""
    if spec.collection != shape.collection:
        return False
    fields = [k for k, _ in spec.keys]
    if shape.attribute_lookup:
        return fields == ["$**"]
    if shape.equality == ("_id",):
        return True  # the implicit _id index
    n = len(shape.equality)
    if set(fields[:n]) != set(shape.equality):
        return False
    rest = fields[n:]
    wanted = shape.sort or shape.range
    return not wanted or (bool(rest) and rest[0] == wanted[0])
