"""The async ledger: the source from which ``mongoledger._sync`` is generated."""

from mongoledger._async.ledger import AsyncLedger

__all__ = ["AsyncLedger"]
