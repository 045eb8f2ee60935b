"""Motor's call shapes over the in-memory engine.

Motor cannot drive the in-process client (it wraps PyMongo's wire-protocol classes), so the
``motor-shape`` engine reproduces what differs between Motor and PyMongo's async API and what
the ledger must adapt to: ``start_session()`` is a coroutine, ``aggregate()`` and ``watch()``
return their cursor/stream without being awaited. Real Motor runs in the ``motor`` engine,
against ``MONGOLEDGER_TEST_URI`` or the engine's own wire endpoint.
"""

from __future__ import annotations

from typing import Any

from mongoledger.memory import AsyncMemoryClient


class _Proxy:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AwaitLater:
    """A cursor or stream handed out before the engine has produced it (Motor's lazy style)."""

    def __init__(self, pending: Any) -> None:
        self._pending = pending
        self._value: Any = None

    async def _get(self) -> Any:
        if self._value is None:
            self._value = await self._pending
        return self._value

    async def to_list(self, length: int | None) -> list[Any]:
        return list(await (await self._get()).to_list(length))

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        return await (await self._get()).__anext__()

    async def next(self) -> Any:
        return await (await self._get()).next()

    async def try_next(self) -> Any:
        return await (await self._get()).try_next()

    @property
    def resume_token(self) -> Any:
        return None if self._value is None else self._value.resume_token

    async def close(self) -> None:
        if self._value is not None:
            await self._value.close()
        else:
            self._pending.close()

    async def __aenter__(self) -> Any:
        await self._get()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class MotorShapeCollection(_Proxy):
    def aggregate(self, pipeline: Any, *args: Any, **kwargs: Any) -> _AwaitLater:
        return _AwaitLater(self._inner.aggregate(pipeline, *args, **kwargs))

    def watch(self, *args: Any, **kwargs: Any) -> _AwaitLater:
        return _AwaitLater(self._inner.watch(*args, **kwargs))


class MotorShapeClient(_Proxy):
    async def start_session(self, **kwargs: Any) -> Any:
        return self._inner.start_session(**kwargs)


class MotorShapeDatabase(_Proxy):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.client = MotorShapeClient(inner.client)

    def __getitem__(self, name: str) -> MotorShapeCollection:
        return MotorShapeCollection(self._inner[name])

    def get_collection(self, name: str, **kwargs: Any) -> MotorShapeCollection:
        return MotorShapeCollection(self._inner.get_collection(name, **kwargs))

    def watch(self, *args: Any, **kwargs: Any) -> _AwaitLater:
        return _AwaitLater(self._inner.watch(*args, **kwargs))


def motor_shape_database(client: AsyncMemoryClient | None = None) -> MotorShapeDatabase:
    return MotorShapeDatabase((client or AsyncMemoryClient())["test"])
