"""The public names: SPEC's, exported once, in one sorted ``__all__``."""

from __future__ import annotations

import inspect

import mongoledger
from mongoledger import AsyncLedger, Ledger


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(mongoledger).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert mongoledger.__all__ == sorted(mongoledger.__all__)
    assert set(mongoledger.__all__) == public | {"__version__"}


def test_sync_and_async_ledgers_have_the_same_methods_and_signatures() -> None:
    names = {n for n in dir(AsyncLedger) if not n.startswith("_")}
    assert names == {n for n in dir(Ledger) if not n.startswith("_")}
    for name in names:
        a, s = getattr(AsyncLedger, name), getattr(Ledger, name)
        if callable(a):
            assert str(inspect.signature(a)) == str(inspect.signature(s)).replace(
                "LedgerStream", "AsyncLedgerStream"
            ), name
            assert inspect.iscoroutinefunction(a) != inspect.iscoroutinefunction(s) or name in {
                "before_write",
                "after_write",
            }


def test_spec_constructor_order() -> None:
    params = list(inspect.signature(Ledger).parameters)
    assert params[:13] == [
        "database",
        "accounts_collection",
        "transactions_collection",
        "auto_create_account",
        "balance_field",
        "extra_account_link_field",
        "account_link_field",
        "amount_field",
        "date_field",
        "date_value",
        "data_field",
        "require_transactions",
        "checkpoints_collection",
    ]
