"""Dates (Decision 8): ``balance_at`` whatever order entries were written in, the operation's
date taken inside its DB transaction, date arguments, timezone-aware datetimes, and
``statistics`` by time zone."""

from __future__ import annotations

import contextlib
import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from mongoledger import AlreadyReverted, AsyncLedger, InvalidArgument
from mongoledger._async._io import to_list
from mongoledger._core import clock as ledger_clock
from tests._async.stored import account_doc

_IS_SYNC = False

UTC = timezone.utc
ALICE = {"user_id": 1, "type": "wallet"}
BOB = {"user_id": 2, "type": "wallet"}
CAROL = {"user_id": 3, "type": "wallet"}


def day(n: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, n, hour, tzinfo=UTC)


class Clock:
    """A settable ``date_value``."""

    def __init__(self, now: Any) -> None:
        self.now = now

    def __call__(self) -> Any:
        return self.now


async def dated_sum(ledger: AsyncLedger, account: Any, when: datetime) -> int:
    """What ``balance_at`` must say: the sum of the account's amounts dated at or before."""
    account_id = (await ledger.get_account(account)).id
    docs = await to_list(ledger.transactions.find({"account_id": account_id}))
    return sum(d["amount"] for d in docs if d["date"].replace(tzinfo=UTC) <= when)


@pytest.fixture(params=["balance", None], ids=["cached", "no-balance-field"])
def balance_field(request: pytest.FixtureRequest) -> str | None:
    return request.param  # type: ignore[no-any-return]


# Backdated entries


async def test_a_backdated_entry_counts_at_its_date(async_db: Any, balance_field: Any) -> None:
    clock = Clock(day(10))
    ledger = AsyncLedger(async_db, date_value=clock, balance_field=balance_field)
    await ledger.increase(ALICE, 100)  # dated Jan 10
    clock.now = day(5)
    await ledger.increase(ALICE, 10)  # dated Jan 5, written after
    assert await ledger.balance_at(ALICE, day(6)) == 10  # not the later-written running 110
    assert await ledger.balance_at(ALICE, day(4)) == 0
    assert await ledger.balance_at(ALICE, day(5)) == 10
    assert await ledger.balance_at(ALICE, day(10)) == 110
    assert await ledger.balance_at(ALICE, day(11)) == 110
    # history stays in commit order: date is the effective date, balance_after the running
    # balance in recorded order.
    rows = await ledger.history(ALICE)
    assert [r.date for r in rows] == [day(5), day(10)]
    assert [r.balance_after for r in rows] == [110, 100]


async def test_balance_at_is_the_dated_sum_whatever_the_order(
    async_db: Any, balance_field: Any
) -> None:
    rng = random.Random(20260105)
    clock = Clock(day(1))
    ledger = AsyncLedger(async_db, date_value=clock, balance_field=balance_field)
    open_ids: list[Any] = []
    for _ in range(40):
        clock.now = day(1, 0) + timedelta(hours=rng.randrange(24 * 20))
        roll = rng.random()
        if roll < 0.2 and open_ids:
            target = open_ids.pop(rng.randrange(len(open_ids)))
            with contextlib.suppress(AlreadyReverted):  # the other leg of a reverted transfer
                await ledger.revert(target)
        elif roll < 0.6:
            open_ids += await ledger.transfer(ALICE, BOB, rng.randrange(1, 50))
        else:
            account = rng.choice([ALICE, BOB])
            open_ids.append(
                await ledger.increase(account, rng.choice([-1, 1]) * rng.randrange(1, 99))
            )
    probes = [day(1, 0) + timedelta(hours=h) for h in range(-1, 24 * 21, 5)]
    for account in (ALICE, BOB):
        for when in probes:
            expected = await dated_sum(ledger, account, when)
            assert await ledger.balance_at(account, when) == expected, (account, when)


async def test_only_a_backdated_account_is_marked(async_db: Any) -> None:
    clock = Clock(day(10))
    ledger = AsyncLedger(async_db, date_value=clock)
    await ledger.transfer(ALICE, BOB, 5)
    clock.now = day(12)
    await ledger.increase(BOB, 1)
    clock.now = day(11)
    await ledger.transfer(ALICE, CAROL, 5)  # Alice's dates stay in order: 10, 11
    clock.now = day(3)
    await ledger.increase(BOB, 7)  # Bob was at Jan 12
    alice, bob = await account_doc(ledger, ALICE), await account_doc(ledger, BOB)
    assert "backdated_from" not in alice
    assert alice["last_date"].replace(tzinfo=UTC) == day(11)
    assert bob["backdated_from"].replace(tzinfo=UTC) == day(3)
    assert bob["last_date"].replace(tzinfo=UTC) == day(12)
    # Before the first backdated date and from the latest date on, the shortcut is exact.
    assert await ledger.balance_at(BOB, day(2)) == 0
    assert await ledger.balance_at(BOB, day(5)) == 7
    assert await ledger.balance_at(BOB, day(12)) == 13


# The ledger's own date ("now"): read inside the DB transaction, in commit order


async def test_a_clock_behind_never_backdates_an_account(
    async_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = AsyncLedger(async_db)
    monkeypatch.setattr(ledger_clock, "utcnow", lambda: day(10))
    await ledger.transfer(ALICE, BOB, 100)
    # Another writer whose clock is 5 days behind (or a commit that won the race).
    monkeypatch.setattr(ledger_clock, "utcnow", lambda: day(5))
    tid = await ledger.increase(ALICE, 10)
    assert (await ledger.get_transaction(tid)).date == day(10)  # moved up to Alice's last date
    solo = await ledger.increase(CAROL, 1)
    assert (await ledger.get_transaction(solo)).date == day(5)  # Carol has no later date
    ids = await ledger.transfer(CAROL, ALICE, 1)
    assert {(await ledger.get_transaction(i)).date for i in ids} == {day(10)}
    assert (await account_doc(ledger, CAROL))["last_date"].replace(tzinfo=UTC) == day(10)
    for account in (ALICE, BOB, CAROL):
        assert "backdated_from" not in await account_doc(ledger, account)
        for when in (day(4), day(5), day(9), day(10)):
            assert await ledger.balance_at(account, when) == await dated_sum(ledger, account, when)


@pytest.fixture
def memory_pair() -> Any:
    """An async memory database and a sync ledger on the same engine (another writer)."""
    from mongoledger import Ledger
    from mongoledger.memory import AsyncMemoryClient, MemoryClient

    client = AsyncMemoryClient()
    # Another process: its own client (strict off: its plain reads run while ours is open).
    other = Ledger(MemoryClient(server=client.server, strict=False)["test"])
    other.ensure_indexes()
    return client["test"], other


async def test_a_commit_between_reading_the_clock_and_writing_keeps_date_order(
    memory_pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, other = memory_pair
    ledger = AsyncLedger(db)
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(day(5))
        if len(readings) == 1:
            # Another process commits on Alice after this one read its clock, before it wrote.
            monkeypatch.setattr(ledger_clock, "utcnow", lambda: day(6))
            other.increase(ALICE, 10)
            monkeypatch.setattr(ledger_clock, "utcnow", clock)
        return day(5)

    monkeypatch.setattr(ledger_clock, "utcnow", clock)
    tid = await ledger.increase(ALICE, 100)
    assert (await ledger.get_transaction(tid)).date == day(6)  # follows the commit order
    assert await ledger.balance_at(ALICE, day(5, 13)) == 0
    assert await ledger.balance_at(ALICE, day(6)) == 110
    assert "backdated_from" not in await account_doc(ledger, ALICE)


# Date arguments


BAD_DATES = [
    ("2030-01-01", "'2030-01-01'"),
    (12345, "12345"),
    (1.5, "1.5"),
    (date(2030, 1, 1), "datetime.date(2030, 1, 1)"),
    (True, "True"),
    ([day(1)], "[datetime"),
]


@pytest.mark.parametrize(("bad", "shown"), BAD_DATES)
async def test_date_arguments_that_can_never_compare_are_refused(
    async_db: Any, bad: Any, shown: str
) -> None:
    ledger = AsyncLedger(async_db)
    await ledger.increase(ALICE, 5)
    calls = [
        lambda: ledger.balance_at(ALICE, bad),
        lambda: ledger.history(ALICE, start=bad),
        lambda: ledger.history(ALICE, end=bad),
        lambda: ledger.statistics(start=bad),
        lambda: ledger.statistics(ALICE, end=bad),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert shown in str(info.value)
    with pytest.raises(InvalidArgument, match="None"):
        await ledger.balance_at(ALICE, None)


async def test_integer_timestamps_keep_working_with_integer_arguments(async_db: Any) -> None:
    clock = Clock(1_700_000_100)
    ledger = AsyncLedger(async_db, date_value=clock)  # yii2tech-style Unix timestamps
    await ledger.increase(ALICE, 5)
    clock.now = 1_700_000_200
    await ledger.increase(ALICE, 7)
    assert await ledger.balance_at(ALICE, 1_700_000_150) == 5
    assert await ledger.balance_at(ALICE, 1_700_000_200.0) == 12
    assert [r.amount for r in await ledger.history(ALICE, start=1_700_000_150)] == [7]
    with pytest.raises(InvalidArgument, match="numbers"):
        await ledger.balance_at(ALICE, day(1))


async def test_a_fixed_string_date_value_compares_with_strings(async_db: Any) -> None:
    ledger = AsyncLedger(async_db, date_value="2020-01-01")
    await ledger.increase(ALICE, 5)
    assert await ledger.balance_at(ALICE, "2020-06-01") == 5
    assert await ledger.balance_at(ALICE, "2019-12-31") == 0
    with pytest.raises(InvalidArgument, match="strings"):
        await ledger.balance_at(ALICE, day(1))


async def test_naive_datetimes_are_utc_and_aware_ones_are_converted(async_db: Any) -> None:
    clock = Clock(datetime(2026, 1, 5, 10, 0))  # naive: UTC
    ledger = AsyncLedger(async_db, date_value=clock)
    await ledger.increase(ALICE, 5)
    paris = timezone(timedelta(hours=1))
    assert await ledger.balance_at(ALICE, datetime(2026, 1, 5, 10, 0)) == 5
    assert await ledger.balance_at(ALICE, datetime(2026, 1, 5, 9, 59)) == 0
    assert await ledger.balance_at(ALICE, datetime(2026, 1, 5, 10, 30, tzinfo=paris)) == 0
    assert await ledger.balance_at(ALICE, datetime(2026, 1, 5, 11, 0, tzinfo=paris)) == 5
    rows = await ledger.history(ALICE, start=datetime(2026, 1, 5, 11, 0, tzinfo=paris))
    assert len(rows) == 1


# Datetimes the library returns are timezone-aware UTC


async def test_returned_datetimes_are_aware_utc(async_db: Any) -> None:
    ledger = AsyncLedger(async_db)
    stamp = datetime(2026, 1, 5, 10, 0)  # naive data: stored as UTC, returned aware
    tid = await ledger.increase({"user_id": 1, "since": stamp}, 5, {"at": stamp, "l": [stamp]})
    now = datetime.now(UTC)
    row = await ledger.get_transaction(tid)
    assert row.date <= now  # comparable with an aware datetime: no TypeError
    assert row.date.utcoffset() == timedelta(0)
    assert row.data == {"at": stamp.replace(tzinfo=UTC), "l": [stamp.replace(tzinfo=UTC)]}
    (history_row,) = await ledger.history({"user_id": 1, "since": stamp})
    assert history_row.date == row.date
    account = await ledger.get_account({"user_id": 1, "since": stamp})
    assert account.created_at is not None
    assert account.created_at <= now
    assert account.created_at.tzinfo is not None
    assert account.attributes["since"] == stamp.replace(tzinfo=UTC)
    (reported,) = await ledger.report()
    assert reported.created_at == account.created_at


async def test_event_commit_times_are_aware_utc(async_db: Any, engine: str) -> None:
    if engine == "mongomock":
        pytest.skip("plain mongomock has no change streams (see test_deployments.py)")
    ledger = AsyncLedger(async_db)
    async with await ledger.watch() as stream:
        await ledger.increase(ALICE, 5)
        event = await stream.next()
    assert event.committed_at.tzinfo is not None
    assert event.committed_at.utcoffset() == timedelta(0)
    assert event.transactions[0].date.utcoffset() == timedelta(0)


# Statistics by time zone


async def test_statistics_in_a_time_zone(async_db: Any) -> None:
    clock = Clock(datetime(2026, 1, 31, 23, 30, tzinfo=UTC))  # Feb 1, 00:30 in Paris
    ledger = AsyncLedger(async_db, date_value=clock)
    await ledger.increase(ALICE, 10)
    clock.now = datetime(2026, 2, 1, 0, 30, tzinfo=UTC)
    await ledger.increase(ALICE, -3)
    clock.now = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # Mar 29 00:30 Paris (UTC+1)
    await ledger.increase(BOB, 4)
    clock.now = datetime(2026, 3, 29, 22, 30, tzinfo=UTC)  # Mar 30 00:30 Paris (UTC+2, DST)
    await ledger.increase(BOB, 6)
    utc_months = await ledger.statistics()
    assert [(s.period, s.credit, s.debit, s.count) for s in utc_months] == [
        ("2026-01", 10, 0, 1),
        ("2026-02", 0, 3, 1),
        ("2026-03", 10, 0, 2),
    ]
    assert await ledger.statistics(timezone="UTC") == utc_months
    paris = await ledger.statistics(timezone="Europe/Paris")
    assert [(s.period, s.credit, s.debit, s.net) for s in paris] == [
        ("2026-02", 10, 3, 7),
        ("2026-03", 10, 0, 10),
    ]
    days = await ledger.statistics(BOB, period="day", timezone="Europe/Paris")
    assert [(s.period, s.credit) for s in days] == [("2026-03-29", 4), ("2026-03-30", 6)]
    utc_days = await ledger.statistics(BOB, period="day")
    assert [s.period for s in utc_days] == ["2026-03-28", "2026-03-29"]
    tokyo = await ledger.statistics(period="year", timezone="Asia/Tokyo")
    assert [(s.period, s.count) for s in tokyo] == [("2026", 4)]
    bounded = await ledger.statistics(
        timezone="Europe/Paris", start=datetime(2026, 2, 1, tzinfo=UTC)
    )
    assert [(s.period, s.count) for s in bounded] == [("2026-02", 1), ("2026-03", 2)]
    new_york = await ledger.statistics(ALICE, timezone="America/New_York")
    assert [(s.period, s.net) for s in new_york] == [("2026-01", 7)]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", 5])
async def test_statistics_refuse_an_unknown_time_zone(async_db: Any, zone: Any) -> None:
    ledger = AsyncLedger(async_db)
    await ledger.increase(ALICE, 5)
    with pytest.raises(InvalidArgument, match="timezone"):
        await ledger.statistics(timezone=zone)


async def test_statistics_in_a_time_zone_of_an_empty_ledger(async_db: Any) -> None:
    assert await AsyncLedger(async_db).statistics(timezone="Europe/Paris") == []
