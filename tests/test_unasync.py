"""The generator of the sync twins (scripts/unasync.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", ROOT / "scripts" / "unasync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_names_and_awaits_are_made_sync() -> None:
    source = 'async def f(x: AsyncLedger) -> None:\n    await x.increase("a", 1)\n'
    assert load().unasync_text(source) == 'def f(x: Ledger) -> None:\n    x.increase("a", 1)\n'


def test_a_kept_line_names_the_async_class() -> None:
    """The sync Ledger's advice to use AsyncLedger must not become advice to use Ledger."""
    source = (
        'ASYNC = "AsyncLedger"  # unasync: keep\n'
        "async def hook(ctx) -> None:  # unasync: keep\n"
        'OTHER = "AsyncLedger"\n'
    )
    assert load().unasync_text(source).splitlines() == [
        'ASYNC = "AsyncLedger"  # unasync: keep',
        "async def hook(ctx) -> None:  # unasync: keep",
        'OTHER = "Ledger"',
    ]


def test_the_sync_refusal_names_the_async_class() -> None:
    from mongoledger._sync import _io

    assert _io.ASYNC_LEDGER == "AsyncLedger"
