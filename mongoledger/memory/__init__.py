"""An in-process MongoDB engine for demos and tests (transactions and change streams included).

``MemoryClient`` (PyMongo's synchronous surface) and ``AsyncMemoryClient`` (PyMongo's native
async surface) serve databases and collections whose query and update semantics come from
mongomock, plus what mongomock lacks, as a one-member replica set of MongoDB 7 answers (and
MongoDB 8's client-level bulk write, in process):

* answers ``hello`` as a replica-set primary, so transaction detection works;
* sessions and multi-document transactions with snapshot isolation: transactions of different
  threads and tasks run concurrently (no server-wide lock); each reads the snapshot taken at
  its first operation plus its own writes; writing a document another open transaction wrote,
  or that a commit changed after the snapshot, fails at once with ``WriteConflict`` (112,
  ``TransientTransactionError``), which ``with_transaction`` retries; a write outside any
  transaction waits for the transaction holding its document (at most
  ``transaction_lifetime_limit`` seconds, after which the server aborts the holder); unique
  indexes see committed data and the transaction's own; abort restores every touched document
  at a cost proportional to the documents touched;
* PyMongo's client-side rules: its session state machine and messages, read preference
  primary in a transaction, no unacknowledged write concern for a transaction, an operation
  after a transaction resetting the session; options inherited client -> database ->
  collection (``w=``, ``readPreference=``, ... and ``with_options``);
* write concerns as one member answers them: ``w`` above 1 (or an unknown tag) fails with a
  write-concern error (100, ``UnsatisfiableWriteConcern``; 79) after the write, on writes and
  on commit, without retry labels; ``w: 0`` is unacknowledged;
* strict mode (default): an operation without ``session=`` from the thread/task that has a
  transaction open raises ``StrictModeError``;
* two sessions in one thread never deadlock: reads outside the transaction see committed data,
  writes to a document the transaction wrote fail with ``WriteConflict`` (code 112,
  ``TransientTransactionError``);
* collections: ``create`` (with ``changeStreamPreAndPostImages``), ``collMod``,
  ``renameCollection`` (``rename``), ``dropDatabase``; a ``create`` or ``createIndexes`` in a
  transaction (on a collection it created) becomes visible at commit and vanishes on abort;
  commands a transaction refuses answer 263;
* ``db.command(...)`` (sync and async) for those, the CRUD commands (find, insert, update,
  delete, findAndModify, aggregate, count, distinct, getMore, killCursors), indexes and
  sessions, with the server's reply shapes, in and out of transactions (the dispatcher
  ``_commands``, which the wire endpoint shares);
* ``MongoClient.bulk_write`` (MongoDB 8's ``bulkWrite``) inside and outside transactions, in
  process (the wire endpoint answers as 7.0, which has no ``bulkWrite`` command);
* change streams (``watch`` on a collection, database or client) with MongoDB's event shapes,
  events only after commit, in commit order, one cluster time per commit; resume tokens,
  ``start_at_operation_time``, an optional oplog cap; pre- and post-images
  (``fullDocumentBeforeChange``, ``fullDocument: "whenAvailable" | "required"``);
  ``showExpandedEvents`` (create, createIndexes, dropIndexes, modify, rename);
  ``updateDescription.truncatedArrays`` and ``disambiguatedPaths``; drop, rename and
  dropDatabase invalidate; a pipeline that modifies ``_id`` fails with 280;
* MongoDB's ``failCommand`` fail point (``client.fail_command(...)`` or
  ``client.admin.command({"configureFailPoint": "failCommand", ...})``) and per-command counters
  (``server.command_counts``, ``server.write_conflicts``);
* server checks: 16 MiB documents, int64 overflow (``$inc`` included), unique and partial
  unique indexes, ``$expr`` refused in an upsert's filter (224), a failed statement aborting
  its transaction (later statements and the commit get ``NoSuchTransaction``, 251), index
  option conflicts (85), BSON round trip of stored documents, ``$inc`` keeping a 64-bit
  integer 64-bit, booleans never equal to numbers (``_id`` keys, queries, unique indexes,
  ``distinct``, ``$group``; mongomock's Python ``==`` would merge ``true`` and ``1``);
* indexed lookups: equality on ``_id`` and on fields that lead an index (any top-level field
  under a wildcard index) reads a hash bucket instead of testing every document; other
  queries scan, as a server would without a suitable index (see ``_index``).
* the embedded store: ``MemoryClient(path=DIR)`` / ``AsyncMemoryClient(path=DIR)`` /
  ``MemoryServer(path=DIR)`` keep documents, indexes, collections' options and UUIDs and the
  change-stream history in ``DIR`` (a journal of commits with group commit, a self-compacting
  snapshot, recovery; one process at a time, under an OS lock: ``StoreLocked``); a commit is
  on disk before it returns, and change streams see only what is on disk (MongoDB's majority
  read point). The on-disk format: ``_store``.

Not emulated: read preferences outside transactions and read concerns (the one member answers
every read with the data as described above), causal consistency and snapshot sessions'
``atClusterTime``, snapshot reads of a collection dropped or renamed after the snapshot (the
transaction sees it gone), collection options other than ``changeStreamPreAndPostImages``
(refused by name), ``array_filters`` and other operators mongomock lacks, ``$type`` by BSON
type (mongomock tells ``int`` from ``long`` by magnitude and knows no numeric type codes),
``$addToSet``/``$pull`` telling ``true`` from ``1``, collations, ``$redact`` in change streams,
``updateLookup`` returning a document newer than the event (it returns the document as the
event's commit left it), change-stream events of the server's own (``shardCollection``,
``reshardCollection``, ...), cursors with server-side batching (results are materialized),
``maxTimeMS``, authentication, and the natural order of documents a rolled-back transaction
deleted (they come back last).

The wire endpoint (``MemoryServer.listen()``, ``mongoledger serve-db``; see ``_wire`` and the
command dispatcher ``_commands``, which ``db.command(...)`` shares) serves this engine to real
drivers (PyMongo, Motor, mongosh) as a one-member replica set of MongoDB 7.0. It does not
implement authentication, TLS, compression or exhaust cursors, and it cannot check sessions
strictly: an operation that forgot ``session=`` inside a transaction reaches it as an ordinary
command, which runs outside the transaction (as on MongoDB) instead of raising
``StrictModeError``. A transaction left open is aborted when its lifetime
(``transactionLifetimeLimitSeconds``, 60 s) runs out.
"""

from ._async.client import (
    AsyncChangeStream,
    AsyncClientSession,
    AsyncCollection,
    AsyncDatabase,
    AsyncMemoryClient,
)
from ._engine import StrictModeError
from ._server import MemoryServer
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
