"""The synchronous client: PyMongo's ``MongoClient`` surface over a ``MemoryServer``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from bson.timestamp import Timestamp
from pymongo import ReturnDocument
from pymongo.errors import InvalidOperation, PyMongoError
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)

from ._changestream import StreamCore
from ._engine import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    Document,
    MemoryServer,
    SessionState,
    make_timeout_error,
    max_time_expired_error,
    operation_failure,
    within_time_limit,
)
from ._ops import Call, CollectionOps, list_collection_names, sort_list

T = TypeVar("T")

__all__ = [
    "ChangeStream",
    "ClientSession",
    "Collection",
    "CommandCursor",
    "Cursor",
    "Database",
    "MemoryClient",
]


def fail_command_spec(
    commands: Sequence[str] | str,
    *,
    times: int | None = 1,
    error_code: int | None = None,
    error_labels: Sequence[str] = (),
    close_connection: bool = False,
) -> Document:
    """The ``configureFailPoint`` command for :meth:`MemoryClient.fail_command`."""
    data: Document = {"failCommands": [commands] if isinstance(commands, str) else list(commands)}
    if error_code is not None:
        data["errorCode"] = error_code
    if error_labels:
        data["errorLabels"] = list(error_labels)
    if close_connection:
        data["closeConnection"] = True
    if error_code is None and not close_connection:
        raise ValueError("fail_command needs error_code= or close_connection=True")
    mode: Any = "alwaysOn" if times is None else {"times": times}
    return {"configureFailPoint": "failCommand", "mode": mode, "data": data}


class MemoryClient:
    """An in-process MongoDB replica set with PyMongo's synchronous ``MongoClient`` surface.

    ``strict`` (default True) refuses an operation sent without ``session=`` from a thread that
    has a transaction open. Pass ``server=other_client.server`` to share data, transactions
    and change streams with another client (sync or async).
    """

    def __init__(self, strict: bool = True, server: MemoryServer | None = None) -> None:
        self.server = server if server is not None else MemoryServer()
        self.strict = strict
        self._closed = False

    def _run(self, call: Call, session: ClientSession | None) -> Any:
        state = self._session_state(session)
        return self.server.run_sync(
            call.cmd,
            state,
            call.fn,
            strict=self.strict,
            what=call.what,
            kind=call.kind,
            retryable=call.retryable,
        )

    def _session_state(self, session: ClientSession | None) -> SessionState | None:
        if session is None:
            return None
        if not isinstance(session, ClientSession) or session._state.server is not self.server:
            raise InvalidOperation("Can only use session with the MongoClient that started it")
        return session._state

    def __getitem__(self, name: str) -> Database:
        return Database(self, name)

    def __getattr__(self, name: str) -> Database:
        if name.startswith("_"):
            raise AttributeError(name)
        return Database(self, name)

    def get_database(self, name: str | None = None, **_options: Any) -> Database:
        """The database ``name`` (default ``"test"``); options are accepted and ignored."""
        return Database(self, name or "test")

    @property
    def admin(self) -> Database:
        return Database(self, "admin")

    def start_session(
        self,
        causal_consistency: bool | None = None,
        default_transaction_options: Any = None,
        snapshot: bool | None = False,
    ) -> ClientSession:
        return ClientSession(self)

    def list_database_names(self, session: ClientSession | None = None) -> list[str]:
        return list(self.server._mock.list_database_names())

    def drop_database(self, name: Any, session: ClientSession | None = None) -> None:
        db = name.name if isinstance(name, Database) else name
        for coll in list(self.server._mock[db].list_collection_names()):
            Database(self, db).drop_collection(coll, session=session)

    def server_info(self) -> Document:
        return self.server.command("admin", {"buildInfo": 1})

    def fail_command(
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
        self.admin.command(spec)

    def watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Timestamp | None = None,
        session: ClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> ChangeStream:
        return _watch(self, None, None, locals())

    @property
    def address(self) -> tuple[str, int]:
        return ("memory", 27017)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryClient(strict={self.strict})"


def _watch(
    client: MemoryClient, db: str | None, coll: str | None, args: dict[str, Any]
) -> ChangeStream:
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
        )

    what = f"watch on {db}.{coll}" if coll else f"watch on {db or 'the deployment'}"
    core = client.server.run_sync("aggregate", state, fn, strict=client.strict, what=what)
    return ChangeStream(core)


class Database:
    """A database of a :class:`MemoryClient`."""

    def __init__(self, client: MemoryClient, name: str) -> None:
        self.client = client
        self.name = name

    def __getitem__(self, name: str) -> Collection:
        return Collection(self, name)

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(name)
        return Collection(self, name)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Database)
            and other.client.server is self.client.server
            and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash(("db", self.name))

    def __repr__(self) -> str:
        return f"Database({self.client!r}, {self.name!r})"

    def get_collection(self, name: str, **_options: Any) -> Collection:
        return Collection(self, name)

    def with_options(self, **_options: Any) -> Database:
        return self

    def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Any = None,
        session: ClientSession | None = None,
        **kwargs: Any,
    ) -> Document:
        cmd: dict[str, Any] = {command: value} if isinstance(command, str) else dict(command)
        cmd.update(kwargs)
        return self.client.server.command(self.name, cmd)

    def list_collection_names(
        self, session: ClientSession | None = None, filter: Any = None, **_kwargs: Any
    ) -> list[str]:
        names: list[str] = self.client._run(
            list_collection_names(self.client.server, self.name), session
        )
        if filter and "name" in filter:
            names = [n for n in names if n == filter["name"]]
        return names

    def create_collection(
        self, name: str, session: ClientSession | None = None, **_kw: Any
    ) -> Collection:
        if name in self.list_collection_names(session=session):
            raise operation_failure(
                48, "NamespaceExists", f"Collection {self.name}.{name} already exists."
            )
        self.client.server._store[self.name].create_collection(name)
        return Collection(self, name)

    def drop_collection(
        self, name_or_collection: Any, session: ClientSession | None = None, **_kw: Any
    ) -> Document:
        name = (
            name_or_collection.name
            if isinstance(name_or_collection, Collection)
            else name_or_collection
        )
        Collection(self, name).drop(session=session)
        return {"ok": 1.0}

    def watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Timestamp | None = None,
        session: ClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> ChangeStream:
        return _watch(self.client, self.name, None, locals())


class Collection:
    """A collection of a :class:`MemoryClient` (PyMongo's ``Collection`` surface)."""

    def __init__(self, database: Database, name: str) -> None:
        self.database = database
        self.name = name
        self.full_name = f"{database.name}.{name}"
        self._ops = CollectionOps(database.client.server, database.name, name)

    def __getitem__(self, name: str) -> Collection:
        return Collection(self.database, f"{self.name}.{name}")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Collection)
            and other.database == self.database
            and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash(("coll", self.full_name))

    def __repr__(self) -> str:
        return f"Collection({self.database!r}, {self.name!r})"

    def _run(self, call: Call, session: ClientSession | None) -> Any:
        return self.database.client._run(call, session)

    def with_options(self, **_options: Any) -> Collection:
        return self

    # -- writes ---------------------------------------------------------------------------

    def insert_one(
        self,
        document: Any,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
    ) -> InsertOneResult:
        return self._run(self._ops.insert_one(document), session)  # type: ignore[no-any-return]

    def insert_many(
        self,
        documents: Any,
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
    ) -> InsertManyResult:
        return self._run(self._ops.insert_many(documents, ordered), session)  # type: ignore[no-any-return]

    def update_one(
        self,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Any = None,
        sort: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        call = self._ops.update(
            filter, update, multi=False, upsert=upsert, array_filters=array_filters, sort=sort
        )
        return self._run(call, session)  # type: ignore[no-any-return]

    def update_many(
        self,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool = False,
        array_filters: Any = None,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        call = self._ops.update(
            filter, update, multi=True, upsert=upsert, array_filters=array_filters
        )
        return self._run(call, session)  # type: ignore[no-any-return]

    def replace_one(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Any = None,
        sort: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        return self._run(self._ops.replace_one(filter, replacement, upsert, sort), session)  # type: ignore[no-any-return]

    def delete_one(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Any = None,
        comment: Any = None,
    ) -> DeleteResult:
        return self._run(self._ops.delete(filter, multi=False), session)  # type: ignore[no-any-return]

    def delete_many(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Any = None,
        comment: Any = None,
    ) -> DeleteResult:
        return self._run(self._ops.delete(filter, multi=True), session)  # type: ignore[no-any-return]

    def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        array_filters: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
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
        return self._run(call, session)

    def find_one_and_replace(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        hint: Any = None,
        session: ClientSession | None = None,
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
        return self._run(call, session)

    def find_one_and_delete(
        self,
        filter: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Any = None,
        comment: Any = None,
        **_kwargs: Any,
    ) -> Any:
        call = self._ops.find_one_and("delete", filter, projection=projection, sort=sort)
        return self._run(call, session)

    def bulk_write(
        self,
        requests: Sequence[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        let: Any = None,
    ) -> BulkWriteResult:
        results: list[Document] = []
        for call in self._ops.bulk_write(requests, ordered):
            results.append(self._run(call, session))
            if ordered and results[-1]["writeErrors"]:
                break
        return CollectionOps.bulk_result(CollectionOps.merge_bulk(results))

    def drop(self, session: ClientSession | None = None, comment: Any = None, **_kw: Any) -> None:
        self._run(self._ops.drop(), session)

    # -- reads ----------------------------------------------------------------------------

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Any = None,
        skip: int = 0,
        limit: int = 0,
        sort: Any = None,
        session: ClientSession | None = None,
        **_kwargs: Any,
    ) -> Cursor:
        return Cursor(self, filter or {}, projection, sort_list(sort), skip, limit, session)

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        for doc in self.find(filter, *args, **kwargs).limit(-1):
            return doc
        return None

    def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        session: ClientSession | None = None,
        **_kwargs: Any,
    ) -> CommandCursor:
        return CommandCursor(self._run(self._ops.aggregate(pipeline), session))

    def count_documents(
        self, filter: Mapping[str, Any], session: ClientSession | None = None, **kwargs: Any
    ) -> int:
        return self._run(self._ops.count_documents(filter, **kwargs), session)  # type: ignore[no-any-return]

    def estimated_document_count(self, **_kwargs: Any) -> int:
        return self._run(self._ops.estimated_document_count(), None)  # type: ignore[no-any-return]

    def distinct(
        self,
        key: str,
        filter: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
        **_kwargs: Any,
    ) -> list[Any]:
        return self._run(self._ops.distinct(key, filter), session)  # type: ignore[no-any-return]

    # -- indexes --------------------------------------------------------------------------

    def create_index(self, keys: Any, session: ClientSession | None = None, **kwargs: Any) -> str:
        return self._run(self._ops.create_index(keys, **kwargs), session)  # type: ignore[no-any-return]

    def create_indexes(
        self, indexes: Sequence[Any], session: ClientSession | None = None, **_kw: Any
    ) -> list[str]:
        return self._run(self._ops.create_indexes(indexes), session)  # type: ignore[no-any-return]

    def list_indexes(self, session: ClientSession | None = None, **_kw: Any) -> CommandCursor:
        return CommandCursor(self._run(self._ops.list_indexes(), session))

    def index_information(self, session: ClientSession | None = None, **_kw: Any) -> Document:
        return self._run(self._ops.index_information(), session)  # type: ignore[no-any-return]

    def drop_index(
        self, index_or_name: Any, session: ClientSession | None = None, **_kw: Any
    ) -> None:
        self._run(self._ops.drop_index(index_or_name), session)

    def watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Timestamp | None = None,
        session: ClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> ChangeStream:
        return _watch(self.database.client, self.database.name, self.name, locals())


class Cursor:
    """A ``find`` cursor: chain ``sort``/``skip``/``limit``, then iterate (runs on first use)."""

    def __init__(
        self,
        collection: Collection,
        filter: Any,
        projection: Any,
        sort: list[tuple[str, Any]] | None,
        skip: int,
        limit: int,
        session: ClientSession | None,
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

    def sort(self, key_or_list: Any, direction: Any = None) -> Cursor:
        self._check()
        self._args["sort"] = sort_list(key_or_list, direction)
        return self

    def skip(self, skip: int) -> Cursor:
        self._check()
        self._args["skip"] = skip
        return self

    def limit(self, limit: int) -> Cursor:
        self._check()
        self._args["limit"] = limit
        return self

    def batch_size(self, _batch_size: int) -> Cursor:
        return self

    def _execute(self) -> Iterator[Document]:
        if self._docs is None:
            call = self.collection._ops.find(**self._args)
            self._docs = iter(self.collection._run(call, self._session))
        return self._docs

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Document:
        return next(self._execute())

    next = __next__

    def to_list(self, length: int | None = None) -> list[Document]:
        docs = self._execute()
        if length is None:
            return list(docs)
        return [doc for _, doc in zip(range(length), docs, strict=False)]

    def close(self) -> None:
        self._docs = iter(())

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CommandCursor:
    """The result cursor of ``aggregate`` and ``list_indexes``."""

    def __init__(self, docs: list[Document]) -> None:
        self._docs = iter(docs)

    def __iter__(self) -> CommandCursor:
        return self

    def __next__(self) -> Document:
        return next(self._docs)

    next = __next__

    def to_list(self, length: int | None = None) -> list[Document]:
        if length is None:
            return list(self._docs)
        return [doc for _, doc in zip(range(length), self._docs, strict=False)]

    def close(self) -> None:
        self._docs = iter(())

    def __enter__(self) -> CommandCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TransactionContext:
    def __init__(self, session: ClientSession) -> None:
        self._session = session

    def __enter__(self) -> _TransactionContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session.in_transaction:
            if exc_type is None:
                self._session.commit_transaction()
            else:
                self._session.abort_transaction()


class ClientSession:
    """A logical session (PyMongo's ``ClientSession``): transactions and their retry helper."""

    def __init__(self, client: MemoryClient) -> None:
        self.client = client
        self._state = SessionState(client.server)

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

    def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> _TransactionContext:
        self._state.start_transaction()
        return _TransactionContext(self)

    def commit_transaction(self) -> None:
        self._state.commit_transaction()

    def abort_transaction(self) -> None:
        self._state.abort_transaction()

    def end_session(self) -> None:
        self._state.end_session()

    def __enter__(self) -> ClientSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_session()

    def with_transaction(
        self,
        callback: Callable[[ClientSession], T],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> T:
        """Run ``callback(session)`` in a transaction with PyMongo's retry rules, then commit."""
        # Mirrors pymongo.synchronous.client_session.ClientSession.with_transaction.
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
                time.sleep(backoff)
            retry += 1
            self.start_transaction(read_concern, write_concern, read_preference, max_commit_time_ms)
            try:
                ret = callback(self)
            except BaseException as exc:
                last_error = exc
                if self.in_transaction:
                    self.abort_transaction()
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
                    self.commit_transaction()
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


class ChangeStream:
    """A change stream (PyMongo's ``ChangeStream``): ``next``, ``try_next``, iteration."""

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

    def try_next(self) -> Document | None:
        """The next event, or None if none arrives within ``max_await_time_ms``."""
        return self._wait(self._core.max_await)

    def _wait(self, timeout: float | None) -> Document | None:
        if self._closed:
            raise InvalidOperation("Cannot call next() on a closed change stream")
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._server._oplog_waiters.cond
        with cond:
            while True:
                event = self._core.poll()
                if event is not None or not self._core.alive:
                    return event
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                cond.wait(remaining)

    def next(self) -> Document:
        """Block until the next event; StopIteration once the stream is invalidated/closed."""
        event = None if self._closed else self._wait(None)
        if event is None:
            raise StopIteration
        return event

    __next__ = next

    def __iter__(self) -> ChangeStream:
        return self

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
