"""``mongoledger serve-db``: prints the URI, serves real drivers, stops cleanly on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from pymongo import MongoClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serve(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mongoledger", "serve-db", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_a_signal(sig: signal.Signals) -> None:
    proc = serve("--memory", "--port", "0")
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        assert uri.startswith("mongodb://127.0.0.1:")
        assert uri.endswith("/?replicaSet=memory")
        client: Any = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        try:
            client.shop.accounts.insert_one({"_id": 1, "balance": 5})
            assert client.shop.accounts.find_one() == {"_id": 1, "balance": 5}
        finally:
            client.close()
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        assert "serving an in-memory engine" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mongoledger", "serve-db", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_refuses_a_remote_address_without_opt_in() -> None:
    done = run("--memory", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "refusing to listen on '0.0.0.0'" in done.stderr
    assert "allow_remote" in done.stderr
    assert done.stdout == ""


def test_needs_memory_or_store(tmp_path: Any) -> None:
    done = run("--port", "0")
    assert done.returncode == 2
    assert "give --memory" in done.stderr
    both = run("--memory", "--store", str(tmp_path), "--port", "0")
    assert both.returncode == 2
    assert "not both" in both.stderr
