"""``AsyncLedger``: the public face of the ledger. The async class is the source; the sync
``Ledger`` is generated from it.

Each concept lives in one module, composed here:

* ``_writes``: increase, decrease, transfer, post, revert, open_account (the write path);
* ``_hooks``: before_write and after_write; ``_compensation``: what a refused write undoes
  without DB transactions;
* ``_holds``: two-phase transfers (hold, capture, void, expiry) and the available balance;
* ``_reads``: balances, accounts, transactions, history, report, statistics;
* ``_audit``: verify and its repairs;
* ``_consumers``: watch and listen (the change stream itself is in ``stream``);
* ``_base``: the shared state, deployment detection, indexes and account lookups.

Their I/O-free halves (validation, documents, filters, pipelines) are in ``mongoledger._core``.
"""

from __future__ import annotations

from typing import Any

from pymongo.read_preferences import ReadPreference

from mongoledger._async._audit import Audit
from mongoledger._async._consumers import Consumers
from mongoledger._async._holds import Holds
from mongoledger._async._reads import Reads
from mongoledger._async._writes import Writes
from mongoledger._core.config import LedgerConfig, check_database

__all__ = ["AsyncLedger"]

_IS_SYNC = False


class AsyncLedger(Holds, Writes, Reads, Audit, Consumers):
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
        default_min_balance: int | None = None,
        sharded_accounts: bool = False,
        currency_field: str | None = None,
        holds_collection: str = "holds",
    ) -> None:
        check_database(database, sync=_IS_SYNC)
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
            default_min_balance=default_min_balance,
            sharded_accounts=sharded_accounts,
            holds_collection=holds_collection,
            currency_field=currency_field,
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
        self._holds = database.get_collection(
            holds_collection, read_preference=ReadPreference.PRIMARY
        )
        self._before = []
        self._after = []
        self._capable = None
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
