"""The Node tier's tools (``tools/node``: mongosh, medici), installed on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "node"
MONGOSH = TOOLS / "node_modules" / ".bin" / "mongosh"

NODE_TIER = pytest.mark.skipif(
    os.environ.get("MONGOLEDGER_NODE") != "1",
    reason="the Node tier (mongosh and medici against serve-db) runs with MONGOLEDGER_NODE=1 "
    "(CI sets it)",
)


def ensure_node_tools() -> Path:
    """``tools/node`` installed (``scripts/node-tools``); the test skips only when npm cannot
    reach its registry, and fails on any other installation error."""
    if MONGOSH.exists() and (TOOLS / "node_modules" / "medici").is_dir():
        return TOOLS
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "node-tools")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode == 0:
        return TOOLS
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the Node tools cannot be")
    ping = subprocess.run([npm, "ping"], capture_output=True, text=True, timeout=120, check=False)
    if ping.returncode != 0:
        pytest.skip(f"npm cannot reach its registry: {ping.stderr.strip()[-300:]}")
    pytest.fail(f"scripts/node-tools failed: {done.stderr[-2000:]}")
