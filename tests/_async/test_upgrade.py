"""Upgrading a database an earlier version of the ledger built.

The ledger owns its indexes by name (``ledger_...``). This version changed one definition: the
wildcard index ``ledger_attributes`` leaves out the account fields the ledger now owns
(``last_date``, ``backdated_from``, ``held``). On such a database a first write goes ahead (the
earlier index still serves every attribute lookup) and logs what to run; ``ensure_indexes()``
(``mongoledger init``) rebuilds it, once. A unique index is never rebuilt by the ledger: that
would leave a moment without the uniqueness it guarantees.

The engines list a wildcard index without its ``wildcardProjection``; ``ServerListing`` lists
and refuses as a server does.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from mongoledger import AsyncLedger, InvalidConfiguration
from mongoledger._async._io import maybe_await, to_list
from mongoledger._core.config import LedgerConfig
from mongoledger._core.indexes import index_specs

_IS_SYNC = False

# What the version before this one created (its owned account fields, balance_field included).
PREVIOUS_WILDCARD = dict.fromkeys(
    ["attributes_key", "balance", "created_at", "min_balance", "seq"], 0
)
CURRENT_WILDCARD = next(
    s.wildcard_projection for s in index_specs(LedgerConfig()) if s.name == "ledger_attributes"
)


class _Listed:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    async def to_list(self, length: Any = None) -> list[Any]:
        return self.rows


class ServerListing:
    """A collection's indexes as a server lists them (options included) and refuses them (an
    index whose name exists with other options: IndexOptionsConflict, 85)."""

    def __init__(self, collection: Any, monkeypatch: pytest.MonkeyPatch, **listed: Any) -> None:
        self.options: dict[str, dict[str, Any]] = dict(listed)  # by name, as listed
        self.dropped: list[str] = []
        real_list, real_create = collection.list_indexes, collection.create_index
        real_drop = collection.drop_index

        async def list_indexes(*args: Any, **kwargs: Any) -> Any:
            rows = await to_list(await maybe_await(real_list(*args, **kwargs)))
            return _Listed([{**row, **self.options.get(row["name"], {})} for row in rows])

        async def create_index(keys: Any, **kwargs: Any) -> Any:
            name = kwargs["name"]
            options = {k: v for k, v in kwargs.items() if k != "name"}
            if name in self.options and self.options[name] != options:
                raise OperationFailure(
                    f"Index with name: {name} already exists with different options", 85
                )
            self.options[name] = options
            return await maybe_await(real_create(keys, **kwargs))

        async def drop_index(name: str, *args: Any, **kwargs: Any) -> None:
            self.dropped.append(name)
            self.options.pop(name, None)
            await maybe_await(real_drop(name, *args, **kwargs))

        monkeypatch.setattr(collection, "list_indexes", list_indexes)
        monkeypatch.setattr(collection, "create_index", create_index)
        monkeypatch.setattr(collection, "drop_index", drop_index)


@pytest.fixture
async def upgraded(async_db: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ledger on a database the previous version built: its wildcard index, an account."""
    accounts = async_db["accounts"]
    await accounts.create_index(
        [("$**", 1)], name="ledger_attributes", wildcardProjection=PREVIOUS_WILDCARD
    )
    await accounts.insert_one({"_id": "old", "user_id": 1, "balance": 0, "seq": 0})
    ledger = AsyncLedger(async_db)
    listing = ServerListing(
        ledger.accounts,
        monkeypatch,
        ledger_attributes={"wildcardProjection": PREVIOUS_WILDCARD},
    )
    return ledger, listing


async def test_a_first_write_goes_ahead_and_says_what_to_run(
    upgraded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, listing = upgraded
    with caplog.at_level(logging.WARNING, logger="mongoledger"):
        await ledger.increase({"user_id": 7}, 5)
        await ledger.increase({"user_id": 1}, 3)
    assert listing.dropped == []
    assert listing.options["ledger_attributes"] == {"wildcardProjection": PREVIOUS_WILDCARD}
    warned = [r.getMessage() for r in caplog.records if "'ledger_attributes' on" in r.getMessage()]
    assert len(warned) == 1  # once per ledger instance
    assert "earlier version" in warned[0]
    assert "run `mongoledger init` (ensure_indexes())" in warned[0]
    assert await ledger.balance({"user_id": 7}) == 5
    assert await ledger.balance("old") == 3  # found by its attributes


async def test_ensure_indexes_rebuilds_an_outdated_index_once(
    upgraded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, listing = upgraded
    with caplog.at_level(logging.WARNING, logger="mongoledger"):
        await ledger.ensure_indexes()
    assert listing.dropped == ["ledger_attributes"]
    assert listing.options["ledger_attributes"] == {"wildcardProjection": CURRENT_WILDCARD}
    assert "rebuilding index 'ledger_attributes' on 'accounts'" in caplog.text
    await ledger.ensure_indexes()  # idempotent: nothing left to rebuild
    assert listing.dropped == ["ledger_attributes"]
    await ledger.increase({"user_id": 1}, 2)
    assert await ledger.balance("old") == 2
    assert (await ledger.verify()).ok


async def test_an_outdated_unique_index_is_never_rebuilt_by_the_ledger(
    async_db: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Say an earlier version had made ledger_attributes_key unique without its partial
    filter: rebuilding it would leave a moment without uniqueness, so ensure_indexes names
    the steps instead; a first write still goes ahead."""
    await async_db["accounts"].create_index(
        [("attributes_key", 1)], name="ledger_attributes_key", unique=True
    )
    ledger = AsyncLedger(async_db)
    listing = ServerListing(ledger.accounts, monkeypatch, ledger_attributes_key={"unique": True})
    with pytest.raises(InvalidConfiguration) as info:
        await ledger.ensure_indexes()
    message = str(info.value)
    assert "'ledger_attributes_key' on 'accounts'" in message
    assert "db.accounts.dropIndex('ledger_attributes_key')" in message
    assert "mongoledger init" in message
    assert listing.dropped == []
    with caplog.at_level(logging.WARNING, logger="mongoledger"):
        await AsyncLedger(async_db).increase({"user_id": 7}, 5)
    assert "'ledger_attributes_key'" in caplog.text
    # The documented steps work: drop it, then ensure_indexes.
    await ledger.accounts.drop_index("ledger_attributes_key")
    await ledger.ensure_indexes()
    assert listing.options["ledger_attributes_key"] == {
        "unique": True,
        "partialFilterExpression": {"attributes_key": {"$exists": True}},
    }
