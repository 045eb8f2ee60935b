"""An in-process MongoDB engine for demos and tests (transactions and change streams included).

``MemoryClient`` (PyMongo's synchronous surface) and ``AsyncMemoryClient`` (PyMongo's native
async surface) serve databases and collections whose query and update semantics come from
mongomock, plus what mongomock lacks:

* answers ``hello`` as a replica-set primary, so transaction detection works;
* sessions and multi-document transactions (``start_transaction``, ``commit_transaction``,
  ``abort_transaction``, ``with_transaction`` with PyMongo's retry rules): transactions are
  serialized by one server-wide lock; abort restores every touched document at a cost
  proportional to the documents touched;
* strict mode (default): an operation without ``session=`` from the thread/task that has a
  transaction open raises ``StrictModeError``;
* two sessions in one thread never deadlock: reads outside the transaction see committed data,
  writes to a document the transaction wrote fail with ``WriteConflict`` (code 112,
  ``TransientTransactionError``);
* change streams (``watch`` on a collection, database or client) with MongoDB's event shapes,
  events only after commit, resume tokens, ``start_at_operation_time``, an optional oplog cap;
* MongoDB's ``failCommand`` fail point (``client.fail_command(...)`` or
  ``client.admin.command({"configureFailPoint": "failCommand", ...})``) and per-command counters
  (``server.command_counts``);
* server checks: 16 MiB documents, int64 overflow (``$inc`` included), unique and partial
  unique indexes, ``$expr`` refused in an upsert's filter (224), a failed statement aborting
  its transaction (later statements and the commit get ``NoSuchTransaction``, 251), index
  option conflicts (85), BSON round trip of stored documents, ``$inc`` keeping a 64-bit
  integer 64-bit (mongomock's would store a small result as a 32-bit one).
* indexed lookups: equality on ``_id`` and on fields that lead an index (any top-level field
  under a wildcard index) reads a hash bucket instead of testing every document; other
  queries scan, as a server would without a suitable index (see ``_index``).
* the embedded store: ``MemoryClient(path=DIR)`` / ``AsyncMemoryClient(path=DIR)`` /
  ``MemoryServer(path=DIR)`` keep documents, indexes and the change-stream history in ``DIR``
  (journal with group commit, self-compacting snapshot, recovery; one process at a time, under
  an OS lock: ``StoreLocked``); a write is on disk before it returns, and change streams see
  only what is on disk (MongoDB's majority read point). The on-disk format: ``_store``.

Not emulated: snapshot isolation between concurrent transactions (they run one at a time
instead), read/write concerns and read preferences (accepted, ignored), causal consistency,
``array_filters`` and other operators mongomock lacks, ``$type`` by BSON type (mongomock
tells ``int`` from ``long`` by magnitude and knows no numeric type codes), collations,
``$redact`` in change
streams, pre-images (``fullDocumentBeforeChange``), ``showExpandedEvents`` events (create,
createIndexes, ...), ``updateLookup`` returning a document newer than the event (it returns the
document as the event's commit left it), DDL inside transactions (``drop`` is refused with code
263; index builds are not rolled back), server-side transaction timeouts
(``transactionLifetimeLimitSeconds``), cursors with server-side batching (results are
materialized), and authentication.

The wire endpoint (``MemoryServer.listen()``, ``mongoledger serve-db``; see ``_wire`` and the
command dispatcher ``_commands``, which ``db.command(...)`` shares) serves this engine to real
drivers (PyMongo, Motor, mongosh) as a one-member replica set of MongoDB 7.0. It does not
implement authentication, TLS, compression or exhaust cursors, and it cannot check sessions
strictly: an operation that forgot ``session=`` inside a transaction reaches it as an ordinary
command, which runs outside the transaction (as on MongoDB) instead of raising
``StrictModeError``. Transactions of different sessions run one at a time (writes outside
them wait while one is open; reads see committed data); one left open is aborted when its
lifetime (``transactionLifetimeLimitSeconds``, 60 s) runs out.
"""

from ._async.client import (
    AsyncChangeStream,
    AsyncClientSession,
    AsyncCollection,
    AsyncDatabase,
    AsyncMemoryClient,
)
from ._engine import MemoryServer, StrictModeError
from ._store import StoreCorrupted, StoreError, StoreLocked, StoreRecoveryWarning
from ._sync.client import ChangeStream, ClientSession, Collection, Database, MemoryClient

__all__ = [
    "AsyncChangeStream",
    "AsyncClientSession",
    "AsyncCollection",
    "AsyncDatabase",
    "AsyncMemoryClient",
    "ChangeStream",
    "ClientSession",
    "Collection",
    "Database",
    "MemoryClient",
    "MemoryServer",
    "StoreCorrupted",
    "StoreError",
    "StoreLocked",
    "StoreRecoveryWarning",
    "StrictModeError",
]
