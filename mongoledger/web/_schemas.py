"""The JSON API's request bodies (strict: ``"5"`` and ``5.0`` are not amounts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = [
    "AmountIn",
    "CaptureIn",
    "DataIn",
    "HoldIn",
    "LegIn",
    "OpenAccountIn",
    "PostIn",
    "TransferIn",
]


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


class HoldIn(TransferIn):
    """A hold: reserve ``amount`` of ``from``'s available balance for ``to``."""

    expires_at: StrictStr | None = Field(
        default=None, description="ISO 8601 date-time, UTC unless it names an offset"
    )
    expires_in: StrictInt | None = Field(default=None, description="seconds from now (> 0)")


class CaptureIn(DataIn):
    """A capture: all of the hold (no ``amount``), or ``amount`` of it."""

    amount: StrictInt | None = Field(default=None, description="0 < amount <= held")
