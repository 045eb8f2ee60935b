"""Currencies: with ``currency_field`` set, an operation never mixes two (``CurrencyMismatch``),
and reads can filter by one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mongoledger._core.config import LedgerConfig
from mongoledger._core.transactions import Leg
from mongoledger.errors import CurrencyMismatch, InvalidArgument

__all__ = ["check_currencies", "currency_field", "validate_currency"]


def currency_field(cfg: LedgerConfig) -> str:
    """The configured currency field; filtering by currency needs one."""
    if cfg.currency_field is None:
        raise InvalidArgument(
            "filtering by currency needs currency_field "
            "(e.g. Ledger(db, currency_field='currency'))"
        )
    return cfg.currency_field


def validate_currency(value: object) -> Any:
    """A currency to filter on: a plain value, never an operator or a container."""
    if value is None or isinstance(value, Mapping | list | tuple | set | frozenset | bool):
        raise InvalidArgument(f"currency {value!r} is not a currency code such as 'EUR'")
    return value


def check_currencies(cfg: LedgerConfig, legs: Sequence[Leg]) -> None:
    """Raise ``CurrencyMismatch`` unless every leg's account has the same currency."""
    if cfg.currency_field is None or len(legs) < 2:
        return
    first = legs[0].currency
    if all(leg.currency == first for leg in legs[1:]):
        return
    seen: dict[Any, Any] = {}
    for leg in legs:
        seen.setdefault(leg.account_id, leg.currency)
    raise CurrencyMismatch(seen, cfg.currency_field)
