"""The client: PyMongo's ``AsyncMongoClient`` surface over a ``MemoryServer``.

Written once, in ``_async/client.py``; ``scripts/unasync.py`` generates the sync twin
``_sync/client.py`` from it, and ``_IS_SYNC`` tells the twins apart where they differ.
Async operations run on the event loop itself (they are in-memory and short); an operation that
has to wait for another transaction awaits a future, so the loop is never blocked. Sync
operations block their thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from bson.timestamp import Timestamp
from pymongo import ReturnDocument
from pymongo.errors import (
    CollectionInvalid,
    ConfigurationError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.results import (
    BulkWriteResult,
    ClientBulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from pymongo.write_concern import WriteConcern

from mongoledger.memory._bson import Document
from mongoledger.memory._catalog import (
    create_collection,
    drop_database,
    rename_collection,
)
from mongoledger.memory._changestream import StreamCore
from mongoledger.memory._client_bulk import client_bulk_write
from mongoledger.memory._commands import commands_for, error_reply
from mongoledger.memory._ops import Call, CollectionOps, list_collection_names, sort_list
from mongoledger.memory._options import Options, client_options
from mongoledger.memory._server import MemoryServer
from mongoledger.memory._session import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    SessionState,
    make_timeout_error,
    max_time_expired_error,
    within_time_limit,
)
from mongoledger.memory._shared import (
    async_wait_for_event,
    check_collection_name,
    fail_command_spec,
    index_pairs,
    write_concern_checked,
)

from .commands import async_run_command

_IS_SYNC = False

T = TypeVar("T")

__all__ = [
    "AsyncChangeStream",
    "AsyncClientSession",
    "AsyncCollection",
    "AsyncCommandCursor",
    "AsyncCursor",
    "AsyncDatabase",
    "AsyncMemoryClient",
]


class AsyncMemoryClient:
    """An in-process MongoDB replica set with PyMongo's ``AsyncMongoClient`` surface.

    ``strict`` (default True) refuses an operation sent without ``session=`` from the thread
    or task that has a transaction open. Pass ``server=other_client.server`` to share data,
    transactions and change streams with another client (sync or async). Other keyword
    arguments are PyMongo's URI options for read preference and read/write concerns
    (``w=``, ``wTimeoutMS=``, ``journal=``, ``readPreference=``, ``readConcernLevel=``).

    ``path=DIR`` keeps the data in directory ``DIR`` (the embedded store: documents, indexes
    and change-stream history survive restarts, and a write is on disk when it returns);
    ``close()`` releases it for another process. ``oplog_size`` bounds the change events kept
    for resuming streams (default: unbounded in memory, 100,000 in a store).
    """

    def __init__(
        self,
        strict: bool = True,
        server: MemoryServer | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        oplog_size: int | None = None,
        **options: Any,
    ) -> None:
        if server is not None and (path is not None or oplog_size is not None):
            raise ValueError("give server= or path=/oplog_size=, not both")
        self._owns_server = server is None
        self.server = (
            server if server is not None else MemoryServer(path=path, oplog_size=oplog_size)
        )
        self.strict = strict
        self._options = client_options(options)
        self._closed = False

    @property
    def read_preference(self) -> Any:
        return self._options.read_preference

    @property
    def write_concern(self) -> WriteConcern:
        return self._options.write_concern

    @property
    def read_concern(self) -> ReadConcern:
        return self._options.read_concern

    async def _run(self, call: Call, session: AsyncClientSession | None) -> Any:
        return await self.server.run_async(
            call.cmd,
            self._session_state(session),
            call.fn,
            strict=self.strict,
            what=call.what,
            kind=call.kind,
            retryable=call.retryable,
            read=call.read,
        )

    async def _send_unacknowledged(
        self, calls: Sequence[Call], session: AsyncClientSession | None, wc: WriteConcern
    ) -> None:
        """Send writes under write concern ``wc`` of ``w: 0``, as a driver does: in no
        session (an explicit one is refused), and with no reply read, so no error seen."""
        if session is not None:
            raise ConfigurationError(
                f"Explicit sessions are incompatible with unacknowledged write concern: {wc!r}"
            )
        for call in calls:
            with contextlib.suppress(PyMongoError):
                await self._run(call, None)

    def _session_state(self, session: AsyncClientSession | None) -> SessionState | None:
        if session is None:
            return None
        if not isinstance(session, AsyncClientSession) or session._state.server is not self.server:
            raise InvalidOperation("Can only use session with the MongoClient that started it")
        return session._state

    def __getitem__(self, name: str) -> AsyncDatabase:
        return AsyncDatabase(self, name)

    def __getattr__(self, name: str) -> AsyncDatabase:
        if name.startswith("_"):
            raise AttributeError(name)
        return AsyncDatabase(self, name)

    def get_database(
        self,
        name: str | None = None,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> AsyncDatabase:
        """The database ``name`` (default ``"test"``), with its own options if given."""
        options = self._options.derive(read_preference, write_concern, read_concern)
        return AsyncDatabase(self, name or "test", options)

    @property
    def admin(self) -> AsyncDatabase:
        return AsyncDatabase(self, "admin")

    def start_session(
        self,
        causal_consistency: bool | None = None,
        default_transaction_options: Any = None,
        snapshot: bool | None = False,
    ) -> AsyncClientSession:
        if causal_consistency and snapshot:
            raise ConfigurationError("snapshot reads do not support causal_consistency=True")
        return AsyncClientSession(self, default_transaction_options, bool(snapshot))

    async def list_database_names(self, session: AsyncClientSession | None = None) -> list[str]:
        return list(self.server._mock.list_database_names())

    async def drop_database(self, name: Any, session: AsyncClientSession | None = None) -> None:
        db = name.name if isinstance(name, AsyncDatabase) else name
        await self._run(drop_database(self.server, db), session)

    async def bulk_write(
        self,
        models: Sequence[Any],
        session: AsyncClientSession | None = None,
        ordered: bool = True,
        verbose_results: bool = False,
        bypass_document_validation: bool | None = None,
        comment: Any = None,
        let: Any = None,
        write_concern: WriteConcern | None = None,
    ) -> ClientBulkWriteResult:
        """PyMongo's client-level bulk write (MongoDB 8's ``bulkWrite``): writes to any
        namespaces, each model naming its own (``InsertOne(doc, namespace="db.coll")``)."""
        state = self._session_state(session)
        in_txn = state is not None and state.in_transaction
        if in_txn:
            if write_concern:
                raise InvalidOperation("Cannot set write concern after starting a transaction")
            assert state is not None
            write_concern = state.txn_write_concern
        elif not write_concern:
            write_concern = self.write_concern
        assert write_concern is not None
        bulk = client_bulk_write(self.server, models, ordered, verbose_results, write_concern)
        if not write_concern.acknowledged:  # never a transaction's (it refuses to start)
            await self._send_unacknowledged([bulk.call], session, write_concern)
            return ClientBulkWriteResult({}, False, False)
        full_result = await self._run(bulk.call, session)
        return bulk.result(full_result, None if in_txn else write_concern)

    async def server_info(self) -> Document:
        return self.server.command("admin", {"buildInfo": 1})

    async def fail_command(
        self,
        commands: Sequence[str] | str,
        *,
        times: int | None = 1,
        error_code: int | None = None,
        error_labels: Sequence[str] = (),
        close_connection: bool = False,
    ) -> None:
        """Set MongoDB's ``failCommand`` fail point (``times=None``: until turned off)."""
        spec = fail_command_spec(
            commands,
            times=times,
            error_code=error_code,
            error_labels=error_labels,
            close_connection=close_connection,
        )
        await self.admin.command(spec)

    async def watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Timestamp | None = None,
        session: AsyncClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> AsyncChangeStream:
        return await _watch(self, None, None, locals())

    @property
    def address(self) -> tuple[str, int]:
        return ("memory", 27017)

    if not _IS_SYNC:

        async def aconnect(self) -> None:
            return None

    async def close(self) -> None:
        """Close the client; with ``path=``, close the store and release its lock (a client
        given ``server=`` leaves that server open)."""
        self._closed = True
        if self._owns_server:
            self.server.close()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        path = self.server.path
        where = "" if path is None else f", path={str(path)!r}"
        return f"AsyncMemoryClient(strict={self.strict}{where})"


async def _watch(
    client: AsyncMemoryClient, db: str | None, coll: str | None, args: dict[str, Any]
) -> AsyncChangeStream:
    state = client._session_state(args.get("session"))

    def fn(_op: Any) -> StreamCore:
        return StreamCore(
            client.server,
            db,
            coll,
            args.get("pipeline"),
            args.get("full_document"),
            args.get("resume_after"),
            args.get("start_after"),
            args.get("start_at_operation_time"),
            args.get("max_await_time_ms"),
            args.get("full_document_before_change"),
            args.get("show_expanded_events"),
        )

    what = f"watch on {db}.{coll}" if coll else f"watch on {db or 'the deployment'}"
    core = await client.server.run_async(
        "aggregate", state, fn, strict=client.strict, what=what, read=True
    )
    return AsyncChangeStream(core)


class AsyncDatabase:
    """A database served by :class:`AsyncMemoryClient`."""

    def __init__(
        self, client: AsyncMemoryClient, name: str, options: Options | None = None
    ) -> None:
        self.client = client
        self.name = name
        self._options = client._options if options is None else options

    @property
    def read_preference(self) -> Any:
        return self._options.read_preference

    @property
    def write_concern(self) -> WriteConcern:
        return self._options.write_concern

    @property
    def read_concern(self) -> ReadConcern:
        return self._options.read_concern

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, name)

    def __getattr__(self, name: str) -> AsyncCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return AsyncCollection(self, name)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AsyncDatabase)
            and other.client.server is self.client.server
            and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash(("db", self.name))

    def __repr__(self) -> str:
        return f"AsyncDatabase({self.client!r}, {self.name!r})"

    def get_collection(
        self,
        name: str,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> AsyncCollection:
        options = self._options.derive(read_preference, write_concern, read_concern)
        return AsyncCollection(self, name, options)

    def with_options(
        self,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> AsyncDatabase:
        options = self._options.derive(read_preference, write_concern, read_concern)
        return AsyncDatabase(self.client, self.name, options)

    async def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Any = None,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> Document:
        """Run a database command (the dispatcher in ``_commands``, as over the wire): CRUD,
        cursors, collections and indexes, with the server's reply shapes; ``session=`` joins
        its transaction. ``check=False`` returns an error reply instead of raising."""
        cmd: dict[str, Any] = {command: value} if isinstance(command, str) else dict(command)
        cmd.update(kwargs)
        commands = commands_for(self.client.server)
        state = self.client._session_state(session)
        try:
            return await async_run_command(commands, self.name, cmd, state)
        except OperationFailure as exc:
            if check:
                raise
            return error_reply(exc)

    async def list_collection_names(
        self, session: AsyncClientSession | None = None, filter: Any = None, **_kwargs: Any
    ) -> list[str]:
        call = list_collection_names(self.client.server, self.name)
        names: list[str] = await self.client._run(call, session)
        if filter and "name" in filter:
            names = [n for n in names if n == filter["name"]]
        return names

    async def create_collection(
        self,
        name: str,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        session: AsyncClientSession | None = None,
        check_exists: bool | None = True,
        **kwargs: Any,
    ) -> AsyncCollection:
        """Create collection ``name`` with options (``changeStreamPreAndPostImages``);
        inside a transaction it appears to others when the transaction commits."""
        check_collection_name(name)
        coll = self.get_collection(
            name, codec_options, read_preference, write_concern, read_concern
        )
        in_txn = session is not None and session.in_transaction
        if (
            check_exists
            and not in_txn
            and name in await self.list_collection_names(session=session)
        ):
            raise CollectionInvalid(f"collection {name} already exists")
        await coll._checked(create_collection(self.client.server, self.name, name, kwargs), session)
        return coll

    async def drop_collection(
        self, name_or_collection: Any, session: AsyncClientSession | None = None, **_kw: Any
    ) -> Document:
        name = (
            name_or_collection.name
            if isinstance(name_or_collection, AsyncCollection)
            else name_or_collection
        )
        await AsyncCollection(self, name).drop(session=session)
        return {"ok": 1.0}

    async def watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Timestamp | None = None,
        session: AsyncClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> AsyncChangeStream:
        return await _watch(self.client, self.name, None, locals())


class AsyncCollection:
    """A collection served by :class:`AsyncMemoryClient` (PyMongo's ``AsyncCollection``)."""

    def __init__(self, database: AsyncDatabase, name: str, options: Options | None = None) -> None:
        self.database = database
        self.name = name
        self.full_name = f"{database.name}.{name}"
        self._options = database._options if options is None else options
        self._ops = CollectionOps(database.client.server, database.name, name)

    @property
    def read_preference(self) -> Any:
        return self._options.read_preference

    @property
    def write_concern(self) -> WriteConcern:
        return self._options.write_concern

    @property
    def read_concern(self) -> ReadConcern:
        return self._options.read_concern

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self.database, f"{self.name}.{name}", self._options)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AsyncCollection)
            and other.database == self.database
            and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash(("coll", self.full_name))

    def __repr__(self) -> str:
        return f"AsyncCollection({self.database!r}, {self.name!r})"

    async def _run(self, call: Call, session: AsyncClientSession | None) -> Any:
        return await self.database.client._run(call, session)

    async def _write(
        self,
        call: Call,
        session: AsyncClientSession | None,
        unacknowledged: Callable[[], T],
        *,
        bulk: bool = False,
    ) -> T:
        """Run a write under this collection's write concern: unacknowledged, nothing of
        the reply is read (``unacknowledged()`` is the result); otherwise as ``_checked``."""
        if self._options.plain_writes:  # the common case, kept one call short
            plain: T = await self._run(call, session)
            return plain
        if not self._acknowledged(session):
            await self.database.client._send_unacknowledged([call], session, self.write_concern)
            return unacknowledged()
        result: T = await self._checked(call, session, bulk=bulk)
        return result

    async def _checked(
        self, call: Call, session: AsyncClientSession | None, *, bulk: bool = False
    ) -> Any:
        """Run a command under this collection's write concern (a transaction's statements
        take the transaction's, at commit): one a one-member set cannot satisfy fails after
        the command, as on a server."""
        if self._options.plain_writes:
            return await self._run(call, session)
        in_txn = session is not None and session.in_transaction
        result = await self._run(call, session)
        wc = None if in_txn else self._options.write_concern
        return write_concern_checked(result, wc, bulk=bulk)

    def _acknowledged(self, session: AsyncClientSession | None) -> bool:
        """Whether a write gets a reply: outside a transaction, as the write concern says."""
        in_txn = session is not None and session.in_transaction
        return in_txn or self._options.write_concern.acknowledged

    def with_options(
        self,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> AsyncCollection:
        options = self._options.derive(read_preference, write_concern, read_concern)
        return AsyncCollection(self.database, self.name, options)

    # -- writes ---------------------------------------------------------------------------

    async def insert_one(
        self,
        document: Any,
        bypass_document_validation: bool | None = None,
        session: AsyncClientSession | None = None,
        comment: Any = None,
    ) -> InsertOneResult:
        call = self._ops.insert_one(document)
        return await self._write(
            call, session, lambda: InsertOneResult(_id_of(document), acknowledged=False)
        )

    async def insert_many(
        self,
        documents: Any,
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: AsyncClientSession | None = None,
        comment: Any = None,
    ) -> InsertManyResult:
        call = self._ops.insert_many(documents, ordered)
        return await self._write(
            call,
            session,
            lambda: InsertManyResult([_id_of(d) for d in documents], acknowledged=False),
            bulk=True,
        )

    async def update_one(
        self,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        sort: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        call = self._ops.update(
            filter, update, multi=False, upsert=upsert, array_filters=array_filters, sort=sort
        )
        return await self._write(call, session, _unacknowledged_update)

    async def update_many(
        self,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool = False,
        array_filters: Any = None,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        call = self._ops.update(
            filter, update, multi=True, upsert=upsert, array_filters=array_filters
        )
        return await self._write(call, session, _unacknowledged_update)

    async def replace_one(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        sort: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        call = self._ops.replace_one(filter, replacement, upsert, sort)
        return await self._write(call, session, _unacknowledged_update)

    async def delete_one(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        comment: Any = None,
    ) -> DeleteResult:
        call = self._ops.delete(filter, multi=False)
        return await self._write(call, session, _unacknowledged_delete)

    async def delete_many(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        comment: Any = None,
    ) -> DeleteResult:
        call = self._ops.delete(filter, multi=True)
        return await self._write(call, session, _unacknowledged_delete)

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        array_filters: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        comment: Any = None,
        **_kwargs: Any,
    ) -> Any:
        call = self._ops.find_one_and(
            "update",
            filter,
            update,
            projection=projection,
            sort=sort,
            upsert=upsert,
            return_document=return_document,
            array_filters=array_filters,
        )
        return await self._checked(call, session)

    async def find_one_and_replace(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        comment: Any = None,
        **_kwargs: Any,
    ) -> Any:
        call = self._ops.find_one_and(
            "replace",
            filter,
            replacement,
            projection=projection,
            sort=sort,
            upsert=upsert,
            return_document=return_document,
        )
        return await self._checked(call, session)

    async def find_one_and_delete(
        self,
        filter: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        hint: Any = None,
        session: AsyncClientSession | None = None,
        let: Any = None,
        comment: Any = None,
        **_kwargs: Any,
    ) -> Any:
        call = self._ops.find_one_and("delete", filter, projection=projection, sort=sort)
        return await self._checked(call, session)

    async def bulk_write(
        self,
        requests: Sequence[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: AsyncClientSession | None = None,
        comment: Any = None,
        let: Any = None,
    ) -> BulkWriteResult:
        calls = self._ops.bulk_write(requests, ordered)
        if not self._acknowledged(session):
            await self.database.client._send_unacknowledged(calls, session, self.write_concern)
            return BulkWriteResult({}, acknowledged=False)
        in_txn = session is not None and session.in_transaction
        wc = self._options.write_concern
        results: list[Document] = []
        for call in calls:
            results.append(await self._run(call, session))
            if ordered and results[-1]["writeErrors"]:
                break
        return CollectionOps.bulk_result(CollectionOps.merge_bulk(results), None if in_txn else wc)

    async def drop(
        self, session: AsyncClientSession | None = None, comment: Any = None, **_kw: Any
    ) -> None:
        await self._checked(self._ops.drop(), session)

    async def rename(
        self,
        new_name: str,
        session: AsyncClientSession | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Document:
        """Rename this collection (``dropTarget=True`` replaces an existing one); streams on
        either name see a ``rename`` event, then ``invalidate``."""
        if not isinstance(new_name, str):
            raise TypeError(f"new_name must be an instance of str, not {type(new_name)}")
        check_collection_name(new_name)
        drop_target = bool(kwargs.pop("dropTarget", False))
        call = rename_collection(
            self.database.client.server,
            self.database.name,
            self.name,
            self.database.name,
            new_name,
            drop_target=drop_target,
        )
        result: Document = await self._checked(call, session)
        return result

    # -- reads ----------------------------------------------------------------------------

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Any = None,
        skip: int = 0,
        limit: int = 0,
        sort: Any = None,
        session: AsyncClientSession | None = None,
        **_kwargs: Any,
    ) -> AsyncCursor:
        return AsyncCursor(self, filter or {}, projection, sort_list(sort), skip, limit, session)

    async def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        docs = await self.find(filter, *args, **kwargs).limit(-1).to_list()
        return docs[0] if docs else None

    async def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        session: AsyncClientSession | None = None,
        **_kwargs: Any,
    ) -> AsyncCommandCursor:
        return AsyncCommandCursor(await self._run(self._ops.aggregate(pipeline), session))

    async def count_documents(
        self, filter: Mapping[str, Any], session: AsyncClientSession | None = None, **kwargs: Any
    ) -> int:
        result: int = await self._run(self._ops.count_documents(filter, **kwargs), session)
        return result

    async def estimated_document_count(self, comment: Any = None, **kwargs: Any) -> int:
        if "session" in kwargs:
            raise ConfigurationError("estimated_document_count does not support sessions")
        result: int = await self._run(self._ops.estimated_document_count(), None)
        return result

    async def distinct(
        self,
        key: str,
        filter: Mapping[str, Any] | None = None,
        session: AsyncClientSession | None = None,
        **_kwargs: Any,
    ) -> list[Any]:
        result: list[Any] = await self._run(self._ops.distinct(key, filter), session)
        return result

    # -- indexes --------------------------------------------------------------------------

    async def create_index(
        self, keys: Any, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> str:
        kwargs.pop("comment", None)
        call = self._ops.create_indexes([(keys, kwargs)], "create_index")
        names: list[str] = await self._checked(call, session)
        return names[0]

    async def create_indexes(
        self, indexes: Sequence[Any], session: AsyncClientSession | None = None, **_kw: Any
    ) -> list[str]:
        call = self._ops.create_indexes(index_pairs(indexes), "create_indexes")
        result: list[str] = await self._checked(call, session)
        return result

    async def list_indexes(
        self, session: AsyncClientSession | None = None, **_kw: Any
    ) -> AsyncCommandCursor:
        return AsyncCommandCursor(await self._run(self._ops.list_indexes(), session))

    async def index_information(
        self, session: AsyncClientSession | None = None, **_kw: Any
    ) -> Document:
        indexes = await self._run(self._ops.list_indexes("index_information"), session)
        info: Document = {}
        for listed in indexes:
            index = dict(listed)
            index["key"] = list(index["key"].items())
            info[index.pop("name")] = index
        return info

    async def drop_index(
        self, index_or_name: Any, session: AsyncClientSession | None = None, **_kw: Any
    ) -> None:
        await self._checked(self._ops.drop_index(index_or_name), session)

    async def watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Timestamp | None = None,
        session: AsyncClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> AsyncChangeStream:
        return await _watch(self.database.client, self.database.name, self.name, locals())


class AsyncCursor:
    """A ``find`` cursor: chain ``sort``/``skip``/``limit``, then iterate (runs on first use)."""

    def __init__(
        self,
        collection: AsyncCollection,
        filter: Any,
        projection: Any,
        sort: list[tuple[str, Any]] | None,
        skip: int,
        limit: int,
        session: AsyncClientSession | None,
    ) -> None:
        self.collection = collection
        self._args: dict[str, Any] = {
            "filter": filter,
            "projection": projection,
            "sort": sort,
            "skip": skip,
            "limit": limit,
        }
        self._session = session
        self._docs: Iterator[Document] | None = None

    def _check(self) -> None:
        if self._docs is not None:
            raise InvalidOperation("cannot set options after executing query")

    def sort(self, key_or_list: Any, direction: Any = None) -> AsyncCursor:
        self._check()
        self._args["sort"] = sort_list(key_or_list, direction)
        return self

    def skip(self, skip: int) -> AsyncCursor:
        self._check()
        self._args["skip"] = skip
        return self

    def limit(self, limit: int) -> AsyncCursor:
        self._check()
        self._args["limit"] = limit
        return self

    def batch_size(self, _batch_size: int) -> AsyncCursor:
        return self

    async def _execute(self) -> Iterator[Document]:
        if self._docs is None:
            call = self.collection._ops.find(**self._args)
            self._docs = iter(await self.collection._run(call, self._session))
        return self._docs

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Document:
        return _next(await self._execute())

    next = __anext__

    async def to_list(self, length: int | None = None) -> list[Document]:
        return _take(await self._execute(), length)

    async def close(self) -> None:
        self._docs = iter(())

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncCommandCursor:
    """The result cursor of ``aggregate`` and ``list_indexes``."""

    def __init__(self, docs: list[Document]) -> None:
        self._docs = iter(docs)

    def __aiter__(self) -> AsyncCommandCursor:
        return self

    async def __anext__(self) -> Document:
        return _next(self._docs)

    next = __anext__

    async def to_list(self, length: int | None = None) -> list[Document]:
        return _take(self._docs, length)

    async def close(self) -> None:
        self._docs = iter(())

    async def __aenter__(self) -> AsyncCommandCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _id_of(document: Any) -> Any:
    return document.get("_id") if isinstance(document, Mapping) else None


def _unacknowledged_update() -> UpdateResult:
    return UpdateResult({}, acknowledged=False)


def _unacknowledged_delete() -> DeleteResult:
    return DeleteResult({}, acknowledged=False)


def _next(docs: Iterator[Document]) -> Document:
    doc = next(docs, None)
    if doc is None:
        raise StopAsyncIteration
    return doc


def _take(docs: Iterator[Document], length: int | None) -> list[Document]:
    if length is None:
        return list(docs)
    return [doc for _, doc in zip(range(length), docs, strict=False)]


class _AsyncTransactionContext:
    def __init__(self, session: AsyncClientSession) -> None:
        self._session = session

    async def __aenter__(self) -> _AsyncTransactionContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session.in_transaction:
            if exc_type is None:
                await self._session.commit_transaction()
            else:
                await self._session.abort_transaction()


class AsyncClientSession:
    """A logical session (PyMongo's ``AsyncClientSession``): transactions and their retry helper."""

    def __init__(
        self,
        client: AsyncMemoryClient,
        default_transaction_options: Any = None,
        snapshot: bool = False,
    ) -> None:
        self.client = client
        self._state = SessionState(
            client.server,
            client,
            default_transaction_options=default_transaction_options,
            snapshot=snapshot,
        )

    @property
    def session_id(self) -> Document:
        return self._state.session_id

    @property
    def in_transaction(self) -> bool:
        return self._state.in_transaction

    @property
    def has_ended(self) -> bool:
        return self._state.ended

    @property
    def operation_time(self) -> Timestamp | None:
        return self._state.operation_time

    async def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> _AsyncTransactionContext:
        self._state.start_transaction(
            read_concern, write_concern, read_preference, max_commit_time_ms
        )
        return _AsyncTransactionContext(self)

    async def commit_transaction(self) -> None:
        try:
            self._state.commit_transaction()
        finally:  # committed (a write concern error too): on disk before it returns
            await self.client.server.async_wait_durable()

    async def abort_transaction(self) -> None:
        self._state.abort_transaction()

    async def end_session(self) -> None:
        self._state.end_session()

    async def __aenter__(self) -> AsyncClientSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end_session()

    async def with_transaction(
        self,
        callback: Callable[[AsyncClientSession], Awaitable[T]],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> T:
        """Run ``await callback(session)`` in a transaction with PyMongo's retry rules."""
        # Mirrors PyMongo's with_transaction (pymongo/*/client_session.py).
        start_time = time.monotonic()
        retry = 0
        last_error: BaseException | None = None
        while True:
            if retry:
                jitter = random.random()
                backoff = jitter * min(BACKOFF_INITIAL * (1.5**retry), BACKOFF_MAX)
                if not within_time_limit(start_time, backoff):
                    assert last_error is not None
                    raise make_timeout_error(last_error) from last_error
                await asyncio.sleep(backoff)
            retry += 1
            await self.start_transaction(
                read_concern, write_concern, read_preference, max_commit_time_ms
            )
            try:
                ret = await callback(self)
            except BaseException as exc:
                last_error = exc
                if self.in_transaction:
                    await self.abort_transaction()
                if isinstance(exc, PyMongoError) and exc.has_error_label(
                    "TransientTransactionError"
                ):
                    if within_time_limit(start_time):
                        continue
                    raise make_timeout_error(last_error) from exc
                raise

            if not self.in_transaction:
                return ret  # the callback ended the transaction itself

            while True:
                try:
                    await self.commit_transaction()
                except PyMongoError as exc:
                    last_error = exc
                    if exc.has_error_label(
                        "UnknownTransactionCommitResult"
                    ) and not max_time_expired_error(exc):
                        if not within_time_limit(start_time):
                            raise make_timeout_error(last_error) from exc
                        continue
                    if exc.has_error_label("TransientTransactionError"):
                        if not within_time_limit(start_time):
                            raise make_timeout_error(last_error) from exc
                        break
                    raise
                return ret


class AsyncChangeStream:
    """A change stream (PyMongo's ``AsyncChangeStream``): ``next``, ``try_next``, iteration."""

    def __init__(self, core: StreamCore) -> None:
        self._core = core
        self._server = core.server
        self._closed = False

    @property
    def alive(self) -> bool:
        return not self._closed and self._core.alive

    @property
    def resume_token(self) -> Document:
        return self._core.resume_token

    async def _wait(self, timeout: float | None) -> Document | None:
        if self._closed:
            raise InvalidOperation("Cannot call next() on a closed change stream")
        return await async_wait_for_event(self._core, timeout)

    async def try_next(self) -> Document | None:
        """The next event, or None if none arrives within ``max_await_time_ms``."""
        return await self._wait(self._core.max_await)

    async def next(self) -> Document:
        """Wait for the next event; StopAsyncIteration once invalidated or closed."""
        event = None if self._closed else await self._wait(None)
        if event is None:
            raise StopAsyncIteration
        return event

    __anext__ = next

    def __aiter__(self) -> AsyncChangeStream:
        return self

    async def close(self) -> None:
        self._closed = True

    async def __aenter__(self) -> AsyncChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
