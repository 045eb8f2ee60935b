"""Change-stream consumers on the ledger: ``watch`` (an open stream of ``LedgerEvent``) and
``listen`` (a checkpointed, at-least-once consumer)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mongoledger._async._base import LedgerBase
from mongoledger._async._io import check_callback
from mongoledger._async.stream import (
    AsyncLedgerStream,
    handle,
    load_checkpoint,
    open_stream,
    save_checkpoint,
)
from mongoledger._core.events import validate_kinds

__all__ = ["Consumers"]

_IS_SYNC = False
log = logging.getLogger("mongoledger.listen")


class Consumers(LedgerBase):
    """``watch`` and ``listen``."""

    async def watch(
        self,
        *,
        accounts: Sequence[Any] | None = None,
        kinds: Sequence[str] | None = None,
        resume_after: Mapping[str, Any] | None = None,
        start_after: Mapping[str, Any] | None = None,
        start_at_operation_time: Any = None,
        max_await_time_ms: int = 500,
    ) -> AsyncLedgerStream:
        """Open a change stream of committed operations (one ``LedgerEvent`` each): the
        money-moving operations, and each hold, void and expiry of a hold.

        The stream is open when this returns: every operation committed after it is seen.
        ``accounts`` (references) and ``kinds`` filter on the server. Resume with a token
        from ``event.resume_token`` or ``stream.resume_token``.
        """
        account_ids = None
        if accounts is not None:
            if isinstance(accounts, Mapping | str) or not isinstance(accounts, Sequence):
                accounts = [accounts]
            account_ids = [await self._account_id(a) for a in accounts]
        return await open_stream(
            self._cfg,
            self._db,
            self._transactions,
            account_ids=account_ids,
            kinds=validate_kinds(kinds),
            resume_after=resume_after,
            start_after=start_after,
            start_at_operation_time=start_at_operation_time,
            max_await_time_ms=max_await_time_ms,
        )

    async def listen(
        self,
        handler: Callable[[Any], Any],
        *,
        checkpoint: str,
        accounts: Sequence[Any] | None = None,
        kinds: Sequence[str] | None = None,
        start_at_operation_time: Any = None,
        retries: int = 3,
        backoff: float = 0.5,
        stop: Any = None,
        checkpoint_interval: float = 5.0,
        max_await_time_ms: int = 500,
        ready: Any = None,
    ) -> None:
        """Run ``handler(event)`` for every committed operation, resuming from a checkpoint.

        Delivery is at least once: the resume token is stored (in ``checkpoints_collection``,
        one document per ``checkpoint`` name and ledger) only after the handler returned, so a
        restart re-delivers at most the event that was in flight. Without a stored checkpoint
        it starts now, or at ``start_at_operation_time``, and stores that start position
        before the first event. During quiet periods the stored token is
        refreshed every ``checkpoint_interval`` seconds so it does not age out of the oplog.
        A failing handler is retried ``retries`` times with exponential ``backoff``, then its
        error stops the listener (the event is not skipped). It runs until ``stop.is_set()``
        (a ``threading.Event`` or ``asyncio.Event``), cancellation, or KeyboardInterrupt.
        ``ready.set()`` is called once the change stream is open.
        """
        check_callback(handler, "handler")
        cfg = self._cfg
        store = self._db[cfg.checkpoints_collection]
        saved = await load_checkpoint(store, cfg, checkpoint, self._transactions)
        token = saved.resume_token if saved else None
        start_time = saved.start_at_operation_time if saved else start_at_operation_time
        stream = await self.watch(
            accounts=accounts,
            kinds=kinds,
            resume_after=token,
            start_at_operation_time=None if token else start_time,
            max_await_time_ms=max_await_time_ms,
        )
        last_saved = time.monotonic()
        async with stream:
            if token is None:
                # Store where the stream starts before the first event, so that neither a
                # handler failing on it nor a stop before the first checkpoint loses anything.
                token = stream.resume_token
                await save_checkpoint(
                    store, cfg, checkpoint, token, None, start_at_operation_time=start_time
                )
                if token is None and start_time is None:  # pragma: no cover - servers < 4.0.7
                    log.warning(
                        "the change stream gave no start position: checkpoint %r is stored "
                        "after the first event only",
                        checkpoint,
                    )
            if ready is not None:
                ready.set()
            while stop is None or not stop.is_set():
                event = await stream.try_next()
                if event is None:
                    # Quiet: keep the stored token fresh (post-batch) so it stays in the oplog.
                    if time.monotonic() - last_saved >= checkpoint_interval:
                        fresh = stream.resume_token
                        if fresh is not None and fresh != token:
                            await save_checkpoint(store, cfg, checkpoint, fresh, None)
                            token = fresh
                        last_saved = time.monotonic()
                    continue
                await handle(handler, event, retries=retries, backoff=backoff)
                token = event.resume_token
                await save_checkpoint(store, cfg, checkpoint, token, event.operation_id)
                last_saved = time.monotonic()
