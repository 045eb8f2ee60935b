"""Reads: the arguments of ``history``, ``report`` and ``statistics`` (pages, sorts, periods),
their filters, and the aggregation pipelines the server runs (balances, sums, per-period
totals)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, overload

import bson
from bson import ObjectId

from mongoledger._core.config import LedgerConfig
from mongoledger._core.currencies import currency_field, validate_currency
from mongoledger._core.dates import PERIOD_FORMATS, comparable, naive_utc
from mongoledger._core.schema import ACCOUNT_SEQ
from mongoledger.errors import InvalidArgument

__all__ = [
    "HISTORY_PAGE",
    "REPORT_PAGE",
    "REPORT_SORTS",
    "STATISTICS_FORMATS",
    "balances_pipeline",
    "bson_sort_key",
    "bucket_pipeline",
    "history_filter",
    "statistics_match",
    "statistics_pipeline",
    "sum_pipeline",
    "validate_before_seq",
    "validate_page_limit",
    "validate_period",
    "validate_skip",
    "validate_sort",
]


HISTORY_PAGE = 100  # history() rows when no limit is given: a page, never the whole account
REPORT_PAGE = 100  # report() accounts when no limit is given


@overload
def validate_page_limit(limit: object, *, default: int) -> int: ...
@overload
def validate_page_limit(limit: object, *, default: None) -> int | None: ...
def validate_page_limit(limit: object, *, default: int | None) -> int | None:
    """A page size: a positive integer, or None for ``default`` (None: no limit)."""
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        shown = "all" if default is None else default
        raise InvalidArgument(
            f"limit {limit!r} must be a positive integer (the page size; default {shown})"
        )
    return int(limit)


REPORT_COLUMNS = ("balance", "id", "created_at")
REPORT_SORTS = tuple(sort for column in REPORT_COLUMNS for sort in (column, f"-{column}"))


def validate_sort(sort: object) -> tuple[str, int]:
    """A report's ``sort`` (``balance``, ``id`` or ``created_at``; a ``-`` prefix reverses it)
    as its column and direction (1 or -1)."""
    if not isinstance(sort, str) or sort not in REPORT_SORTS:
        raise InvalidArgument(
            f"sort {sort!r} is not one of {', '.join(REPORT_COLUMNS)} (- to reverse)"
        )
    return sort.lstrip("-"), -1 if sort.startswith("-") else 1


def validate_skip(skip: object) -> int:
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise InvalidArgument(f"skip {skip!r} must be an integer >= 0")
    return int(skip)


def validate_before_seq(before_seq: object) -> int | None:
    """The ``account_seq`` a history page starts below (an integer >= 1), or None."""
    if before_seq is None:
        return None
    if isinstance(before_seq, bool) or not isinstance(before_seq, int) or before_seq < 1:
        raise InvalidArgument(
            f"before_seq {before_seq!r} must be a positive integer: the account_seq of the "
            "last row of the previous page"
        )
    return int(before_seq)


def bson_sort_key(value: Any) -> tuple[Any, ...]:
    """A Python sort key that orders values of any BSON type as MongoDB sorts them (numbers,
    then strings, documents, arrays, binary, ObjectIds, booleans, dates)."""
    if value is None:
        return (2,)
    if isinstance(value, bool):
        return (9, value)
    if isinstance(value, bson.Decimal128):
        value = value.to_decimal()
    if isinstance(value, Decimal) and value.is_nan():
        return (3, 0)
    if isinstance(value, int | float | Decimal):
        if isinstance(value, float) and math.isnan(value):  # NaN sorts below every number
            return (3, 0)
        return (3, 1, value)
    if isinstance(value, str):
        return (4, value)
    if isinstance(value, Mapping):
        return (5, [(k, bson_sort_key(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (6, [bson_sort_key(v) for v in value])
    if isinstance(value, bytes):
        subtype = value.subtype if isinstance(value, bson.Binary) else 0
        return (7, len(value), subtype, bytes(value))
    if isinstance(value, ObjectId):
        return (8, value.binary)
    if isinstance(value, datetime):
        return (10, comparable(value))
    return (20, type(value).__name__, repr(value))


def history_filter(
    cfg: LedgerConfig,
    account_id: Any,
    *,
    start: Any = None,
    end: Any = None,
    before_seq: int | None = None,
) -> dict[str, Any]:
    flt: dict[str, Any] = {cfg.account_link_field: account_id}
    flt.update(_date_range(cfg, start, end))
    if before_seq is not None:
        flt[ACCOUNT_SEQ] = {"$lt": before_seq}
    return flt


def _date_range(cfg: LedgerConfig, start: Any, end: Any) -> dict[str, Any]:
    """The inclusive date condition, or nothing when neither bound is given."""
    dates = {op: bound for op, bound in (("$gte", start), ("$lte", end)) if bound is not None}
    return {cfg.date_field: dates} if dates else {}


STATISTICS_FORMATS = PERIOD_FORMATS


def validate_period(period: object) -> str:
    if not isinstance(period, str) or period not in STATISTICS_FORMATS:
        raise InvalidArgument(f"period {period!r} is not one of {sorted(STATISTICS_FORMATS)}")
    return period


def statistics_match(
    cfg: LedgerConfig,
    account_id: Any,
    *,
    start: Any = None,
    end: Any = None,
    currency: Any = None,
) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if currency is not None:
        match[currency_field(cfg)] = validate_currency(currency)
    if account_id is not None:
        match[cfg.account_link_field] = account_id
    match.update(_date_range(cfg, start, end))
    return match


def _totals(cfg: LedgerConfig) -> dict[str, Any]:
    amount = f"${cfg.amount_field}"
    return {
        "credit": {"$sum": {"$cond": [{"$gt": [amount, 0]}, amount, 0]}},
        "debit": {"$sum": {"$cond": [{"$lt": [amount, 0]}, {"$subtract": [0, amount]}, 0]}},
        "count": {"$sum": 1},
    }


def statistics_pipeline(
    cfg: LedgerConfig,
    account_id: Any,
    *,
    period: str,
    start: Any = None,
    end: Any = None,
    currency: Any = None,
) -> list[dict[str, Any]]:
    """Per-period totals in UTC: the server names each period (``$dateToString``). ``period``
    is one :func:`validate_period` accepted."""
    return [
        {"$match": statistics_match(cfg, account_id, start=start, end=end, currency=currency)},
        {
            "$group": {
                "_id": {
                    "$dateToString": {
                        "format": STATISTICS_FORMATS[period],
                        "date": f"${cfg.date_field}",
                    }
                },
                **_totals(cfg),
            }
        },
        {"$sort": {"_id": 1}},
    ]


def bucket_pipeline(
    cfg: LedgerConfig, match: dict[str, Any], boundaries: Sequence[datetime]
) -> list[dict[str, Any]]:
    """Per-period totals in a time zone: ``$bucket`` on the periods' UTC boundaries (one
    pipeline for every server version and engine; ``_id`` is the period's start)."""
    edges = [naive_utc(b) for b in boundaries]
    return [
        {"$match": match},
        # Only what the boundaries cover: a transaction written since they were computed
        # would fall outside them (a server refuses $bucket input without a bucket).
        {"$match": {cfg.date_field: {"$gte": edges[0], "$lt": edges[-1]}}},
        {
            "$bucket": {
                "groupBy": f"${cfg.date_field}",
                "boundaries": edges,
                "output": _totals(cfg),
            }
        },
    ]


def sum_pipeline(cfg: LedgerConfig, match: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"$match": match},
        {"$group": {"_id": None, "total": {"$sum": f"${cfg.amount_field}"}}},
    ]


def balances_pipeline(cfg: LedgerConfig) -> list[dict[str, Any]]:
    """Per-account totals and counts over the whole transactions collection (verify, rebuild),
    with the lowest and highest ``account_seq`` (a complete history numbers its legs 1..count)."""
    return [
        {
            "$group": {
                "_id": f"${cfg.account_link_field}",
                "total": {"$sum": f"${cfg.amount_field}"},
                "count": {"$sum": 1},
                "seq": {"$max": f"${ACCOUNT_SEQ}"},
                "first": {"$min": f"${ACCOUNT_SEQ}"},
            }
        }
    ]
