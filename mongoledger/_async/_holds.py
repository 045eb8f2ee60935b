"""Two-phase transfers: ``hold``, ``capture``, ``void``, ``expire_holds`` (and ``sweep_holds``,
which runs it periodically in a service), ``get_hold`` and ``holds``.

A hold reserves part of the source account's available balance: its ``held`` field (the sum of
its pending holds) goes up in the same guarded ``findAndModify`` that checks
``balance - held - amount >= min_balance``, and every debit checks the available balance the
same way, so reserved money cannot be spent twice. A capture moves money like a transfer (one
operation of kind ``capture`` whose legs name the hold) and releases the whole reservation in
the same DB transaction; a void or an expiry releases it. Each closing step is one guarded
update that matches only a pending hold, so a hold closes exactly once whatever races.

Round trips (accounts referenced by ``_id``, steady state):

* ``hold``: one ``findAndModify`` (the source's guarded ``$inc`` of ``held``) + one ``insert``
  (the hold) + ``commitTransaction``.
* ``capture``: one ``findAndModify`` closing the hold (it returns the hold, so nothing is read
  first) + one ``findAndModify`` per account + one ``insert`` (both legs) + commit.
* ``void``: one ``findAndModify`` closing the hold + one ``update`` (releasing ``held``) + commit.
* ``expire_holds``: one ``find`` per batch, then per expired hold ``findAndModify`` + ``update``
  + commit.
* an idempotency key adds one read and one insert; an attribute-set reference one indexed read;
  ``before_write`` hooks on a capture or void one read of the hold (hooks run before the DB
  transaction and see the accounts). With ``currency_field`` set (or ``auto_create_account``
  off) a hold reads its target account once: its currency, or whether it exists.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

import bson
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

from mongoledger._async._base import _Retry
from mongoledger._async._compensation import _Posting
from mongoledger._async._io import call_back, check_callback, sleep, to_list
from mongoledger._async._writes import Writes
from mongoledger._core import clock, schema
from mongoledger._core.accounts import AccountRef, account_filter, check_distinct, validate_account
from mongoledger._core.amounts import validate_positive
from mongoledger._core.data import validate_data
from mongoledger._core.holds import (
    CLOSED_PROJECTION,
    HOLDS_ORDER,
    capture_update,
    closing_filter,
    diagnose,
    expire_filter,
    expire_update,
    expiry_fingerprint,
    hold_document,
    hold_to_model,
    holds_query,
    sweep_filter,
    validate_expiry,
    validate_hold_id,
    validate_now,
    validate_statuses,
    void_update,
)
from mongoledger._core.idempotency import fingerprint, validate_idempotency_key
from mongoledger._core.reads import validate_page_limit
from mongoledger._core.transactions import Leg, check_sizes
from mongoledger.errors import (
    AccountNotFound,
    HoldNotFound,
    InvalidAmount,
    InvalidArgument,
)
from mongoledger.models import Hold

__all__ = ["Holds"]

_IS_SYNC = False
log = logging.getLogger("mongoledger.holds")


class _HoldGuard(_Retry):
    """A closing update matched nothing; diagnosed after the DB transaction has ended."""


class Holds(Writes):
    """Holds: reserve, capture, void, expire; the available balance."""

    async def hold(
        self,
        from_account: Any,
        to_account: Any,
        amount: Any,
        data: Mapping[str, Any] | None = None,
        *,
        expires_at: Any = None,
        idempotency_key: str | None = None,
    ) -> ObjectId:
        """Reserve ``amount`` (> 0) of ``from_account``'s available balance for ``to_account``.

        Moves no money: ``capture`` moves it, ``void`` or expiry releases it. ``expires_at``
        is a datetime (naive means UTC) or a ``timedelta`` from now; after it the hold can no
        longer be captured and ``expire_holds`` releases it. Returns the hold id.
        """
        cfg = self._cfg
        value = validate_positive(amount, what="hold amount", hint="; swap the accounts")
        owned = cfg.owned_account_fields
        source = validate_account(from_account, owned)
        target = validate_account(to_account, owned)
        check_distinct("hold", source, target)
        extra = validate_data(cfg, data, owned=cfg.owned_hold_fields)
        now = clock.utcnow()
        expiry = validate_expiry(expires_at, now)
        key = validate_idempotency_key(idempotency_key)
        fp = ""
        if key is not None:
            fp = fingerprint(
                "hold",
                [
                    (source, -value, extra),
                    (target, value, {"expires_at": expiry_fingerprint(expires_at)}),
                ],
            )
            found = await self._idempotent_result(key, fp)
            if found is not None:
                return found[0]
        await self._prepare()
        hold_id = ObjectId()
        # A hold writes no transaction: its leg goes by the hold id (as hooks see it).
        leg = Leg(account=source, amount=0, data=extra, held=value, hold_id=hold_id, id=hold_id)
        leg.account_id = await self._resolve_for_write(source)
        target_id, target_currency = await self._hold_target(target)
        if cfg.currency_field is not None:
            # The source's guarded update matches only an account in the target's currency.
            described = target.describe() if target_id is None else target_id
            leg.currency_guard = (target_currency, described)
        if not (source.is_id and target.is_id):  # two ids were compared above already
            check_distinct("hold", source, target, (leg.account_id, target_id))
        if self._before:
            view = self._hold_view(leg)
            await self._run_before_hooks(
                "hold", [view], hold_id, revert=False, owned=cfg.owned_hold_fields
            )
            if view.amount < 0:
                raise InvalidAmount(
                    f"hold amount {view.amount} set by a before_write hook must be positive"
                )
            leg.held, leg.data = view.amount, view.data
        idempotency = None if key is None else (key, fp)
        resolved = leg.account_id  # None: the hold creates the source account
        write = partial(
            self._write_hold, leg, resolved, target, target_id, expiry, now, idempotency
        )
        # A refusal raises its reason inside: a guard that failed had a cause that went away.
        found = await self._attempts("hold", write, [leg], idempotency=idempotency)
        if found is not None:
            return found[0]
        if self._after:
            await self._run_after_hooks("hold", [self._hold_view(leg)], hold_id, result=[hold_id])
        return hold_id

    async def capture(
        self,
        hold_id: Any,
        amount: Any = None,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[ObjectId]:
        """Move ``amount`` of a pending hold (default: all of it; 0 < amount <= held) from its
        source to its target, as one operation of kind ``capture``; the rest of the
        reservation is released in the same DB transaction. Returns ``[from_leg_id,
        to_leg_id]``. A closed hold raises ``HoldClosed``; one past its ``expires_at``
        ``HoldExpired``, even before ``expire_holds`` ran.
        """
        cfg = self._cfg
        hid = validate_hold_id(hold_id)
        value = None
        if amount is not None:
            value = validate_positive(amount, what="capture amount")
        extra = validate_data(cfg, data)
        key = validate_idempotency_key(idempotency_key)
        fp = ""
        if key is not None:
            fp = fingerprint("capture", [(AccountRef(id=hid), value or 0, extra)])
            found = await self._idempotent_result(key, fp)
            if found is not None:
                return found
        await self._prepare()
        operation_id = ObjectId()
        legs = [
            Leg(account=AccountRef(), amount=0, data=dict(extra), hold_id=hid),
            Leg(account=AccountRef(), amount=0, data=dict(extra), hold_id=hid),
        ]
        if self._before:
            doc = await self._pending_hold(hid, value)
            self._capture_legs(legs, doc, value or int(doc[schema.AMOUNT]))
            await self._run_before_hooks("capture", legs, operation_id, revert=False)
            value = legs[1].amount  # a hook may have changed it (the legs still balance)
            if value < 0:
                raise InvalidAmount(
                    f"capture amount {value} set by a before_write hook must be positive"
                )
        # As for every operation: a date_value is evaluated once; "now" inside the DB transaction.
        date = None if cfg.date_value is None else cfg.operation_date()
        idempotency = None if key is None else (key, fp)
        check_sizes(cfg, legs, kind="capture", date=date, idempotency=idempotency)
        write = partial(self._write_capture, hid, value, legs, operation_id, date, idempotency)
        found = await self._attempts(
            "capture",
            write,
            legs,
            idempotency=idempotency,
            retry=lambda _: self._diagnose_hold(hid, value),
            refused=lambda: f"hold {hid!r}",
        )
        if found is not None:
            return found
        if self._after:
            await self._run_after_hooks("capture", legs, operation_id)
        return [leg.id for leg in legs]

    async def void(self, hold_id: Any, data: Mapping[str, Any] | None = None) -> None:
        """Release the whole of a pending hold. ``data`` is kept on the hold (``void_data``).
        A closed hold raises ``HoldClosed``; one past its ``expires_at`` ``HoldExpired``."""
        hid = validate_hold_id(hold_id)
        extra = validate_data(self._cfg, data, owned=frozenset())  # nested: any name
        await self._prepare()
        operation_id = ObjectId()
        leg = Leg(account=AccountRef(), amount=0, data=extra, hold_id=hid, id=hid)
        if self._before:
            doc = await self._pending_hold(hid, None)
            self._release_leg(leg, doc)
            view = self._hold_view(leg)
            await self._run_before_hooks(
                "void", [view], operation_id, revert=True, owned=frozenset()
            )
            leg.data = view.data
        write = partial(self._write_release, hid, leg, operation_id, expire_at=None)
        await self._attempts("void", write, [leg], retry=lambda _: self._diagnose_hold(hid, None))
        if self._after:
            await self._run_after_hooks("void", [self._hold_view(leg)], operation_id, result=[hid])

    async def expire_holds(self, now: datetime | None = None, *, batch_size: int = 100) -> int:
        """Release every pending hold whose ``expires_at`` is at or before ``now`` (default:
        now); returns how many this call released.

        Works in batches of ``batch_size`` holds (one query each, oldest expiry first), each
        hold in its own small DB transaction, so it never holds a long transaction and live
        writes barely contend with it. Idempotent and safe to run from several processes at
        once: a hold another process (or a capture, a void) closed first is skipped.
        """
        when = validate_now(now)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"batch_size {batch_size!r} must be a positive integer")
        await self._prepare()
        released = 0
        while True:
            cursor = self._holds.find(sweep_filter(when), {"_id": 1})
            batch = await to_list(cursor.sort(schema.EXPIRES_AT, 1).limit(batch_size))
            for doc in batch:
                hid = doc["_id"]
                leg = Leg(account=AccountRef(), amount=0, data={}, hold_id=hid, id=hid)
                if await self._write_release(hid, leg, ObjectId(), expire_at=when):
                    released += 1
            if len(batch) < batch_size:
                return released

    async def sweep_holds(
        self,
        *,
        interval: float = 10.0,
        stop: Any = None,
        batch_size: int = 100,
        report: Any = None,
    ) -> None:
        """Run ``expire_holds()`` every ``interval`` seconds until ``stop.is_set()`` (a
        ``threading.Event`` or ``asyncio.Event``), cancellation or KeyboardInterrupt: the one
        call a service makes to release expired holds in the background (several instances
        may run it at once). A database error is logged and the next round tries again.
        ``report``, if given, is called instead of the log with each round's outcome: the
        number of holds released, or the database error (what it raises ends the sweep).
        """
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < math.inf  # nan fails both
        ):
            raise InvalidArgument(
                f"interval {interval!r} must be a positive, finite number of seconds"
            )
        if report is not None:
            check_callback(report, "report")
        while stop is None or not stop.is_set():
            try:
                released = await self.expire_holds(batch_size=batch_size)
            except PyMongoError as exc:
                if report is not None:
                    await call_back(report, exc, "report")
                else:
                    log.warning("expire_holds failed (%r); retrying in %.1fs", exc, interval)
            else:
                if report is not None:
                    await call_back(report, released, "report")
                elif released:
                    log.info("released %d expired hold(s)", released)
            waited = 0.0
            while waited < interval and (stop is None or not stop.is_set()):
                # In steps only to notice ``stop``; without one, the interval in one sleep.
                step = interval if stop is None else min(0.1, interval - waited)
                await sleep(step)
                waited += step

    # Reads

    async def get_hold(self, hold_id: Any) -> Hold:
        hid = validate_hold_id(hold_id)
        doc = await self._holds.find_one({"_id": hid})
        if doc is None:
            raise HoldNotFound(hid)
        return hold_to_model(self._cfg, doc)

    async def holds(
        self, account: Any = None, *, status: Any = "pending", limit: int | None = None
    ) -> list[Hold]:
        """Holds newest first: of ``account`` (as source or target) or of every account;
        ``status`` one status, a list of them, or None for all."""
        statuses = validate_statuses(status)
        limit = validate_page_limit(limit, default=None)
        account_id = None if account is None else await self._account_id(account)
        cursor = self._holds.find(holds_query(account_id, statuses)).sort(HOLDS_ORDER)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [hold_to_model(self._cfg, d) for d in await to_list(cursor)]

    # The write path of holds

    async def _hold_target(self, target: AccountRef) -> tuple[Any, Any]:
        """The target's ``_id`` (None: an attribute set the hold creates) and its currency,
        read only when needed: an attribute set (resolved anyway), or with ``currency_field``
        set or ``auto_create_account`` off (an unknown ``_id`` is created by the capture)."""
        cfg = self._cfg
        field = cfg.currency_field
        if not target.is_id:
            doc = await self._find_by_attributes(target)
            if doc is not None:
                return doc["_id"], doc.get(field) if field else None
            if not cfg.auto_create_account:
                raise AccountNotFound(target.describe(), "auto_create_account is off")
            assert target.attributes is not None
            return None, target.attributes.get(field) if field else None
        if field is None and cfg.auto_create_account:
            return target.id, None
        doc = await self._accounts.find_one({"_id": target.id}, {field or "_id": 1})
        if doc is None and not cfg.auto_create_account:
            raise AccountNotFound(target.id, "auto_create_account is off")
        return target.id, None if doc is None or field is None else doc.get(field)

    async def _write_hold(
        self,
        leg: Leg,
        resolved: Any,
        target: AccountRef,
        target_id: Any,
        expiry: datetime | None,
        now: datetime,
        idempotency: tuple[str, str] | None,
    ) -> None:
        """One attempt of a hold, from the ``resolved`` source id (as ``_write``)."""
        cfg = self._cfg
        hold_id = leg.hold_id

        async def body(session: Any) -> None:
            leg.account_id = resolved
            posting = _Posting()
            try:
                if idempotency is not None:
                    await self._record_key(idempotency, "hold", hold_id, [hold_id], session)
                    posting.key = idempotency
                # A hold moves no balance: no date to settle (date=None, nothing in latest).
                await self._move_legs([leg], session, posting.applied, date=None, latest=[])
                to_id = target_id
                if to_id is None:
                    to_id, posting.created = await self._create_target(target, session)
                if not (leg.account.is_id and target.is_id):  # else hold() compared them
                    check_distinct("hold", leg.account, target, (leg.account_id, to_id))
                doc = hold_document(
                    cfg,
                    hold_id,
                    from_account_id=leg.account_id,
                    to_account_id=to_id,
                    amount=leg.held,
                    expires_at=expiry,
                    created_at=now,
                    data=leg.data,
                    idempotency=idempotency,
                    currency=leg.currency,
                )
                await self._holds.insert_one(doc, session=session)
            except BaseException:
                if session is None:
                    await self._undo(posting, hold_id)
                raise

        await self._run(body, None if idempotency is None else idempotency[0])

    async def _create_target(self, target: AccountRef, session: Any) -> tuple[Any, Any]:
        """Create (or find, if a concurrent call created it) the target account of a hold
        named by a new attribute set; returns its id and, if this call created it, that id."""
        created = await self._create_account(target, session, 0)
        if created is not None:
            return created, created
        flt = account_filter(self._cfg, target)
        doc = await self._accounts.find_one(flt, {"_id": 1}, session=session)
        assert doc is not None
        return doc["_id"], None

    async def _write_capture(
        self,
        hold_id: ObjectId,
        value: int | None,
        legs: list[Leg],
        operation_id: ObjectId,
        date: Any,
        idempotency: tuple[str, str] | None,
    ) -> None:
        async def body(session: Any) -> None:
            posting = _Posting()
            try:
                if idempotency is not None:
                    ids = [leg.id for leg in legs]
                    await self._record_key(idempotency, "capture", operation_id, ids, session)
                    posting.key = idempotency
                now = clock.utcnow()
                doc = await self._holds.find_one_and_update(
                    closing_filter(hold_id, now, amount=value),
                    capture_update(value, now, operation_id),
                    projection=CLOSED_PROJECTION,
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
                if doc is None:
                    raise _HoldGuard
                posting.closed = (hold_id, "captured")
                self._capture_legs(legs, doc, int(doc[schema.CAPTURED_AMOUNT]))
                await self._post_legs(
                    "capture", legs, operation_id, date, idempotency, session, posting
                )
            except BaseException:
                if session is None:
                    await self._undo(posting, operation_id)
                raise

        await self._run(body, None if idempotency is None else idempotency[0])

    async def _write_release(
        self, hold_id: Any, leg: Leg, operation_id: ObjectId, *, expire_at: datetime | None
    ) -> bool:
        """Close a hold as voided (``expire_at`` None) or expired, and release its amount from
        the source's ``held``. Returns False when an expiry found the hold closed already (a
        void raises ``_HoldGuard`` instead)."""
        closed: list[bool] = []

        async def body(session: Any) -> None:
            closed.clear()
            if expire_at is None:
                now = clock.utcnow()
                flt = closing_filter(hold_id, now)
                update = void_update(leg.data, now, operation_id)
                status = "voided"
            else:
                flt = expire_filter(hold_id, expire_at)
                update = expire_update(expire_at, operation_id)
                status = "expired"
            doc = await self._holds.find_one_and_update(
                flt,
                update,
                projection=CLOSED_PROJECTION,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            if doc is None:
                if expire_at is None:
                    raise _HoldGuard
                return
            self._release_leg(leg, doc)
            try:
                await self._accounts.update_one(
                    {"_id": leg.account_id},
                    {"$inc": {schema.HELD: bson.Int64(leg.held)}},
                    session=session,
                )
            except BaseException:
                if session is None:
                    posting = _Posting()
                    posting.closed = (hold_id, status)
                    await self._undo(posting, operation_id)
                raise
            closed.append(True)

        await self._run(body)
        return bool(closed)

    # Helpers

    async def _pending_hold(self, hold_id: ObjectId, amount: int | None) -> Mapping[str, Any]:
        """Read a hold that must be pending (before hooks run): raise why it cannot close."""
        doc: Mapping[str, Any] | None = await self._holds.find_one({"_id": hold_id})
        diagnose(doc, hold_id, clock.utcnow(), amount)
        assert doc is not None
        return doc

    async def _diagnose_hold(self, hold_id: ObjectId, amount: int | None) -> str:
        """Why a closing update matched nothing (``_HoldGuard``): raise it, or return what
        refused ("hold ...") to let the caller retry."""
        doc = await self._holds.find_one({"_id": hold_id})
        diagnose(doc, hold_id, clock.utcnow(), amount)
        return f"hold {hold_id!r}"

    @staticmethod
    def _capture_legs(legs: list[Leg], doc: Mapping[str, Any], captured: int) -> None:
        """A capture's two legs from its hold: the source pays ``captured`` and releases the
        whole reservation; the target receives ``captured``."""
        source, target = legs
        source.account = AccountRef(id=doc[schema.FROM_ACCOUNT_ID])
        source.account_id = doc[schema.FROM_ACCOUNT_ID]
        source.amount = -captured
        source.held = -int(doc[schema.AMOUNT])
        target.account = AccountRef(id=doc[schema.TO_ACCOUNT_ID])
        target.account_id = doc[schema.TO_ACCOUNT_ID]
        target.amount = captured

    @staticmethod
    def _release_leg(leg: Leg, doc: Mapping[str, Any]) -> None:
        leg.account = AccountRef(id=doc[schema.FROM_ACCOUNT_ID])
        leg.account_id = doc[schema.FROM_ACCOUNT_ID]
        leg.held = -int(doc[schema.AMOUNT])

    @staticmethod
    def _hold_view(leg: Leg) -> Leg:
        """What hooks see of a hold or void: the source account and the hold's amount."""
        return Leg(
            account=leg.account,
            amount=abs(leg.held),
            data=leg.data,
            account_id=leg.account_id,
            id=leg.hold_id,
            balance_after=leg.balance_after,
            hold_id=leg.hold_id,
        )
