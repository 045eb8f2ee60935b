"""The JSON API's request bodies (strict: ``"5"`` and ``5.0`` are not amounts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = ["AmountIn", "DataIn", "LegIn", "OpenAccountIn", "PostIn", "TransferIn"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataIn(_Body):
    """Extra data stored on the transactions (schemaless; the ledger checks its keys)."""

    data: dict[str, Any] | None = None


class AmountIn(DataIn):
    """An increase or decrease: an integer amount in the minor unit."""

    amount: StrictInt = Field(description="integer, minor unit (cents); not 0")


class TransferIn(DataIn):
    """A transfer: ``from`` and ``to`` are account ids as text (as in the URLs)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_account: StrictStr = Field(alias="from")
    to_account: StrictStr = Field(alias="to")
    amount: StrictInt = Field(description="integer > 0, minor unit")


class LegIn(_Body):
    account: StrictStr = Field(description="account id as text")
    amount: StrictInt
    data: dict[str, Any] | None = None


class PostIn(DataIn):
    """A balanced multi-leg operation: the amounts sum to zero."""

    legs: list[LegIn]


class OpenAccountIn(_Body):
    """Get or create the account with exactly these attributes."""

    attributes: dict[str, Any] | None = None
    min_balance: StrictInt | None = None
