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


def test_serves_the_store_the_other_commands_use_and_refuses_contradictions(
    tmp_path: Any,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGOLEDGER_", "XDG_"))}
    env |= {"HOME": str(tmp_path), "MONGOLEDGER_URI": "mongodb://elsewhere:1"}
    proc = subprocess.Popen(  # no flags: the default store (MONGOLEDGER_URI is not served)
        [sys.executable, "-m", "mongoledger", "serve-db", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        assert uri.startswith("mongodb://127.0.0.1:")
        client: Any = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        try:
            client.shop.accounts.insert_one({"_id": 1})
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        store = tmp_path / ".local" / "share" / "mongoledger" / "store"
        assert f"serving the store {store}" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    from mongoledger.memory import MemoryClient

    with MemoryClient(path=store) as served:  # the lock was released at the signal
        assert served.shop.accounts.find_one() == {"_id": 1}
    both = run("--memory", "--store", str(tmp_path), "--port", "0")
    assert both.returncode == 2
    assert "exclude each other" in both.stderr
    server = run("--uri", "mongodb://db0:27017", "--port", "0")
    assert server.returncode == 2
    assert "serve-db serves the embedded store" in server.stderr
