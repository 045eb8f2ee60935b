"""Reads: balances (cached, calculated, as of a date), accounts, transactions, the balance
sheet (``history``), the all-balances ``report`` and period ``statistics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoledger import _core
from mongoledger._async._base import LedgerBase
from mongoledger._async._io import aggregate, to_list
from mongoledger.errors import InvalidArgument, TransactionNotFound
from mongoledger.models import Account, PeriodStatistics, Transaction

__all__ = ["Reads"]

_IS_SYNC = False


class Reads(LedgerBase):
    """What the ledger answers without writing."""

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
