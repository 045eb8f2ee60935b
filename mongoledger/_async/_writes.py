"""The write path: ``increase``, ``decrease``, ``transfer``, ``post``, ``revert`` and
``open_account`` (hooks: ``_hooks``; undoing without DB transactions: ``_compensation``).

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
* a refused leg (a floor, an overflow): one more read, of the account in the same DB
  transaction, to name the reason.
* once per ledger instance: ``hello`` (transaction support) and ``listIndexes`` per
  collection (``createIndexes`` only for a missing index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from mongoledger._async._base import _DuplicateKey, _GuardFailed, _Retry
from mongoledger._async._compensation import Compensation, _Posting
from mongoledger._async._hooks import Hooks
from mongoledger._async._io import (
    is_plain_mongomock,
    mongomock_writes,
    to_list,
)
from mongoledger._core import clock, receipts, schema
from mongoledger._core.accounts import (
    AccountRef,
    account_creation,
    account_filter,
    check_distinct,
    validate_account,
)
from mongoledger._core.amounts import (
    NO_FLOOR,
    NoFloor,
    check_balanced,
    validate_amount,
    validate_min_balance,
    validate_positive,
)
from mongoledger._core.currencies import check_currencies
from mongoledger._core.data import validate_data
from mongoledger._core.dates import settle_date
from mongoledger._core.guards import LegUpdate, explain_refusal, leg_update
from mongoledger._core.idempotency import (
    fingerprint,
    idempotency_document,
    validate_idempotency_key,
)
from mongoledger._core.transactions import (
    Leg,
    check_sizes,
    reversal_legs,
    transaction_document,
    validate_transaction_id,
)
from mongoledger.errors import (
    AccountNotFound,
    AlreadyReverted,
    InvalidAccount,
    InvalidAmount,
    InvalidConfiguration,
    TransactionNotFound,
)
from mongoledger.models import OperationKind

__all__ = ["Writes"]

_IS_SYNC = False


def _is_sequence(value: object) -> bool:
    """A list, a tuple or another sequence, but not a string or a mapping: a post's legs and
    each leg (the ``type`` tests first: the ABC checks cost more than the rest of a leg)."""
    if type(value) is list or type(value) is tuple:
        return True
    return not isinstance(value, Mapping | str | bytes) and isinstance(value, Sequence)


class _Reverted(_Retry):
    """A leg to revert was marked ``reverted_by`` concurrently."""

    def __init__(self, legs: list[Leg]) -> None:
        self.legs = legs


class Writes(Hooks, Compensation):
    """Operations that move money."""

    async def increase(
        self,
        account: Any,
        amount: Any,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ObjectId:
        """Move ``amount`` into ``account`` (negative: out of it). Returns the transaction id."""
        value = validate_amount(amount)
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
        value = validate_amount(amount)
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
        value = validate_positive(amount, what="transfer amount", hint="; swap the accounts")
        owned = self._cfg.owned_account_fields
        source = validate_account(from_account, owned)
        target = validate_account(to_account, owned)
        check_distinct("transfer", source, target)
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
        if not _is_sequence(legs):
            raise InvalidAmount(f"legs {legs!r} must be a list of (account, amount) pairs")
        if len(legs) < 2:
            raise InvalidAmount(f"a post needs at least two legs, got {len(legs)}: {list(legs)!r}")
        planned = []
        for i, leg in enumerate(legs):
            if not _is_sequence(leg):
                raise InvalidAmount(f"leg {i} {leg!r} is not an (account, amount[, data]) tuple")
            if len(leg) not in (2, 3):
                raise InvalidAmount(f"leg {i} {leg!r} is not an (account, amount[, data]) tuple")
            amount = validate_amount(leg[1], what=f"leg {i} amount")
            planned.append((leg[0], amount, leg[2] if len(leg) == 3 else None))
        check_balanced("post", [amount for _, amount, _ in planned])
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
        tid = validate_transaction_id(transaction_id)
        cfg = self._cfg
        extra = validate_data(cfg, data)
        key = validate_idempotency_key(idempotency_key)
        fp = ""
        if key is not None:
            fp = fingerprint("revert", [(tid, 0, extra)])
            found = await self._idempotent_result(key, fp)
            if found is not None:
                return found[0] if len(found) == 1 else found
        original = await self._transactions.find_one(
            {"_id": tid}, {schema.OPERATION_ID: 1, schema.REVERTED_BY: 1}
        )
        if original is None:
            raise TransactionNotFound(tid)
        if original.get(schema.REVERTED_BY) is not None:
            raise AlreadyReverted(tid, original[schema.REVERTED_BY])
        docs = await to_list(
            self._transactions.find({schema.OPERATION_ID: original[schema.OPERATION_ID]}).sort(
                schema.LEG, 1
            )
        )
        for doc in docs:
            if doc.get(schema.REVERTED_BY) is not None:
                raise AlreadyReverted(doc["_id"], doc[schema.REVERTED_BY])
        legs = reversal_legs(cfg, docs)
        for leg in legs:
            leg.data = dict(extra)
        ids = await self._execute("revert", legs, key, fp, revert=True)
        return ids[0] if len(ids) == 1 else ids

    async def open_account(
        self,
        attributes: Mapping[str, Any] | None = None,
        *,
        min_balance: int | NoFloor | None = None,
    ) -> Any:
        """Get or create the account with exactly these attributes; returns its ``_id``.

        ``min_balance`` (e.g. 0) makes every operation that would take the balance below it
        fail with ``InsufficientFunds``. Without it, a new account gets the ledger's
        ``default_min_balance`` and an existing one is returned whatever its floor;
        ``min_balance=NO_FLOOR`` opens an account without a floor even under a default.
        An existing account with another explicit floor is an ``InvalidAccount`` error.
        ``attributes=None`` creates a new anonymous account.
        """
        cfg = self._cfg
        floor = validate_min_balance(min_balance)
        if floor is not None and cfg.balance_field is None:
            raise InvalidConfiguration(
                f"min_balance={floor!r} needs a cached balance: this ledger has "
                "balance_field=None, so no guard can check a floor"
            )
        explicit = min_balance is not None
        initial = floor if explicit else cfg.default_min_balance
        await self._supports_transactions()  # Decision 9: detected (or refused) at a first write
        await self._prepare()
        if attributes is None:
            ref = AccountRef(id=ObjectId())
        else:
            if not isinstance(attributes, Mapping):
                raise InvalidAccount(f"attributes {attributes!r} is not a mapping")
            ref = validate_account(attributes, cfg.owned_account_fields)
            existing = await self._find_by_attributes(ref)
            if existing is not None:
                return self._check_floor(existing, ref, min_balance if explicit else None)
        flt, update = account_creation(cfg, ref, initial)
        try:
            with mongomock_writes(self._accounts):
                doc = await self._accounts.find_one_and_update(
                    flt, update, upsert=True, return_document=ReturnDocument.AFTER
                )
        except DuplicateKeyError:  # a concurrent caller created it first
            doc = await self._accounts.find_one(flt)
        return self._check_floor(doc, ref, min_balance if explicit else None)

    @staticmethod
    def _check_floor(doc: Mapping[str, Any], ref: AccountRef, wanted: Any) -> Any:
        """The account's id; an explicitly named floor (a number or NO_FLOOR) must be its."""
        if wanted is None:
            return doc["_id"]
        floor = doc.get(schema.MIN_BALANCE)
        if floor != validate_min_balance(wanted):
            raise InvalidAccount(
                f"account {ref.describe()!r} exists with min_balance "
                f"{NO_FLOOR if floor is None else floor!r}, not {wanted!r}"
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
        extra = validate_data(cfg, data)
        refs = [
            account if isinstance(account, AccountRef) else validate_account(account, owned)
            for account, _, _ in legs
        ]
        planned = []
        for i, ((_, amount, leg_data), ref) in enumerate(zip(legs, refs, strict=True)):
            merged = dict(extra)
            if leg_data is not None:
                merged.update(validate_data(cfg, leg_data, what=f"leg {i} data"))
            planned.append(Leg(account=ref, amount=amount, data=merged))
        key = validate_idempotency_key(idempotency_key)
        fp = ""
        if key is not None:
            args = [(leg.account, leg.amount, leg.data) for leg in planned]
            fp = fingerprint(kind, args)
            found = await self._idempotent_result(
                key, fp, earlier=lambda: fingerprint(kind, args, earlier=True)
            )
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
        if kind == "transfer" and not (legs[0].account.is_id and legs[1].account.is_id):
            # Two ids were compared by transfer() already; a resolved attribute set was not.
            check_distinct(
                "transfer",
                legs[0].account,
                legs[1].account,
                (legs[0].account_id, legs[1].account_id),
            )
        if self._before:
            await self._run_before_hooks(kind, legs, operation_id, revert=revert)
        # Decision 4: a date_value is evaluated once; the ledger's own "now" is read inside
        # the DB transaction (see _write), so the size check uses a stand-in (date=None).
        date = None if cfg.date_value is None else cfg.operation_date()
        idempotency = None if key is None else (key, fp)
        check_sizes(cfg, legs, kind=kind, date=date, idempotency=idempotency)
        resolved = [leg.account_id for leg in legs]  # None: the operation creates the account
        write = partial(self._write, kind, legs, resolved, operation_id, date, idempotency, revert)
        found = await self._attempts(
            kind, write, legs, idempotency=idempotency, retry=self._already_reverted
        )
        if found is not None:
            return found
        if self._after:
            await self._run_after_hooks(kind, legs, operation_id)
        return [leg.id for leg in legs]

    async def _write(
        self,
        kind: OperationKind,
        legs: list[Leg],
        resolved: list[Any],
        operation_id: ObjectId,
        given: Any,
        idempotency: tuple[str, str] | None,
        revert: bool,
    ) -> None:
        """One attempt of an operation. It starts from the ``resolved`` account ids (and so
        does every run with_transaction makes of it), never from ids an aborted (or
        compensated) run created: an account it created is gone with it."""

        async def body(session: Any) -> None:
            for leg, account_id in zip(legs, resolved, strict=True):
                leg.account_id = account_id
            posting = _Posting(marked=legs) if revert else _Posting()
            try:
                if idempotency is not None:
                    ids = [leg.id for leg in legs]
                    await self._record_key(idempotency, kind, operation_id, ids, session)
                    posting.key = idempotency
                if revert:
                    await self._mark_reverted(legs, session)
                await self._post_legs(
                    kind, legs, operation_id, given, idempotency, session, posting
                )
            except BaseException:
                if session is None:
                    await self._undo(posting, operation_id)
                raise

        await self._run(body, None if idempotency is None else idempotency[0])

    async def _post_legs(
        self,
        kind: OperationKind,
        legs: list[Leg],
        operation_id: ObjectId,
        given: Any,
        idempotency: tuple[str, str] | None,
        session: Any,
        posting: _Posting,
    ) -> None:
        """Move every leg's account, settle the operation's date, insert its transactions.
        ``posting`` records what was done, for the compensation without DB transactions."""
        chosen = self._cfg.date_value is None  # the ledger picks the date: "now"
        # "Now" is read inside the DB transaction, at every attempt: a retried attempt never
        # carries the date of one that lost to a concurrent writer.
        date = clock.utcnow() if chosen else given
        posting.dates = (date, date)
        latest: list[tuple[Any, Any]] = []  # (account id, its last_date after the leg)
        await self._move_legs(legs, session, posting.applied, date=date, latest=latest)
        settled = await self._settle_date(
            date, latest, posting.flagged, chosen=chosen, session=session
        )
        posting.dates = (date, settled)
        await self._insert_legs(kind, legs, operation_id, settled, idempotency, session)

    async def _record_key(
        self,
        idempotency: tuple[str, str],
        kind: str,
        operation_id: ObjectId,
        ids: list[ObjectId],
        session: Any,
    ) -> None:
        """Insert the key's record: the unique ``_id`` makes its first operation the only one."""
        record = idempotency_document(self._cfg, *idempotency, kind, operation_id, ids)
        try:
            await self._idempotency.insert_one(record, session=session)
        except DuplicateKeyError:  # a concurrent call with this key got there first
            raise _DuplicateKey from None

    async def _move_legs(
        self,
        legs: list[Leg],
        session: Any,
        applied: list[tuple[Leg, bool]],
        *,
        date: Any,
        latest: list[tuple[Any, Any]],
    ) -> None:
        """The guarded ``$inc`` of every leg, in order (creating missing accounts), then the
        currency check on what those updates returned. ``applied`` collects what moved;
        ``latest`` each moved account's ``last_date`` after the leg (see ``_settle_date``)."""
        cfg = self._cfg
        balance_field = cfg.balance_field
        currency_field = cfg.currency_field
        for index, leg in enumerate(legs):
            target = leg.account
            by_id = target.is_id
            if leg.account_id is not None and not by_id:
                target = AccountRef(id=leg.account_id)
            update = leg_update(cfg, target, leg.amount, date, leg.held)
            if leg.currency_guard is not None and currency_field is not None:
                update.filter[currency_field] = leg.currency_guard[0]
            doc = await self._move(update, session)
            created = None
            if doc is None and (leg.account_id is None or (cfg.auto_create_account and by_id)):
                # The account may not exist yet: create it at zero, then move it.
                created = await self._create_account(target, session, index)
                doc = await self._move(update, session)
            if doc is None:
                try:  # explained as the guard saw it: with the account it created
                    await self._explain_refusal(leg, target, session)
                finally:
                    if created is not None and session is None:
                        await self._drop_account(created)
                raise _GuardFailed(index)
            leg.account_id = doc["_id"]
            leg.account_seq = int(doc[schema.SEQ])
            if balance_field:
                leg.balance_after = int(doc[balance_field])
            if currency_field is not None:
                leg.currency = doc.get(currency_field)
            applied.append((leg, created is not None))
            if leg.amount:  # a hold's leg moves no balance and dates nothing
                latest.append((doc["_id"], doc.get(schema.LAST_DATE)))
        check_currencies(cfg, legs)

    async def _create_account(self, target: AccountRef, session: Any, index: int) -> Any:
        """Create the account ``target`` names at zero (an upsert by its ``_id`` or attribute
        digest, with the ledger's ``default_min_balance``); returns its ``_id``, or None when
        it existed already. A concurrent creator wins with a duplicate key: in a DB transaction
        the server aborted ours, so the whole operation runs again (``_GuardFailed(index)``);
        without one, the account exists now."""
        flt, insert = account_creation(self._cfg, target, self._cfg.default_min_balance)
        try:
            result = await self._accounts.update_one(flt, insert, upsert=True, session=session)
        except DuplicateKeyError:
            if session is not None:
                raise _GuardFailed(index) from None
            return None
        return result.upserted_id

    async def _insert_legs(
        self,
        kind: OperationKind,
        legs: list[Leg],
        operation_id: ObjectId,
        date: Any,
        idempotency: tuple[str, str] | None,
        session: Any,
    ) -> None:
        """The operation's transaction documents, one insert for all legs."""
        cfg = self._cfg
        if len(legs) == 2 and cfg.extra_account_link_field:
            legs[0].extra_account_id = legs[1].account_id
            legs[1].extra_account_id = legs[0].account_id
        docs = [
            transaction_document(
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
        receipts.record(cfg, docs)

    async def _settle_date(
        self,
        date: Any,
        latest: list[tuple[Any, Any]],
        flagged: list[tuple[Any, Any]],
        *,
        chosen: bool,
        session: Any,
    ) -> Any:
        """The operation's date, once every account carries it in ``last_date`` (see
        :func:`~mongoledger._core.dates.settle_date`): the accounts behind the ledger's own
        moved-up "now" get it in ``last_date``, so each account's dates follow its commit order
        and ``balance_at`` keeps its one-read shortcut; the accounts a given ``date_value``
        backdates record it in ``backdated_from``, which sends ``balance_at`` to the
        aggregation where the shortcut would be wrong. One command per such account, only then.
        """
        settled, behind = settle_date(date, latest, chosen=chosen)
        for account_id in behind:
            if chosen:
                await self._accounts.update_one(
                    {"_id": account_id}, {"$max": {schema.LAST_DATE: settled}}, session=session
                )
                continue
            before = await self._accounts.find_one_and_update(
                {"_id": account_id},
                {"$min": {schema.BACKDATED_FROM: date}},
                projection={schema.BACKDATED_FROM: 1},
                session=session,
            )
            flagged.append((account_id, (before or {}).get(schema.BACKDATED_FROM)))
        return settled

    async def _move(self, update: LegUpdate, session: Any) -> Any:
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
        """Mark the originals ``reverted_by`` (one command), unless one already is.

        Each filter names the original's account too: on a transactions collection sharded on
        the account, the update goes to that shard alone instead of to every shard.
        """
        link = self._cfg.account_link_field
        updates = [
            (
                {"_id": leg.reverts, link: leg.account_id, schema.REVERTED_BY: {"$exists": False}},
                {"$set": {schema.REVERTED_BY: leg.id}},
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
            raise _Reverted(legs)

    async def _already_reverted(self, reverted: _Retry) -> None:
        """A revert lost to a concurrent one (``_Reverted``): raise ``AlreadyReverted`` naming
        the reversal that marked an original, or return to run again (its mark is gone)."""
        assert isinstance(reverted, _Reverted)
        for leg in reverted.legs:
            doc = await self._transactions.find_one({"_id": leg.reverts})
            if doc is not None and doc.get(schema.REVERTED_BY) is not None:
                raise AlreadyReverted(leg.reverts, doc[schema.REVERTED_BY]) from None

    async def _explain_refusal(self, leg: Leg, target: AccountRef, session: Any) -> None:
        """Raise the reason the guarded ``$inc`` of ``leg`` matched nothing, or return to let
        the operation run again (the account was being created, or the cause went away).

        The account is read right after the refusal, in the same DB transaction: its snapshot
        is what the guard saw, and includes this operation's earlier legs. (Without DB
        transactions it is read at once, and a concurrent write may have changed it.)
        """
        cfg = self._cfg
        doc = await self._accounts.find_one(account_filter(cfg, target), session=session)
        if doc is None:
            if not cfg.auto_create_account:
                raise AccountNotFound(leg.account.describe())
            return  # created concurrently, or gone: the operation runs again
        explain_refusal(cfg, leg, doc)

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
