"""Engine parametrisation shared by every test.

Sync tests take ``db`` (engines: ``memory``, ``mongomock`` and ``real``); async tests take
``async_db`` (``memory``, ``motor-shape`` — Motor's call shapes over the memory engine —
``real`` and ``motor``). ``real`` runs only when
``MONGOLEDGER_TEST_URI`` names a replica set; each test gets a fresh database, dropped after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

REAL_URI = os.environ.get("MONGOLEDGER_TEST_URI")
# Without a URI, the real and motor tiers run against the engine's own wire endpoint: real
# PyMongo and real Motor over TCP (MONGOLEDGER_TEST_WIRE=0 skips them instead).
WIRE_SERVER: Any = None
if not REAL_URI and os.environ.get("MONGOLEDGER_TEST_WIRE", "1") != "0":
    from mongoledger.memory import MemoryServer
    from mongoledger.memory._commands import commands_for

    WIRE_SERVER = MemoryServer()
    # A transaction a test leaves open (a commit that never answered) is aborted after 5 s,
    # as a test deployment's transactionLifetimeLimitSeconds would, instead of the default 60.
    commands_for(WIRE_SERVER).sessions.transaction_lifetime = 5
    REAL_URI = WIRE_SERVER.listen()
SKIP_REAL = (
    "MONGOLEDGER_TEST_URI is not set and MONGOLEDGER_TEST_WIRE=0: set the URI of a replica set "
    "(or unset MONGOLEDGER_TEST_WIRE) to run the real-driver tiers"
)
NO_TXN = pytest.mark.filterwarnings("ignore::mongoledger.errors.NoTransactionsWarning")

SYNC_ENGINES = [
    pytest.param("memory", id="memory"),
    pytest.param("mongomock", id="mongomock", marks=NO_TXN),
    pytest.param("real", id="real", marks=pytest.mark.skipif(not REAL_URI, reason=SKIP_REAL)),
]
ASYNC_ENGINES = [
    pytest.param("memory", id="memory"),
    pytest.param("motor-shape", id="motor-shape"),
    pytest.param("real", id="real", marks=pytest.mark.skipif(not REAL_URI, reason=SKIP_REAL)),
    pytest.param("motor", id="motor", marks=pytest.mark.skipif(not REAL_URI, reason=SKIP_REAL)),
]


def pytest_report_header() -> str:
    if WIRE_SERVER is not None:
        return (
            "mongoledger engines: memory, mongomock, motor-shape, real, motor (real PyMongo and "
            f"Motor over the wire endpoint of the memory engine at {REAL_URI})"
        )
    if REAL_URI:
        return "mongoledger engines: memory, mongomock, motor-shape, real, motor (the URI's server)"
    return (
        f"mongoledger engines: memory, mongomock, motor-shape; real and motor skipped ({SKIP_REAL})"
    )


def _db_name() -> str:
    return f"mongoledger_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=SYNC_ENGINES)
def db(request: pytest.FixtureRequest) -> Iterator[Any]:
    engine = request.param
    if engine == "memory":
        from mongoledger.memory import MemoryClient

        yield MemoryClient()["test"]
    elif engine == "mongomock":
        import mongomock

        yield mongomock.MongoClient()["test"]
    else:
        from pymongo import MongoClient

        client: Any = MongoClient(REAL_URI)
        name = _db_name()
        try:
            yield client[name]
        finally:
            client.drop_database(name)
            client.close()


@pytest.fixture(params=ASYNC_ENGINES)
async def async_db(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    engine = request.param
    if engine == "memory":
        from mongoledger.memory import AsyncMemoryClient

        yield AsyncMemoryClient()["test"]
    elif engine == "motor-shape":
        from tests.motor_shim import motor_shape_database

        yield motor_shape_database()
    elif engine == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        motor_client: Any = AsyncIOMotorClient(REAL_URI)
        name = _db_name()
        try:
            yield motor_client[name]
        finally:
            await motor_client.drop_database(name)
            motor_client.close()
    else:
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(REAL_URI)
        name = _db_name()
        try:
            yield client[name]
        finally:
            await client.drop_database(name)
            await client.close()


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The id of the engine the current test runs on."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return "none"
    return str(callspec.params.get("db", callspec.params.get("async_db", "none")))
