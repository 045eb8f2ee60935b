"""The balance ledger. The async class here is the source; the sync ``Ledger`` is generated.

Round trips each write sends (a "known" account is referenced by ``_id``; an attribute set
costs one extra indexed read to resolve it and detect ambiguity):

* ``increase`` / ``decrease``: one ``findAndModify`` (the guarded ``$inc``) + one ``insert``
  + ``commitTransaction``.
* ``transfer``: one ``findAndModify`` per account + one ``insert`` for both legs + commit.
* ``post`` with n legs: n ``findAndModify`` + one ``insert`` + commit.
* ``revert`` of an n-leg operation: two reads (the leg, then its operation's legs) + one
  ``update`` (bulk: mark the originals ``reverted_by``) + n ``findAndModify`` + one ``insert``
  + commit.
* with an ``idempotency_key``: one more read first (the retry check) and one more insert
  (the key's record, in the idempotency collection, inside the same DB transaction).
* the first time an account is used (auto-create): one ``update`` (an upsert creating it at
  zero) and a second ``findAndModify``, because no server accepts the floor guard's ``$expr``
  in an upsert's filter.
* once per ledger instance: ``hello`` (transaction support) and ``createIndexes``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import bson
from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from mongoledger import _core, _events
from mongoledger._async._io import aggregate, call_hook, is_plain_mongomock, maybe_await, to_list
from mongoledger._async.stream import (
    AsyncLedgerStream,
    handle,
    load_checkpoint,
    open_stream,
    save_checkpoint,
)
from mongoledger._core import AccountRef, LedgerConfig, Leg
from mongoledger.errors import (
    AccountNotFound,
    AfterWriteError,
    AlreadyReverted,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    InvalidArgument,
    InvalidConfiguration,
    LedgerError,
    NoTransactionsWarning,
    TransactionNotFound,
    TransactionsUnsupported,
)
from mongoledger.models import (
    Account,
    BalanceMismatch,
    BrokenLink,
    HookContext,
    OperationKind,
    PeriodStatistics,
    Transaction,
    UnbalancedOperation,
    VerifyReport,
)

__all__ = ["AsyncLedger"]

_IS_SYNC = False
# Every operation's DB transaction: snapshot reads, majority-acknowledged commit.
_SNAPSHOT = ReadConcern("snapshot")
_MAJORITY = WriteConcern("majority")
_COMMAND_NOT_FOUND = 59
_INDEX_OPTIONS_CONFLICT = 85  # the index exists under another name, or the name with other options
_INDEX_KEY_SPECS_CONFLICT = 86  # the name exists with other keys
_MAX_ATTEMPTS = 5  # re-runs of an operation whose guard failed for a reason that went away

Hook = Callable[[HookContext], Any]
F = TypeVar("F", bound=Hook)


class _GuardFailed(Exception):
    """A guarded ``$inc`` matched nothing; diagnosed after the DB transaction has ended."""

    def __init__(self, index: int) -> None:
        self.index = index


class _Reverted(Exception):
    """A leg to revert was marked ``reverted_by`` concurrently."""


class _DuplicateKey(Exception):
    """The idempotency key was inserted concurrently."""


class AsyncLedger:
    """A balance ledger kept in two MongoDB collections (accounts and transactions).

    Every write is one MongoDB multi-document transaction: its transaction documents are
    inserted and the accounts' cached balances moved with ``$inc``, all or nothing.
    """

    def __init__(
        self,
        database: Any,
        accounts_collection: str = "accounts",
        transactions_collection: str = "transactions",
        auto_create_account: bool = True,
        balance_field: str | None = "balance",
        extra_account_link_field: str | None = "extra_account_id",
        account_link_field: str = "account_id",
        amount_field: str = "amount",
        date_field: str = "date",
        date_value: Any = None,
        data_field: str | None = None,
        require_transactions: bool = False,
        checkpoints_collection: str = "ledger_checkpoints",
        idempotency_collection: str = "ledger_idempotency",
    ) -> None:
        self._cfg = LedgerConfig(
            accounts_collection=accounts_collection,
            transactions_collection=transactions_collection,
            checkpoints_collection=checkpoints_collection,
            idempotency_collection=idempotency_collection,
            auto_create_account=auto_create_account,
            balance_field=balance_field,
            extra_account_link_field=extra_account_link_field,
            account_link_field=account_link_field,
            amount_field=amount_field,
            date_field=date_field,
            date_value=date_value,
            data_field=data_field,
            require_transactions=require_transactions,
        )
        self._db = database
        # The ledger reads what it just wrote (retries, reverts, idempotency): always from the
        # primary, whatever the client's read preference.
        self._accounts = database.get_collection(
            accounts_collection, read_preference=ReadPreference.PRIMARY
        )
        self._transactions = database.get_collection(
            transactions_collection, read_preference=ReadPreference.PRIMARY
        )
        self._idempotency = database.get_collection(
            idempotency_collection, read_preference=ReadPreference.PRIMARY
        )
        self._before: list[Hook] = []
        self._after: list[Hook] = []
        self._capable: bool | None = None  # does the deployment have DB transactions?
        self._warned = False
        self._indexed = False

    # Properties

    @property
    def config(self) -> LedgerConfig:
        return self._cfg

    @property
    def database(self) -> Any:
        return self._db

    @property
    def accounts(self) -> Any:
        """The accounts collection (for direct queries)."""
        return self._accounts

    @property
    def transactions(self) -> Any:
        """The transactions collection (for direct queries)."""
        return self._transactions

    # Hooks

    def before_write(self, fn: F) -> F:
        """Register ``fn(ctx)``: runs per transaction document before the write; may veto."""
        self._before.append(self._check_hook(fn))
        return fn

    def after_write(self, fn: F) -> F:
        """Register ``fn(ctx)``: runs per transaction document after the operation committed."""
        self._after.append(self._check_hook(fn))
        return fn

    @staticmethod
    def _check_hook(fn: Hook) -> Hook:
        if not callable(fn):
            raise TypeError(f"hook {fn!r} is not callable")
        if _IS_SYNC and inspect.iscoroutinefunction(fn):
            raise TypeError(f"hook {fn!r} is a coroutine function; use AsyncLedger for async hooks")
        return fn

    # Writes

    async def increase(
        self,
        account: Any,
        amount: Any,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ObjectId:
        """Move ``amount`` into ``account`` (negative: out of it). Returns the transaction id."""
        value = _core.validate_amount(amount)
        ids = await self._operation("increase", [(account, value, None)], data, idempotency_key)
        return ids[0]

    async def decrease(
        self,
        account: Any,
        amount: Any,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ObjectId:
        """Move ``amount`` out of ``account``; the same as ``increase(account, -amount)``."""
        value = _core.validate_amount(amount)
        ids = await self._operation("decrease", [(account, -value, None)], data, idempotency_key)
        return ids[0]

    async def transfer(
        self,
        from_account: Any,
        to_account: Any,
        amount: Any,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[ObjectId]:
        """Move ``amount`` (> 0) between two accounts. Returns ``[from_leg_id, to_leg_id]``."""
        value = _core.validate_amount(amount)
        if value < 0:
            raise InvalidAmount(f"transfer amount {value!r} must be positive; swap the accounts")
        owned = self._cfg.owned_account_fields
        source = _core.validate_account(from_account, owned)
        target = _core.validate_account(to_account, owned)
        if source == target:
            raise InvalidAccount(f"transfer from account {from_account!r} to itself")
        legs = [(source, -value, None), (target, value, None)]
        return await self._operation("transfer", legs, data, idempotency_key)

    async def post(
        self,
        legs: Sequence[Sequence[Any]],
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[ObjectId]:
        """Post a balanced multi-leg operation: ``legs`` are ``(account, amount[, data])``.

        Amounts must sum to zero. Returns the transaction ids in leg order.
        """
        if isinstance(legs, Mapping | str | bytes) or not isinstance(legs, Sequence):
            raise InvalidAmount(f"legs {legs!r} must be a list of (account, amount) pairs")
        if len(legs) < 2:
            raise InvalidAmount(f"a post needs at least two legs, got {len(legs)}: {list(legs)!r}")
        planned = []
        for i, leg in enumerate(legs):
            if isinstance(leg, Mapping | str | bytes) or not isinstance(leg, Sequence):
                raise InvalidAmount(f"leg {i} {leg!r} is not an (account, amount[, data]) tuple")
            if len(leg) not in (2, 3):
                raise InvalidAmount(f"leg {i} {leg!r} is not an (account, amount[, data]) tuple")
            amount = _core.validate_amount(leg[1], what=f"leg {i} amount")
            planned.append((leg[0], amount, leg[2] if len(leg) == 3 else None))
        _core.check_balanced("post", [amount for _, amount, _ in planned])
        return await self._operation("post", planned, data, idempotency_key)

    async def revert(
        self,
        transaction_id: Any,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ObjectId | list[ObjectId]:
        """Compensate the operation of ``transaction_id`` (never deletes).

        A leg of a transfer or post reverts the whole operation. Returns the new transaction
        id for a one-leg operation, else the ids in leg order. The originals are marked
        ``reverted_by``; reverting again raises ``AlreadyReverted``.
        """
        tid = _core.validate_transaction_id(transaction_id)
        cfg = self._cfg
        extra = _core.validate_data(cfg, data)
        key = _core.validate_idempotency_key(idempotency_key)
        fp = ""
        if key is not None:
            fp = _core.fingerprint("revert", [(tid, 0, extra)])
            found = await self._idempotent_result(key, fp)
            if found is not None:
                return found[0] if len(found) == 1 else found
        original = await self._transactions.find_one(
            {"_id": tid}, {_core.OPERATION_ID: 1, _core.REVERTED_BY: 1}
        )
        if original is None:
            raise TransactionNotFound(tid)
        if original.get(_core.REVERTED_BY) is not None:
            raise AlreadyReverted(tid, original[_core.REVERTED_BY])
        docs = await to_list(
            self._transactions.find({_core.OPERATION_ID: original[_core.OPERATION_ID]}).sort(
                _core.LEG, 1
            )
        )
        for doc in docs:
            if doc.get(_core.REVERTED_BY) is not None:
                raise AlreadyReverted(doc["_id"], doc[_core.REVERTED_BY])
        legs = _core.reversal_legs(cfg, docs)
        for leg in legs:
            leg.data = dict(extra)
        ids = await self._execute("revert", legs, key, fp, revert=True)
        return ids[0] if len(ids) == 1 else ids

    async def open_account(
        self,
        attributes: Mapping[str, Any] | None = None,
        *,
        min_balance: int | None = None,
    ) -> Any:
        """Get or create the account with exactly these attributes; returns its ``_id``.

        ``min_balance`` (e.g. 0) makes every operation that would take the balance below it
        fail with ``InsufficientFunds``. An existing account with another ``min_balance`` is
        an ``InvalidAccount`` error. ``attributes=None`` creates a new anonymous account.
        """
        cfg = self._cfg
        floor = _core.validate_min_balance(min_balance)
        if floor is not None and cfg.balance_field is None:
            raise InvalidConfiguration("min_balance needs a cached balance (balance_field)")
        await self._supports_transactions()  # Decision 9: detected (or refused) at a first write
        await self._prepare()
        if attributes is None:
            ref = AccountRef(id=ObjectId())
        else:
            if not isinstance(attributes, Mapping):
                raise InvalidAccount(f"attributes {attributes!r} is not a mapping")
            ref = _core.validate_account(attributes, cfg.owned_account_fields)
            existing = await self._find_by_attributes(ref)
            if existing is not None:
                return self._check_floor(existing, ref, floor)
        flt, update = _core.account_creation(cfg, ref, floor)
        try:
            doc = await self._accounts.find_one_and_update(
                flt, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # a concurrent caller created it first
            doc = await self._accounts.find_one(flt)
        return self._check_floor(doc, ref, floor)

    @staticmethod
    def _check_floor(doc: Mapping[str, Any], ref: AccountRef, floor: int | None) -> Any:
        if doc.get(_core.MIN_BALANCE) != floor:
            raise InvalidAccount(
                f"account {ref.describe()!r} exists with min_balance "
                f"{doc.get(_core.MIN_BALANCE)!r}, not {floor!r}"
            )
        return doc["_id"]

    # The write path

    async def _operation(
        self,
        kind: OperationKind,
        legs: Sequence[tuple[Any, int, Any]],
        data: Mapping[str, Any] | None,
        idempotency_key: str | None,
    ) -> list[ObjectId]:
        cfg = self._cfg
        owned = cfg.owned_account_fields
        extra = _core.validate_data(cfg, data)
        refs = [
            account if isinstance(account, AccountRef) else _core.validate_account(account, owned)
            for account, _, _ in legs
        ]
        planned = []
        for i, ((_, amount, leg_data), ref) in enumerate(zip(legs, refs, strict=True)):
            merged = dict(extra)
            if leg_data is not None:
                merged.update(_core.validate_data(cfg, leg_data, what=f"leg {i} data"))
            planned.append(Leg(account=ref, amount=amount, data=merged))
        key = _core.validate_idempotency_key(idempotency_key)
        fp = ""
        if key is not None:
            fp = _core.fingerprint(kind, [(leg.account, leg.amount, leg.data) for leg in planned])
            found = await self._idempotent_result(key, fp)
            if found is not None:
                return found
        return await self._execute(kind, planned, key, fp)

    async def _execute(
        self,
        kind: OperationKind,
        legs: list[Leg],
        key: str | None,
        fp: str,
        *,
        revert: bool = False,
    ) -> list[ObjectId]:
        cfg = self._cfg
        await self._prepare()
        operation_id = ObjectId()
        for leg in legs:
            if leg.account_id is None:
                ref = leg.account
                leg.account_id = ref.id if ref.is_id else await self._resolve_for_write(ref)
        same = legs[0].account_id is not None and legs[0].account_id == legs[-1].account_id
        if kind == "transfer" and same:
            raise InvalidAccount(
                f"transfer from account {legs[0].account.describe()!r} to "
                f"{legs[1].account.describe()!r}: both are account {legs[0].account_id!r}"
            )
        if self._before:
            await self._run_before_hooks(kind, legs, operation_id, revert=revert)
        date = cfg.operation_date()
        idempotency = None if key is None else (key, fp)
        _core.check_sizes(cfg, legs, kind=kind, date=date, idempotency=idempotency)
        for _attempt in range(_MAX_ATTEMPTS):
            try:
                await self._write(kind, legs, operation_id, date, idempotency, revert)
                break
            except _GuardFailed as failed:
                await self._diagnose(legs, failed.index)
            except _Reverted:
                for leg in legs:
                    doc = await self._transactions.find_one({"_id": leg.reverts})
                    if doc is not None and doc.get(_core.REVERTED_BY) is not None:
                        raise AlreadyReverted(leg.reverts, doc[_core.REVERTED_BY]) from None
            except _DuplicateKey:
                found = await self._idempotent_result(key or "", fp)
                if found is not None:
                    return found
        else:  # pragma: no cover - needs a guard that flips back and forth five times
            raise LedgerError(f"{kind} kept conflicting with concurrent writes; try again")
        if self._after:
            await self._run_after_hooks(kind, legs, operation_id)
        return [leg.id for leg in legs]

    async def _write(
        self,
        kind: OperationKind,
        legs: list[Leg],
        operation_id: ObjectId,
        date: Any,
        idempotency: tuple[str, str] | None,
        revert: bool,
    ) -> None:
        cfg = self._cfg

        resolved = [leg.account_id for leg in legs]

        async def body(session: Any) -> None:
            # with_transaction may run this again: start from the resolved ids every time.
            for leg, account_id in zip(legs, resolved, strict=True):
                leg.account_id = account_id
            applied: list[tuple[Leg, bool]] = []
            recorded = False
            try:
                if idempotency is not None:
                    record = _core.idempotency_document(
                        *idempotency, kind, operation_id, [leg.id for leg in legs]
                    )
                    try:
                        await self._idempotency.insert_one(record, session=session)
                    except DuplicateKeyError:  # a concurrent call with this key got there first
                        raise _DuplicateKey from None
                    recorded = True
                if revert:
                    await self._mark_reverted(legs, session)
                balance_field = cfg.balance_field
                for index, leg in enumerate(legs):
                    target = leg.account
                    by_id = target.is_id
                    if leg.account_id is not None and not by_id:
                        target = AccountRef(id=leg.account_id)
                    update = _core.leg_update(cfg, target, leg.amount)
                    doc = await self._move(update, session)
                    created = False
                    if doc is None and (
                        leg.account_id is None or (cfg.auto_create_account and by_id)
                    ):
                        # The account may not exist yet: create it at zero, then move it.
                        flt, insert = _core.account_creation(cfg, target)
                        try:
                            result = await self._accounts.update_one(
                                flt, insert, upsert=True, session=session
                            )
                        except DuplicateKeyError:
                            # A concurrent caller created it. In a DB transaction the server
                            # aborted ours: retry the whole operation (it exists now).
                            if session is not None:
                                raise _GuardFailed(index) from None
                        else:
                            created = result.upserted_id is not None
                        doc = await self._move(update, session)
                        if doc is None and created and session is None:
                            await self._accounts.delete_one(
                                {"_id": result.upserted_id, _core.SEQ: 0}
                            )
                    if doc is None:
                        raise _GuardFailed(index)
                    leg.account_id = doc["_id"]
                    leg.account_seq = int(doc[_core.SEQ])
                    if balance_field:
                        leg.balance_after = int(doc[balance_field])
                    applied.append((leg, created))
                if len(legs) == 2 and cfg.extra_account_link_field:
                    legs[0].extra_account_id = legs[1].account_id
                    legs[1].extra_account_id = legs[0].account_id
                docs = [
                    _core.transaction_document(
                        cfg,
                        leg,
                        index=i,
                        count=len(legs),
                        kind=kind,
                        operation_id=operation_id,
                        date=date,
                        idempotency=idempotency,
                    )
                    for i, leg in enumerate(legs)
                ]
                await self._transactions.insert_many(docs, ordered=True, session=session)
            except BaseException:
                if session is None:
                    await self._compensate(applied, legs if revert else [])
                    if recorded and idempotency is not None:
                        await self._idempotency.delete_one(
                            {"_id": idempotency[0], _core.OPERATION_ID: operation_id}
                        )
                raise

        await self._run(body)

    async def _move(self, update: _core.LegUpdate, session: Any) -> Any:
        """The guarded ``$inc`` of one leg: the account after it, or None if a guard failed
        (or the account does not exist)."""
        return await self._accounts.find_one_and_update(
            update.filter,
            update.update,
            projection=update.projection,
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def _mark_reverted(self, legs: list[Leg], session: Any) -> None:
        """Mark the originals ``reverted_by`` (one command), unless one already is."""
        updates = [
            (
                {"_id": leg.reverts, _core.REVERTED_BY: {"$exists": False}},
                {"$set": {_core.REVERTED_BY: leg.id}},
            )
            for leg in legs
        ]
        if len(updates) == 1 or is_plain_mongomock(self._transactions):
            modified = 0
            for flt, update in updates:
                result = await self._transactions.update_one(flt, update, session=session)
                modified += result.modified_count
        else:
            requests = [UpdateOne(flt, update) for flt, update in updates]
            result = await self._transactions.bulk_write(requests, ordered=True, session=session)
            modified = result.modified_count
        if modified != len(legs):
            if session is None:
                await self._unmark(legs)
            raise _Reverted

    async def _unmark(self, legs: list[Leg]) -> None:
        for leg in legs:
            await self._transactions.update_one(
                {"_id": leg.reverts, _core.REVERTED_BY: leg.id},
                {"$unset": {_core.REVERTED_BY: ""}},
            )

    async def _compensate(self, applied: list[tuple[Leg, bool]], marked: list[Leg]) -> None:
        """Undo the writes of a refused operation on a deployment without DB transactions."""
        cfg = self._cfg
        for leg, created in reversed(applied):
            if created:
                result = await self._accounts.delete_one({"_id": leg.account_id, _core.SEQ: 1})
                if result.deleted_count:
                    continue
            undo: dict[str, Any] = {cfg.balance_field: -leg.amount} if cfg.balance_field else {}
            # Give the sequence number back only if no other operation took the next one.
            result = await self._accounts.update_one(
                {"_id": leg.account_id, _core.SEQ: leg.account_seq},
                {"$inc": {**undo, _core.SEQ: -1}},
            )
            if not result.modified_count and undo:
                await self._accounts.update_one({"_id": leg.account_id}, {"$inc": undo})
        if marked:
            await self._unmark(marked)

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

    async def _diagnose(self, legs: list[Leg], index: int) -> None:
        """Explain why leg ``index``'s guard failed, or return to let the caller retry."""
        cfg = self._cfg
        leg = legs[index]
        target = leg.account if leg.account_id is None else AccountRef(id=leg.account_id)
        doc = await self._accounts.find_one(_core.account_filter(target))
        if doc is None:
            if not cfg.auto_create_account:
                raise AccountNotFound(leg.account.describe())
            return
        if cfg.balance_field is None:
            return
        cached = doc.get(cfg.balance_field)
        if isinstance(cached, bool) or not isinstance(cached, int):
            raise InvalidAccount(
                f"account {doc['_id']!r} has no integer {cfg.balance_field!r} field "
                f"({cached!r}: created outside the ledger?); verify(repair=True) rebuilds it"
            )
        earlier = sum(other.amount for other in legs[:index] if other.account_id == doc["_id"])
        balance = int(cached) + earlier
        result = balance + leg.amount
        if not _core.INT64_MIN <= result <= _core.INT64_MAX:
            raise InvalidAmount(
                f"amount {leg.amount} would overflow the int64 balance {balance} of account "
                f"{doc['_id']!r}"
            )
        floor = doc.get(_core.MIN_BALANCE)
        if floor is not None and leg.amount < 0 and result < floor:
            raise InsufficientFunds(doc["_id"], balance, leg.amount, floor)

    async def _resolve_for_write(self, ref: AccountRef) -> Any:
        """The ``_id`` a leg writes to, or None when the operation will create the account."""
        if ref.is_id:
            return ref.id
        doc = await self._find_by_attributes(ref)
        if doc is not None:
            return doc["_id"]
        if not self._cfg.auto_create_account:
            raise AccountNotFound(ref.describe(), "auto_create_account is off")
        return None

    async def _find_by_attributes(self, ref: AccountRef) -> Mapping[str, Any] | None:
        assert ref.attributes is not None
        docs = await to_list(self._accounts.find(_core.account_lookup_filter(ref)).limit(2))
        if len(docs) > 1:
            raise InvalidAccount(
                f"account {ref.attributes!r} is ambiguous: it matches several accounts "
                f"({docs[0]['_id']!r}, {docs[1]['_id']!r}, ...); add attributes to single one out"
            )
        return docs[0] if docs else None

    async def _run_before_hooks(
        self, kind: OperationKind, legs: list[Leg], operation_id: ObjectId, *, revert: bool
    ) -> None:
        cfg = self._cfg
        for index, leg in enumerate(legs):
            ctx = HookContext(
                kind=kind,
                account=leg.account.describe(),
                account_id=leg.account_id,
                amount=leg.amount,
                data=dict(leg.data),
                operation_id=operation_id,
                leg=index,
            )
            for fn in self._before:
                await call_hook(fn, ctx)
            amount = _core.validate_amount(ctx.amount, what="amount set by a before_write hook")
            if revert and amount != leg.amount:
                raise InvalidAmount(
                    f"a before_write hook changed a reversal amount from {leg.amount} to {amount}; "
                    "reversal amounts are fixed"
                )
            leg.amount = amount
            leg.data = _core.validate_data(cfg, ctx.data, what="data set by a before_write hook")
        if kind in ("transfer", "post"):
            _core.check_balanced(kind, [leg.amount for leg in legs])

    async def _run_after_hooks(
        self, kind: OperationKind, legs: list[Leg], operation_id: ObjectId
    ) -> None:
        failures: list[BaseException] = []
        for index, leg in enumerate(legs):
            ctx = HookContext(
                kind=kind,
                account=leg.account.describe(),
                account_id=leg.account_id,
                amount=leg.amount,
                data=dict(leg.data),
                operation_id=operation_id,
                leg=index,
                transaction_id=leg.id,
                balance_after=leg.balance_after,
            )
            for fn in self._after:
                try:
                    await call_hook(fn, ctx)
                except Exception as exc:  # the operation is committed: run the other hooks
                    failures.append(exc)
        if failures:
            raise AfterWriteError([leg.id for leg in legs], failures) from failures[0]

    async def _idempotent_result(self, key: str, fp: str) -> list[ObjectId] | None:
        record = await self._idempotency.find_one({"_id": key})
        if record is None:
            return None
        ids = list(record["transaction_ids"])
        if record.get("hash") != fp:
            raise IdempotencyConflict(key, ids)
        return ids

    # Deployment

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

    # Reads

    async def _find_account(self, account: Any) -> Mapping[str, Any]:
        ref = _core.validate_account(account, self._cfg.owned_account_fields)
        if ref.is_id:
            doc = await self._accounts.find_one({"_id": ref.id})
        else:
            doc = await self._find_by_attributes(ref)
        if doc is None:
            raise AccountNotFound(ref.describe())
        return dict(doc)

    async def _sum(self, match: dict[str, Any]) -> int:
        rows = await aggregate(self._transactions, _core.sum_pipeline(self._cfg, match))
        return int(rows[0]["total"]) if rows else 0

    async def calculate_balance(self, account: Any) -> int:
        """The sum of the account's transaction amounts, computed on the server."""
        doc = await self._find_account(account)
        return await self._sum({self._cfg.account_link_field: doc["_id"]})

    async def balance(self, account: Any) -> int:
        """The account's cached balance (calculated when ``balance_field`` is None)."""
        doc = await self._find_account(account)
        if self._cfg.balance_field is None:
            return await self._sum({self._cfg.account_link_field: doc["_id"]})
        return int(doc.get(self._cfg.balance_field, 0))

    async def balance_at(self, account: Any, when: Any) -> int:
        """The balance after every transaction dated at or before ``when``."""
        cfg = self._cfg
        doc = await self._find_account(account)
        flt = _core.history_filter(cfg, doc["_id"], end=when)
        if cfg.balance_field is None:
            return await self._sum(flt)
        last = await self._transactions.find_one(flt, sort=[(_core.ACCOUNT_SEQ, -1)])
        return 0 if last is None else int(last.get(_core.BALANCE_AFTER, 0))

    async def get_account(self, account: Any) -> Account:
        doc = await self._find_account(account)
        balance = None
        if self._cfg.balance_field is None:
            balance = await self._sum({self._cfg.account_link_field: doc["_id"]})
        return _core.account_to_model(self._cfg, doc, balance)

    async def get_transaction(self, transaction_id: Any) -> Transaction:
        tid = _core.validate_transaction_id(transaction_id)
        doc = await self._transactions.find_one({"_id": tid})
        if doc is None:
            raise TransactionNotFound(tid)
        return _core.transaction_to_model(self._cfg, doc)

    async def history(
        self,
        account: Any,
        *,
        start: Any = None,
        end: Any = None,
        limit: int | None = None,
        before_seq: int | None = None,
    ) -> list[Transaction]:
        """The balance sheet: the account's transactions, newest first, with running balance.

        ``start``/``end`` bound the dates (inclusive). Page with ``limit`` and ``before_seq``
        (the ``account_seq`` of the last row of the previous page).
        """
        cfg = self._cfg
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidArgument(f"limit {limit!r} must be a positive integer")
        doc = await self._find_account(account)
        flt = _core.history_filter(cfg, doc["_id"], start=start, end=end, before_seq=before_seq)
        cursor = self._transactions.find(flt).sort(_core.ACCOUNT_SEQ, -1)
        if limit is not None:
            cursor = cursor.limit(limit)
        rows = [_core.transaction_to_model(cfg, d) for d in await to_list(cursor)]
        if cfg.balance_field is None and rows:
            running = await self._sum(
                {
                    cfg.account_link_field: doc["_id"],
                    _core.ACCOUNT_SEQ: {"$lte": rows[0].account_seq},
                }
            )
            filled = []
            for row in rows:
                filled.append(row.model_copy(update={"balance_after": running}))
                running -= row.amount
            rows = filled
        return rows

    async def report(
        self,
        *,
        sort: str = "-balance",
        limit: int | None = None,
        skip: int = 0,
        attributes: Mapping[str, Any] | None = None,
    ) -> list[Account]:
        """Every account with its balance (the "all balances" report).

        ``sort``: ``balance``, ``id`` or ``created_at``, ``-`` prefix for descending.
        ``attributes`` narrows the report to accounts having those attribute values.
        """
        cfg = self._cfg
        field = sort.lstrip("-")
        direction = -1 if sort.startswith("-") else 1
        columns = {"balance": cfg.balance_field, "id": "_id", "created_at": _core.CREATED_AT}
        if field not in columns:
            raise InvalidArgument(
                f"sort {sort!r} is not one of balance, id, created_at (- to reverse)"
            )
        flt: dict[str, Any] = {}
        if attributes:
            flt = _core.validate_attributes(attributes, cfg.owned_account_fields)
        if cfg.balance_field is None:
            totals = {
                row["_id"]: int(row["total"])
                for row in await aggregate(self._transactions, _core.balances_pipeline(cfg))
            }
            docs = await to_list(self._accounts.find(flt))
            accounts = [_core.account_to_model(cfg, d, totals.get(d["_id"], 0)) for d in docs]
            accounts.sort(key=lambda a: getattr(a, field), reverse=direction < 0)
            return accounts[skip : None if limit is None else skip + limit]
        # Ties break on _id in the same direction, so one index serves both directions.
        order = [(columns[field], direction)]
        if field != "id":
            order.append(("_id", direction))
        cursor = self._accounts.find(flt).sort(order)
        if skip:
            cursor = cursor.skip(skip)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [_core.account_to_model(cfg, d) for d in await to_list(cursor)]

    async def statistics(
        self,
        account: Any = None,
        *,
        period: str = "month",
        start: Any = None,
        end: Any = None,
    ) -> list[PeriodStatistics]:
        """Credit and debit totals per period (``day``, ``month``, ``year``), oldest first."""
        account_id = None if account is None else (await self._find_account(account))["_id"]
        pipeline = _core.statistics_pipeline(
            self._cfg, account_id, period=period, start=start, end=end
        )
        rows = await aggregate(self._transactions, pipeline)
        return [
            PeriodStatistics(
                period=row["_id"],
                credit=int(row["credit"]),
                debit=int(row["debit"]),
                net=int(row["credit"]) - int(row["debit"]),
                count=int(row["count"]),
            )
            for row in rows
        ]

    async def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check cached balances, operation legs and revert links against the transactions.

        ``repair=True`` rebuilds drifted cached balances from the transactions (the source
        of truth), each with a conditional update that leaves concurrent writes intact, and
        clears ``reverted_by`` marks whose reversal does not exist (left by a revert that
        failed midway without a DB transaction), so those transactions can be reverted again.
        """
        cfg = self._cfg
        totals = {
            row["_id"]: row
            for row in await aggregate(self._transactions, _core.balances_pipeline(cfg))
        }
        accounts = await to_list(self._accounts.find({}))
        known = {repr(a["_id"]) for a in accounts}
        mismatches, repaired = [], []
        for doc in accounts:
            if cfg.balance_field is None:
                continue
            calculated = int(totals.get(doc["_id"], {}).get("total", 0))
            cached = doc.get(cfg.balance_field)
            if cached is not None and int(cached) == calculated:
                continue
            # The two reads above are not one snapshot: confirm on this account alone.
            found = await self._confirm_drift(doc["_id"])
            if found is None:
                continue
            mismatch, state = found
            mismatches.append(mismatch)
            if repair and await self._repair_balance(mismatch, state):
                repaired.append(doc["_id"])
        missing = [account_id for account_id in totals if repr(account_id) not in known]
        operations = await aggregate(self._transactions, _verify_operations_pipeline(cfg))
        unbalanced = []
        for op in operations:
            if op["count"] != op["legs"]:
                unbalanced.append(
                    UnbalancedOperation(
                        operation_id=op["_id"],
                        kind=op["kind"],
                        problem=f"has {op['count']} legs, its documents say {op['legs']}",
                    )
                )
            elif op["kind"] in ("transfer", "post") and op["total"] != 0:
                unbalanced.append(
                    UnbalancedOperation(
                        operation_id=op["_id"],
                        kind=op["kind"],
                        problem=f"legs sum to {op['total']}",
                    )
                )
        links = await to_list(
            self._transactions.find(
                {
                    "$or": [
                        {_core.REVERTS: {"$exists": True}},
                        {_core.REVERTED_BY: {"$exists": True}},
                    ]
                },
                {_core.REVERTS: 1, _core.REVERTED_BY: 1, cfg.amount_field: 1},
            )
        )
        if repair:
            await self._clear_stale_marks(links)
        broken = _check_links(cfg, links)
        if not await self._has_transactions():
            broken += await self._orphan_keys(repair=repair)
        return VerifyReport(
            accounts_checked=len(accounts),
            transactions_checked=sum(int(row["count"]) for row in totals.values()),
            operations_checked=len(operations),
            balance_mismatches=mismatches,
            unbalanced_operations=unbalanced,
            broken_links=broken,
            missing_accounts=missing,
            repaired=repaired,
        )

    # Change streams

    async def watch(
        self,
        *,
        accounts: Sequence[Any] | None = None,
        kinds: Sequence[str] | None = None,
        resume_after: Mapping[str, Any] | None = None,
        start_after: Mapping[str, Any] | None = None,
        start_at_operation_time: Any = None,
        max_await_time_ms: int = 500,
    ) -> AsyncLedgerStream:
        """Open a change stream of committed operations (one ``LedgerEvent`` each).

        The stream is open when this returns: every operation committed after it is seen.
        ``accounts`` (references) and ``kinds`` filter on the server. Resume with a token
        from ``event.resume_token`` or ``stream.resume_token``.
        """
        account_ids = None
        if accounts is not None:
            if isinstance(accounts, Mapping | str) or not isinstance(accounts, Sequence):
                accounts = [accounts]
            account_ids = [await self._account_id(a) for a in accounts]
        return await open_stream(
            self._cfg,
            self._transactions,
            account_ids=account_ids,
            kinds=_events.validate_kinds(kinds),
            resume_after=resume_after,
            start_after=start_after,
            start_at_operation_time=start_at_operation_time,
            max_await_time_ms=max_await_time_ms,
        )

    async def listen(
        self,
        handler: Callable[[Any], Any],
        *,
        checkpoint: str,
        accounts: Sequence[Any] | None = None,
        kinds: Sequence[str] | None = None,
        start_at_operation_time: Any = None,
        retries: int = 3,
        backoff: float = 0.5,
        stop: Any = None,
        checkpoint_interval: float = 5.0,
        max_await_time_ms: int = 500,
        ready: Any = None,
    ) -> None:
        """Run ``handler(event)`` for every committed operation, resuming from a checkpoint.

        Delivery is at least once: the resume token is stored (in ``checkpoints_collection``,
        one document per ``checkpoint`` name) only after the handler returned, so a restart
        re-delivers at most the event that was in flight. Without a stored token it starts
        now, or at ``start_at_operation_time``. During quiet periods the stored token is
        refreshed every ``checkpoint_interval`` seconds so it does not age out of the oplog.
        A failing handler is retried ``retries`` times with exponential ``backoff``, then its
        error stops the listener (the event is not skipped). It runs until ``stop.is_set()``
        (a ``threading.Event`` or ``asyncio.Event``), cancellation, or KeyboardInterrupt.
        ``ready.set()`` is called once the change stream is open.
        """
        store = self._db[self._cfg.checkpoints_collection]
        token = await load_checkpoint(store, checkpoint)
        stream = await self.watch(
            accounts=accounts,
            kinds=kinds,
            resume_after=token,
            start_at_operation_time=None if token else start_at_operation_time,
            max_await_time_ms=max_await_time_ms,
        )
        last_saved = time.monotonic()
        async with stream:
            if ready is not None:
                ready.set()
            while stop is None or not stop.is_set():
                event = await stream.try_next()
                if event is None:
                    # Quiet: keep the stored token fresh (post-batch) so it stays in the oplog.
                    if time.monotonic() - last_saved >= checkpoint_interval:
                        fresh = stream.resume_token
                        if fresh is not None and fresh != token:
                            await save_checkpoint(store, checkpoint, fresh, None)
                            token = fresh
                        last_saved = time.monotonic()
                    continue
                await handle(handler, event, retries=retries, backoff=backoff)
                token = event.resume_token
                await save_checkpoint(store, checkpoint, token, event.operation_id)
                last_saved = time.monotonic()

    async def _account_id(self, account: Any) -> Any:
        ref = _core.validate_account(account, self._cfg.owned_account_fields)
        if ref.is_id:
            return ref.id
        return (await self._find_account(account))["_id"]

    async def _confirm_drift(
        self, account_id: Any
    ) -> tuple[BalanceMismatch, dict[str, Any]] | None:
        """Compare one account's cached balance with its transactions, consistently.

        The two reads describe the same moment when the account's ``seq`` equals the highest
        ``account_seq`` of its transactions, or when a second look finds nothing changed (a
        corrupted sequence, or an operation that failed midway without a DB transaction).
        Returns None when the account is consistent, or kept moving under concurrent writes.
        """
        cfg = self._cfg
        assert cfg.balance_field is not None
        previous = None
        for _attempt in range(_MAX_ATTEMPTS):
            doc = await self._accounts.find_one({"_id": account_id})
            if doc is None:
                return None
            rows = await aggregate(
                self._transactions,
                [
                    {"$match": {cfg.account_link_field: account_id}},
                    *_core.balances_pipeline(cfg),
                ],
            )
            calculated = int(rows[0]["total"]) if rows else 0
            top = int(rows[0]["seq"] or 0) if rows else 0
            cached = doc.get(cfg.balance_field)
            seq = doc.get(_core.SEQ)
            state = {"cached": cached, "seq": seq, "top": top, "calculated": calculated}
            if int(seq or 0) == top or state == previous:
                if int(seq or 0) == top and cached is not None and int(cached) == calculated:
                    return None
                mismatch = BalanceMismatch(
                    account_id=account_id, cached=cached, calculated=calculated
                )
                return mismatch, state
            previous = state
        return None

    async def _repair_balance(self, mismatch: BalanceMismatch, state: dict[str, Any]) -> bool:
        """Set the cached balance (and sequence) from the transactions, unless it moved."""
        cfg = self._cfg
        assert cfg.balance_field is not None
        result = await self._accounts.update_one(
            {
                "_id": mismatch.account_id,
                cfg.balance_field: state["cached"],
                _core.SEQ: state["seq"],
            },
            {"$set": {cfg.balance_field: bson.Int64(mismatch.calculated), _core.SEQ: state["top"]}},
        )
        return bool(result.modified_count)

    async def _orphan_keys(self, *, repair: bool) -> list[BrokenLink]:
        """Idempotency records whose operation never got written (a crash between the two
        writes, possible only without DB transactions); repair deletes them so the key can
        be used again."""
        broken = []
        records = await to_list(
            self._idempotency.find({}, {"transaction_ids": 1, "operation_id": 1})
        )
        for start in range(0, len(records), 1000):
            batch = records[start : start + 1000]
            firsts = [r["transaction_ids"][0] for r in batch if r.get("transaction_ids")]
            found = await to_list(self._transactions.find({"_id": {"$in": firsts}}, {"_id": 1}))
            present = {repr(d["_id"]) for d in found}
            for record in batch:
                ids = record.get("transaction_ids") or [None]
                if repr(ids[0]) in present:
                    continue
                broken.append(
                    BrokenLink(
                        transaction_id=ids[0],
                        problem=f"idempotency key {record['_id']!r} records transactions "
                        "that were never written",
                    )
                )
                if repair:
                    await self._idempotency.delete_one(
                        {"_id": record["_id"], _core.OPERATION_ID: record.get("operation_id")}
                    )
        return broken

    async def _clear_stale_marks(self, links: list[dict[str, Any]]) -> None:
        ids = {repr(d["_id"]) for d in links}
        for doc in links:
            mark = doc.get(_core.REVERTED_BY)
            if mark is None or repr(mark) in ids:
                continue
            if await self._transactions.find_one({"_id": mark}) is not None:
                continue  # the reversal was written after links were read
            result = await self._transactions.update_one(
                {"_id": doc["_id"], _core.REVERTED_BY: mark}, {"$unset": {_core.REVERTED_BY: ""}}
            )
            if result.modified_count:
                del doc[_core.REVERTED_BY]

    async def rebuild_balances(self) -> VerifyReport:
        """Rebuild every drifted cached balance from the transactions: ``verify(repair=True)``."""
        return await self.verify(repair=True)


def _verify_operations_pipeline(cfg: LedgerConfig) -> list[dict[str, Any]]:
    return [
        {
            "$group": {
                "_id": f"${_core.OPERATION_ID}",
                "kind": {"$first": f"${_core.KIND}"},
                "legs": {"$first": f"${_core.LEGS}"},
                "count": {"$sum": 1},
                "total": {"$sum": f"${cfg.amount_field}"},
            }
        }
    ]


def _check_links(cfg: LedgerConfig, docs: list[Mapping[str, Any]]) -> list[BrokenLink]:
    by_id = {repr(d["_id"]): d for d in docs}
    broken = []
    for doc in docs:
        reverts = doc.get(_core.REVERTS)
        if reverts is not None:
            target = by_id.get(repr(reverts))
            if target is None:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=f"reverts {reverts!r}, which is missing or not marked",
                    )
                )
            elif target.get(_core.REVERTED_BY) != doc["_id"]:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=(
                            f"reverts {reverts!r}, which is marked reverted_by "
                            f"{target.get(_core.REVERTED_BY)!r}"
                        ),
                    )
                )
            elif int(target[cfg.amount_field]) != -int(doc[cfg.amount_field]):
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=(
                            f"amount {doc[cfg.amount_field]} does not negate "
                            f"{target[cfg.amount_field]}"
                        ),
                    )
                )
        reverted_by = doc.get(_core.REVERTED_BY)
        if reverted_by is not None:
            reversal = by_id.get(repr(reverted_by))
            if reversal is None or reversal.get(_core.REVERTS) != doc["_id"]:
                broken.append(
                    BrokenLink(
                        transaction_id=doc["_id"],
                        problem=f"reverted_by {reverted_by!r}, which does not revert it",
                    )
                )
    return broken
