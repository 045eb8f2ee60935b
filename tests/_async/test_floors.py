"""Account floors: ``open_account`` without ``min_balance`` returns the account whatever its
floor (Decision 5), ``default_min_balance`` floors every account the ledger creates, and
``NO_FLOOR`` opens one without a floor under that default."""

from __future__ import annotations

from typing import Any

import pytest

from mongoledger import (
    NO_FLOOR,
    AsyncLedger,
    InsufficientFunds,
    InvalidAccount,
    InvalidConfiguration,
)
from tests._async.stored import snapshot

_IS_SYNC = False

WALLET = {"user_id": 7, "type": "wallet"}
SHOP = {"type": "revenue"}
BANK = {"type": "bank"}


async def test_open_account_without_min_balance_returns_a_floored_account(async_db: Any) -> None:
    ledger = AsyncLedger(async_db)
    first = await ledger.open_account(WALLET, min_balance=0)
    assert await ledger.open_account(WALLET) == first
    assert await ledger.open_account(WALLET, min_balance=0) == first
    with pytest.raises(InvalidAccount, match="min_balance 0, not -5"):
        await ledger.open_account(WALLET, min_balance=-5)
    with pytest.raises(InvalidAccount, match="min_balance 0, not NO_FLOOR"):
        await ledger.open_account(WALLET, min_balance=NO_FLOOR)
    bare = await ledger.open_account(BANK)
    assert await ledger.open_account(BANK, min_balance=NO_FLOOR) == bare
    with pytest.raises(InvalidAccount, match="min_balance NO_FLOOR, not 0"):
        await ledger.open_account(BANK, min_balance=0)


async def test_default_min_balance_floors_every_account_the_ledger_creates(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, default_min_balance=0)
    before = await snapshot(ledger)
    # An unknown user's wallet, created by the operation itself, cannot go below 0.
    with pytest.raises(InsufficientFunds, match="below its min_balance 0"):
        await ledger.transfer(WALLET, SHOP, 500)
    with pytest.raises(InsufficientFunds):
        await ledger.post([(WALLET, -5), (SHOP, 5)])
    with pytest.raises(InsufficientFunds):
        await ledger.decrease({"user_id": 8}, 1)
    assert await snapshot(ledger) == before  # nothing written, no account left behind
    opened = await ledger.open_account({"user_id": 9})
    assert (await ledger.get_account(opened)).min_balance == 0
    await ledger.increase(WALLET, 300)
    assert (await ledger.get_account(WALLET)).min_balance == 0
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(WALLET, SHOP, 301)
    await ledger.transfer(WALLET, SHOP, 300)
    assert await ledger.balance(WALLET) == 0


async def test_no_floor_opens_a_system_account_under_a_default(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, default_min_balance=0)
    bank = await ledger.open_account(BANK, min_balance=NO_FLOOR)
    assert (await ledger.get_account(bank)).min_balance is None
    await ledger.transfer(bank, WALLET, 1_000)  # the bank goes negative by design
    assert await ledger.balance(bank) == -1_000
    assert await ledger.open_account(BANK) == bank
    overdraft = await ledger.open_account({"user_id": 1}, min_balance=-100)
    await ledger.decrease(overdraft, 100)
    with pytest.raises(InsufficientFunds):
        await ledger.decrease(overdraft, 1)
    anonymous = await ledger.open_account(min_balance=NO_FLOOR)
    await ledger.decrease(anonymous, 5)
    assert (await ledger.get_account(await ledger.open_account())).min_balance == 0


async def test_a_floor_without_a_cached_balance_is_refused_naming_it(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, balance_field=None)
    with pytest.raises(InvalidConfiguration, match=r"min_balance=0 needs a cached balance"):
        await ledger.open_account({"user": 1}, min_balance=0)
    assert await ledger.accounts.count_documents({}) == 0
