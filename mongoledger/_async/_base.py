"""State and plumbing every part of the ledger shares: the collections, the deployment's
capabilities, index creation, the DB-transaction runner and account lookups."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from bson import ObjectId
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from mongoledger import _core
from mongoledger._async._io import aggregate, maybe_await, to_list
from mongoledger._core import AccountRef, LedgerConfig
from mongoledger.errors import (
    AccountNotFound,
    IdempotencyConflict,
    InvalidAccount,
    InvalidConfiguration,
    NoTransactionsWarning,
    TransactionsUnsupported,
)
from mongoledger.models import HookContext

__all__ = ["LedgerBase"]

_IS_SYNC = False
# Every operation's DB transaction: snapshot reads, majority-acknowledged commit.
_SNAPSHOT = ReadConcern("snapshot")
_MAJORITY = WriteConcern("majority")
_COMMAND_NOT_FOUND = 59
_INDEX_OPTIONS_CONFLICT = 85  # the index exists under another name, or the name with other options
_INDEX_KEY_SPECS_CONFLICT = 86  # the name exists with other keys

Hook = Callable[[HookContext], Any]


class LedgerBase:
    """What every part of the ledger shares; ``AsyncLedger`` composes the parts."""

    _cfg: LedgerConfig
    _db: Any
    _accounts: Any
    _transactions: Any
    _idempotency: Any
    _before: list[Hook]
    _after: list[Hook]
    _capable: bool | None  # does the deployment have DB transactions? (None: not asked yet)
    _warned: bool
    _indexed: bool

    async def _run(self, body: Callable[[Any], Any]) -> None:
        """Run ``body(session)`` in one DB transaction (PyMongo's retry rules), or without one."""
        if not (self._capable or await self._supports_transactions()):
            await body(None)
            return
        session = await maybe_await(self._db.client.start_session())
        async with session:
            await session.with_transaction(
                body,
                read_concern=_SNAPSHOT,
                write_concern=_MAJORITY,
                read_preference=ReadPreference.PRIMARY,
            )

    async def _find_by_attributes(self, ref: AccountRef) -> Mapping[str, Any] | None:
        assert ref.attributes is not None
        docs = await to_list(self._accounts.find(_core.account_lookup_filter(ref)).limit(2))
        if len(docs) > 1:
            raise InvalidAccount(
                f"account {ref.attributes!r} is ambiguous: it matches several accounts "
                f"({docs[0]['_id']!r}, {docs[1]['_id']!r}, ...); add attributes to single one out"
            )
        return docs[0] if docs else None

    async def _idempotent_result(self, key: str, fp: str) -> list[ObjectId] | None:
        record = await self._idempotency.find_one({"_id": key})
        if record is None:
            return None
        ids = list(record["transaction_ids"])
        if record.get("hash") != fp:
            raise IdempotencyConflict(key, ids)
        return ids

    # Deployment: transaction support, indexes

    async def _prepare(self) -> None:
        if not self._indexed:
            await self.ensure_indexes()

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
        """Create every index the ledger's queries need (idempotent)."""
        collections = {
            "accounts": self._accounts,
            "transactions": self._transactions,
            "idempotency": self._idempotency,
        }
        for spec in _core.index_specs(self._cfg):
            collection = collections[spec.collection]
            try:
                await collection.create_index(list(spec.keys), **spec.kwargs())
            except OperationFailure as exc:
                if exc.code == _INDEX_OPTIONS_CONFLICT and "different name" in str(exc):
                    continue  # the same index under the user's name serves as well
                if exc.code in (_INDEX_OPTIONS_CONFLICT, _INDEX_KEY_SPECS_CONFLICT):
                    raise InvalidConfiguration(
                        f"index {spec.name!r} {list(spec.keys)} on {collection.name!r} "
                        f"conflicts with an existing index ({exc}); drop or rename that one"
                    ) from exc
                raise
        self._indexed = True

    # Account lookups

    async def _find_account(self, account: Any) -> Mapping[str, Any]:
        ref = _core.validate_account(account, self._cfg.owned_account_fields)
        if ref.is_id:
            doc = await self._accounts.find_one({"_id": ref.id})
        else:
            doc = await self._find_by_attributes(ref)
        if doc is None:
            raise AccountNotFound(ref.describe())
        return dict(doc)

    async def _sum(self, match: dict[str, Any], *, what: str = "the balance") -> int:
        rows = await aggregate(self._transactions, _core.sum_pipeline(self._cfg, match))
        return _core.checked_total(rows[0]["total"], what=what) if rows else 0

    async def _account_id(self, account: Any) -> Any:
        ref = _core.validate_account(account, self._cfg.owned_account_fields)
        if ref.is_id:
            return ref.id
        return (await self._find_account(account))["_id"]
