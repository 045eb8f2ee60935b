"""The I/O-free heart of the ledger, shared by ``AsyncLedger`` and its generated ``Ledger``.

Pure functions and small types, tested without a database; the I/O lives in
``mongoledger._async`` (the source) and ``mongoledger._sync`` (generated). One module per
concept, from the ground up:

* ``schema``: the fields the ledger owns on its documents, and MongoDB's limits;
* ``dates``: date arguments, returned datetimes, the balance_at shortcut, periods; ``clock``:
  "now", read in one place;
* ``amounts``: amounts, floors (``NO_FLOOR``), the server's sums;
* ``config``: ``LedgerConfig``, the options validated once, and the database check;
* ``data``: extra data on transactions and holds;
* ``accounts``: account references, attribute-set digests, account documents;
* ``transactions``: the legs of an operation and their documents, reversals;
* ``guards``: the guarded update of one leg, and why one matched nothing;
* ``currencies``, ``idempotency``: what their names say;
* ``holds``: two-phase transfers; ``reads``: pages, filters, pipelines of the reads;
* ``indexes``: index specs and the query shapes they serve;
* ``audit``: the checks of ``verify``; ``events``: the change stream's filter and grouping.
"""
