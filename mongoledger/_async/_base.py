"""State and plumbing every part of the ledger shares: the collections, the deployment's
capabilities, index creation, the DB-transaction runner, the attempts of a write and account
lookups."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bson import ObjectId
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from mongoledger._async._io import aggregate, maybe_await, mongomock_writes, to_list
from mongoledger._core.accounts import AccountRef, account_lookup_filter, validate_account
from mongoledger._core.amounts import checked_total
from mongoledger._core.config import LedgerConfig
from mongoledger._core.guards import kept_conflicting
from mongoledger._core.idempotency import idempotency_id
from mongoledger._core.indexes import IndexSpec, index_definition, index_plan, index_specs
from mongoledger._core.reads import sum_pipeline
from mongoledger._core.transactions import Leg
from mongoledger.errors import (
    AccountNotFound,
    IdempotencyConflict,
    InvalidAccount,
    InvalidConfiguration,
    NoTransactionsWarning,
    TransactionsUnsupported,
    WriteRetriesExhausted,
)
from mongoledger.models import HookContext

__all__ = ["LedgerBase"]

_IS_SYNC = False
log = logging.getLogger("mongoledger")
# Every operation's DB transaction: snapshot reads, majority-acknowledged commit.
_SNAPSHOT = ReadConcern("snapshot")
_MAJORITY = WriteConcern("majority")
_COMMAND_NOT_FOUND = 59
_INDEX_OPTIONS_CONFLICT = 85  # the index exists under another name, or the name with other options
_INDEX_KEY_SPECS_CONFLICT = 86  # the name exists with other keys
_MAX_ATTEMPTS = 5  # re-runs of an operation whose guard failed for a reason that went away

Hook = Callable[[HookContext], Any]


class _Retry(Exception):
    """An attempt lost to a concurrent write; ``_attempts`` runs the operation again."""


class _GuardFailed(_Retry):
    """A guarded ``$inc`` matched nothing; diagnosed after the DB transaction has ended."""

    def __init__(self, index: int) -> None:
        self.index = index


class _DuplicateKey(Exception):
    """The idempotency key was inserted concurrently."""


class LedgerBase:
    """What every part of the ledger shares; ``AsyncLedger`` composes the parts."""

    _cfg: LedgerConfig
    _db: Any
    _accounts: Any
    _transactions: Any
    _idempotency: Any
    _holds: Any
    _before: list[Hook]
    _after: list[Hook]
    _capable: bool | None  # does the deployment have DB transactions? (None: not asked yet)
    _warned: bool
    _indexed: bool

    async def _run(self, body: Callable[[Any], Any], idempotency_key: str | None = None) -> None:
        """Run ``body(session)`` in one DB transaction (PyMongo's retry rules), or without one.

        An error PyMongo gave up retrying becomes ``WriteRetriesExhausted``, which says
        whether the operation may have committed.
        """
        if not (self._capable or await self._supports_transactions()):
            with mongomock_writes(self._accounts):  # its guards are not atomic across threads
                await body(None)
            return
        session = await maybe_await(self._db.client.start_session())
        async with session:
            try:
                await session.with_transaction(
                    body,
                    read_concern=_SNAPSHOT,
                    write_concern=_MAJORITY,
                    read_preference=ReadPreference.PRIMARY,
                )
            except PyMongoError as exc:
                if exc.has_error_label("UnknownTransactionCommitResult"):
                    committed = True
                elif exc.has_error_label("TransientTransactionError"):
                    committed = False
                else:
                    raise  # a definite failure: the DB transaction was aborted
                raise WriteRetriesExhausted(
                    exc, may_have_committed=committed, idempotency_key=idempotency_key
                ) from exc

    async def _attempts(
        self,
        kind: str,
        attempt: Callable[[], Awaitable[object]],
        legs: list[Leg],
        *,
        idempotency: tuple[str, str] | None = None,
        retry: Callable[[_Retry], Awaitable[str | None]] | None = None,
        refused: Callable[[], str] | None = None,
    ) -> list[ObjectId] | None:
        """Run ``attempt`` (one try of a write of ``legs``, in its own DB transaction) until
        it writes, at most ``_MAX_ATTEMPTS`` times; None once it has.

        An attempt that lost to a concurrent write raises a ``_Retry``, and the write runs
        again: a ``_GuardFailed`` (its cause went away, or the account was just created), or
        another, for which ``retry`` raises the real reason if there is one, else returns what
        refused the attempt (None: no change). The error after the last attempt names the
        last refusal (before any: ``refused()``, by default the first leg's account). When a
        concurrent call with the same idempotency key wrote first, its ids are returned.
        """
        target: str | None = None
        for _attempt in range(_MAX_ATTEMPTS):
            try:
                await attempt()
                return None
            except _GuardFailed as failed:
                target = f"account {legs[failed.index].account.describe()!r}"
            except _Retry as exc:
                if retry is not None:
                    target = await retry(exc) or target
            except _DuplicateKey:
                assert idempotency is not None
                found = await self._idempotent_result(*idempotency)
                if found is not None:
                    return found
        # Only a guard that flips back and forth _MAX_ATTEMPTS times gets here.
        if target is None:
            target = f"account {legs[0].account.describe()!r}" if refused is None else refused()
        raise kept_conflicting(kind, target, _MAX_ATTEMPTS)

    async def _find_by_attributes(self, ref: AccountRef) -> Mapping[str, Any] | None:
        assert ref.attributes is not None
        docs = await to_list(self._accounts.find(account_lookup_filter(ref)).limit(2))
        if len(docs) > 1:
            raise InvalidAccount(
                f"account {ref.attributes!r} is ambiguous: it matches several accounts "
                f"({docs[0]['_id']!r}, {docs[1]['_id']!r}, ...); add attributes to single one out"
            )
        return docs[0] if docs else None

    async def _idempotent_result(
        self, key: str, fp: str, earlier: Callable[[], str] | None = None
    ) -> list[ObjectId] | None:
        """The ids a key's first operation returned on this ledger, or None if it is new.

        A record the previous version wrote (``_id`` the bare key, before keys were scoped to
        their ledger) is read in the same query and counts only when its transactions are in
        this ledger; its fingerprint is that version's (``earlier()`` computes it).
        """
        scoped = idempotency_id(self._cfg, key)
        records = await to_list(self._idempotency.find({"_id": {"$in": [scoped, key]}}))
        record = next((r for r in records if r["_id"] == scoped), None)
        same = record is not None and record.get("hash") == fp
        if record is None:
            legacy = next((r for r in records if r["_id"] == key), None)
            if legacy is None or not await self._owns(legacy):
                return None
            record = legacy
            recorded = legacy.get("hash")
            same = recorded == fp or (earlier is not None and recorded == earlier())
        ids = list(record["transaction_ids"])
        if not same:
            raise IdempotencyConflict(key, ids)
        return ids

    async def _owns(self, record: Mapping[str, Any]) -> bool:
        """Whether an unscoped (legacy) idempotency record names this ledger's transactions."""
        ids = record.get("transaction_ids") or [None]
        return await self._transactions.find_one({"_id": ids[0]}, {"_id": 1}) is not None

    # Deployment: transaction support, indexes

    async def _prepare(self) -> None:
        if not self._indexed:
            await self._ensure_indexes(lazily=True)

    async def _has_transactions(self) -> bool:
        """Detect once whether the deployment runs multi-document transactions."""
        if self._capable is None:
            hello = await self._hello()
            capable = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
            self._capable = capable and hello.get("logicalSessionTimeoutMinutes") is not None
        return self._capable

    async def _hello(self) -> Mapping[str, Any]:
        """The server's handshake reply; any error but "no such command" propagates, so a
        network failure is never mistaken for a deployment without transactions."""
        for command in ("hello", "isMaster"):  # isMaster: servers before 4.4.2
            try:
                return dict(await maybe_await(self._db.command(command)))
            except NotImplementedError:  # plain mongomock implements neither
                return {}
            except OperationFailure as exc:
                if exc.code != _COMMAND_NOT_FOUND:
                    raise
        return {}

    async def _supports_transactions(self) -> bool:
        """Whether writes use DB transactions; refuses or warns (once) when they cannot."""
        if await self._has_transactions():
            return True
        if self._cfg.require_transactions:
            raise TransactionsUnsupported(
                f"database {self._db.name!r} is not on a replica set or sharded cluster, "
                "so it has no multi-document transactions; require_transactions=True "
                "refuses to write without them"
            )
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"database {self._db.name!r} has no multi-document transactions (standalone "
                "or mongomock): operations write without one, and a failure mid-operation "
                "can leave drift that verify() reports and verify(repair=True) fixes",
                NoTransactionsWarning,
                stacklevel=4,
            )
        return False

    async def ensure_indexes(self) -> None:
        """Create every index the ledger's queries need that is missing (idempotent).

        It lists each collection's indexes first and sends ``createIndexes`` only for a
        missing one: building an index on a large collection takes a while (a replica set
        waits for its commit quorum), so run this at deploy time (``mongoledger init``); the
        first write of a ledger instance also runs it, and then only lists.

        An index under a name the ledger owns (``ledger_...``) whose definition differs from
        this version's, which an earlier version created, is rebuilt here (dropped, then
        created): after an upgrade, run this (``mongoledger init``) once. A unique one is not:
        rebuilding it would leave a moment without the uniqueness it guarantees, so this raises
        ``InvalidConfiguration`` saying what to do. Before a first write, an outdated index is
        only logged: it is left as it is, and the write goes ahead.
        """
        await self._ensure_indexes(lazily=False)

    async def _ensure_indexes(self, *, lazily: bool) -> None:
        """``ensure_indexes``; ``lazily`` (before a first write) warns about each build on a
        collection in use, and leaves an outdated index to ``ensure_indexes``."""
        collections = {
            "accounts": self._accounts,
            "transactions": self._transactions,
            "idempotency": self._idempotency,
            "holds": self._holds,
        }
        specs = index_specs(self._cfg)
        for role, collection in collections.items():
            wanted = [spec for spec in specs if spec.collection == role]
            existing = await to_list(await maybe_await(collection.list_indexes()))
            missing, outdated = index_plan(wanted, existing)
            for spec, index in outdated:
                if lazily:
                    log.warning(
                        "index %r on %r has the definition of an earlier version (%s, this "
                        "version's is %s); it is left as it is: run `mongoledger init` "
                        "(ensure_indexes()) to rebuild it",
                        spec.name,
                        collection.name,
                        index_definition(index),
                        index_definition(spec),
                    )
                else:
                    await self._rebuild_index(collection, spec, index)
            for spec in missing:
                if lazily and existing:  # a collection in use: the build may take a while
                    log.warning(
                        "creating index %r on %r before the first write; on a large collection "
                        "run `mongoledger init` (ensure_indexes()) at deploy time instead",
                        spec.name,
                        collection.name,
                    )
                await self._create_index(collection, spec)
        self._indexed = True

    async def _rebuild_index(
        self, collection: Any, spec: IndexSpec, index: Mapping[str, Any]
    ) -> None:
        """Replace an index of a name the ledger owns that has another definition."""
        was, now = index_definition(index), index_definition(spec)
        if spec.unique or index.get("unique"):
            raise InvalidConfiguration(
                f"index {spec.name!r} on {collection.name!r} is {was}, not this version's "
                f"{now}; it is unique, and rebuilding it would leave a moment without the "
                "uniqueness it guarantees: drop it while nothing writes to the ledger "
                f"(db.{collection.name}.dropIndex({spec.name!r})), then run "
                "`mongoledger init` (ensure_indexes())"
            )
        log.warning(
            "rebuilding index %r on %r: it is %s, this version's is %s",
            spec.name,
            collection.name,
            was,
            now,
        )
        await collection.drop_index(spec.name)
        await self._create_index(collection, spec)

    @staticmethod
    async def _create_index(collection: Any, spec: IndexSpec) -> None:
        try:
            await collection.create_index(list(spec.keys), **spec.kwargs())
        except OperationFailure as exc:
            if exc.code == _INDEX_OPTIONS_CONFLICT and "different name" in str(exc):
                return  # the same index under the user's name serves as well
            if exc.code in (_INDEX_OPTIONS_CONFLICT, _INDEX_KEY_SPECS_CONFLICT):
                raise InvalidConfiguration(
                    f"index {spec.name!r} {list(spec.keys)} on {collection.name!r} "
                    f"conflicts with an existing index ({exc}); drop or rename that one"
                ) from exc
            raise

    # Account lookups

    async def _find_account(self, account: Any) -> Mapping[str, Any]:
        ref = validate_account(account, self._cfg.owned_account_fields)
        if ref.is_id:
            doc = await self._accounts.find_one({"_id": ref.id})
        else:
            doc = await self._find_by_attributes(ref)
        if doc is None:
            raise AccountNotFound(ref.describe())
        return dict(doc)

    async def _balance_of(self, doc: Mapping[str, Any]) -> int:
        """An account document's balance: its cached balance, or (``balance_field=None``) the
        sum of its transactions on the server."""
        cfg = self._cfg
        if cfg.balance_field is None:
            return await self._sum({cfg.account_link_field: doc["_id"]})
        return int(doc.get(cfg.balance_field, 0))

    async def _sum(self, match: dict[str, Any], *, what: str = "the balance") -> int:
        rows = await aggregate(self._transactions, sum_pipeline(self._cfg, match))
        return checked_total(rows[0]["total"], what=what) if rows else 0

    async def _account_id(self, account: Any) -> Any:
        ref = validate_account(account, self._cfg.owned_account_fields)
        if ref.is_id:
            return ref.id
        return (await self._find_account(account))["_id"]
