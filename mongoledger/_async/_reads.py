"""Reads: balances (cached, calculated, as of a date), accounts, transactions, the balance
sheet (``history``), the all-balances ``report`` and period ``statistics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoledger._async._base import LedgerBase
from mongoledger._async._io import aggregate, to_list
from mongoledger._core import schema
from mongoledger._core.accounts import account_to_model, validate_attributes
from mongoledger._core.amounts import checked_total
from mongoledger._core.currencies import currency_field, validate_currency
from mongoledger._core.dates import comparable, period_buckets, shortcut_serves, validate_timezone
from mongoledger._core.reads import (
    HISTORY_PAGE,
    REPORT_PAGE,
    balances_pipeline,
    bson_sort_key,
    bucket_pipeline,
    history_filter,
    statistics_match,
    statistics_pipeline,
    validate_before_seq,
    validate_page_limit,
    validate_period,
    validate_skip,
    validate_sort,
)
from mongoledger._core.transactions import transaction_to_model, validate_transaction_id
from mongoledger.errors import TransactionNotFound
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
        return await self._balance_of(await self._find_account(account))

    async def available_balance(self, account: Any) -> int:
        """The balance minus the pending holds on the account: what debits may spend."""
        balance, held = await self.balance_and_held(account)
        return balance - held

    async def balance_and_held(self, account: Any) -> tuple[int, int]:
        """The account's balance and what its pending holds reserve of it, from one read (the
        available balance is their difference); lighter than ``get_account`` where these two
        numbers are all a caller shows."""
        doc = await self._find_account(account)
        return await self._balance_of(doc), int(doc.get(schema.HELD) or 0)

    async def balance_at(self, account: Any, when: Any) -> int:
        """The balance after every transaction dated at or before ``when``, in whatever order
        they were written (reverts included).

        One indexed read where the account's dates follow its commit order (the running
        balance of the last leg dated at or before ``when``); an aggregation of the legs dated
        up to ``when`` where a backdated entry makes that shortcut wrong.
        """
        cfg = self._cfg
        doc = await self._find_account(account)
        last_date = doc.get(schema.LAST_DATE)
        when = cfg.check_date(when, what="when", written=last_date)
        flt = history_filter(cfg, doc["_id"], end=when)
        backdated = doc.get(schema.BACKDATED_FROM)
        if cfg.balance_field is None or not shortcut_serves(when, last_date, backdated):
            return await self._sum(flt, what=f"the balance of account {doc['_id']!r} at {when}")
        last = await self._transactions.find_one(flt, sort=[(schema.ACCOUNT_SEQ, -1)])
        return 0 if last is None else int(last.get(schema.BALANCE_AFTER, 0))

    async def get_account(self, account: Any) -> Account:
        doc = await self._find_account(account)
        summed = None if self._cfg.balance_field else await self._balance_of(doc)
        return account_to_model(self._cfg, doc, summed)

    async def get_transaction(self, transaction_id: Any) -> Transaction:
        tid = validate_transaction_id(transaction_id)
        doc = await self._transactions.find_one({"_id": tid})
        if doc is None:
            raise TransactionNotFound(tid)
        return transaction_to_model(self._cfg, doc)

    async def history(
        self,
        account: Any,
        *,
        start: Any = None,
        end: Any = None,
        limit: int | None = None,
        before_seq: int | None = None,
    ) -> list[Transaction]:
        """The balance sheet: the account's transactions, newest first in commit order, each
        with the running balance after it (``balance_after``).

        ``date`` is each entry's effective date: a backdated entry sits where it was recorded,
        not where its date would put it. ``start``/``end`` bound the dates (inclusive). One page
        of ``limit`` rows (default 100); the next page starts ``before_seq`` (the
        ``account_seq`` of the last row of the previous page).
        """
        cfg = self._cfg
        limit = validate_page_limit(limit, default=HISTORY_PAGE)
        before_seq = validate_before_seq(before_seq)
        doc = await self._find_account(account)
        written = doc.get(schema.LAST_DATE)
        if start is not None:
            start = cfg.check_date(start, what="start", written=written)
        if end is not None:
            end = cfg.check_date(end, what="end", written=written)
        flt = history_filter(cfg, doc["_id"], start=start, end=end, before_seq=before_seq)
        cursor = self._transactions.find(flt).sort(schema.ACCOUNT_SEQ, -1).limit(limit)
        rows = [transaction_to_model(cfg, d) for d in await to_list(cursor)]
        if cfg.balance_field is None and rows:
            running = await self._sum(
                {
                    cfg.account_link_field: doc["_id"],
                    schema.ACCOUNT_SEQ: {"$lte": rows[0].account_seq},
                },
                what=f"the running balance of account {doc['_id']!r}",
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
        currency: Any = None,
    ) -> list[Account]:
        """One page of every account with its balance (the "all balances" report).

        ``sort``: ``balance``, ``id`` or ``created_at``, ``-`` prefix for descending; ties
        break on ``_id`` in the same direction, and ``_id``s of different types sort in
        MongoDB's order. ``limit`` rows (default 100) after ``skip``. ``attributes`` narrows
        the report to accounts having those attribute values, ``currency`` to accounts in
        that currency (needs ``currency_field``).
        """
        cfg = self._cfg
        columns = {"balance": cfg.balance_field, "id": "_id", "created_at": schema.CREATED_AT}
        field, direction = validate_sort(sort)
        limit = validate_page_limit(limit, default=REPORT_PAGE)
        skip = validate_skip(skip)
        flt: dict[str, Any] = {}
        if attributes:
            flt = validate_attributes(attributes, cfg.owned_account_fields)
        if currency is not None:
            flt[currency_field(cfg)] = validate_currency(currency)
        if cfg.balance_field is None:
            return await self._computed_report(flt, field, direction, limit, skip)
        # Ties break on _id in the same direction, so one index serves both directions.
        order = [(columns[field], direction)]
        if field != "id":
            order.append(("_id", direction))
        cursor = self._accounts.find(flt).sort(order)
        if skip:
            cursor = cursor.skip(skip)
        cursor = cursor.limit(limit)
        return [account_to_model(cfg, d) for d in await to_list(cursor)]

    async def _computed_report(
        self, flt: dict[str, Any], field: str, direction: int, limit: int, skip: int
    ) -> list[Account]:
        """The report without cached balances: the same rows, in the same order, as with them.

        By id or creation date the server pages the accounts and only the page's balances are
        summed; by balance every balance must be summed first (the cost of balance_field=None).
        """
        cfg = self._cfg
        link = cfg.account_link_field
        if field != "balance":
            order = [("_id", direction)]
            if field == "created_at":
                order.insert(0, (schema.CREATED_AT, direction))
            cursor = self._accounts.find(flt).sort(order)
            if skip:
                cursor = cursor.skip(skip)
            docs = await to_list(cursor.limit(limit))
            match = {link: {"$in": [d["_id"] for d in docs]}}
            pipeline = [{"$match": match}, *balances_pipeline(cfg)]
        else:
            docs = await to_list(self._accounts.find(flt))
            pipeline = balances_pipeline(cfg)
        totals = {
            repr(row["_id"]): checked_total(
                row["total"], what=f"the balance of account {row['_id']!r}"
            )
            for row in await aggregate(self._transactions, pipeline, allowDiskUse=True)
        }
        accounts = [account_to_model(cfg, d, totals.get(repr(d["_id"]), 0)) for d in docs]
        if field == "balance":
            accounts.sort(key=lambda a: (a.balance, bson_sort_key(a.id)), reverse=direction < 0)
            accounts = accounts[skip : skip + limit]
        return accounts

    async def statistics(
        self,
        account: Any = None,
        *,
        period: str = "month",
        start: Any = None,
        end: Any = None,
        timezone: str | None = None,
        currency: Any = None,
    ) -> list[PeriodStatistics]:
        """Credit and debit totals per period (``day``, ``month``, ``year``), oldest first.

        Periods are UTC unless ``timezone`` names an IANA time zone (``"Europe/Paris"``):
        then each day, month or year runs from local midnight to local midnight. ``currency``
        counts only transactions in that currency (needs ``currency_field``).
        """
        cfg = self._cfg
        period = validate_period(period)
        zone = validate_timezone(timezone)
        if start is not None:
            start = cfg.check_date(start, what="start", require="datetime")
        if end is not None:
            end = cfg.check_date(end, what="end", require="datetime")
        account_id = None if account is None else (await self._find_account(account))["_id"]
        if zone is None:
            pipeline = statistics_pipeline(
                cfg, account_id, period=period, start=start, end=end, currency=currency
            )
            rows = await aggregate(self._transactions, pipeline, allowDiskUse=True)
            labels = None
        else:
            match = statistics_match(cfg, account_id, start=start, end=end, currency=currency)
            # Only dates fall in a period (the UTC path's $dateToString refuses the rest).
            match.setdefault(cfg.date_field, {})["$type"] = "date"
            bounds = await self._date_bounds(match)
            if bounds is None:
                return []
            boundaries, labels = period_buckets(period, zone, *bounds)
            pipeline = bucket_pipeline(cfg, match, boundaries)
            rows = await aggregate(self._transactions, pipeline, allowDiskUse=True)
        out = []
        for row in rows:
            if labels is None:
                name = row["_id"]
            else:
                index = [comparable(b) for b in boundaries].index(comparable(row["_id"]))
                name = labels[index]
            credit = checked_total(row["credit"], what=f"the credits of {name}")
            debit = checked_total(row["debit"], what=f"the debits of {name}")
            out.append(
                PeriodStatistics(
                    period=name, credit=credit, debit=debit, net=credit - debit, count=row["count"]
                )
            )
        return out

    async def _date_bounds(self, match: dict[str, Any]) -> tuple[Any, Any] | None:
        """The earliest and latest date the matching transactions carry (two indexed reads)."""
        date = self._cfg.date_field
        first = await self._transactions.find_one(match, sort=[(date, 1)])
        if first is None:
            return None
        last = await self._transactions.find_one(match, sort=[(date, -1)])
        assert last is not None
        return first[date], last[date]
