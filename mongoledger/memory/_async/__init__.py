"""The memory engine's client twins: ``_async`` is the source, ``_sync`` is generated."""
