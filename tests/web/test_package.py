"""mongoledger.web's public names, its permission rules, and that the extra stays optional."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from bson import Int64, ObjectId

import mongoledger.web
from mongoledger.cli._values import account_id_text, parse_account_id
from mongoledger.web import ADJUST, VIEW_ALL, VIEW_OWN, Viewer
from mongoledger.web._permissions import Access, Forbidden, NotAuthenticated, authorize, same_id

ROOT = Path(__file__).resolve().parents[2]


def test_public_names_are_spec_and_exported_once() -> None:
    public = {
        name
        for name, value in vars(mongoledger.web).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert len(set(mongoledger.web.__all__)) == len(mongoledger.web.__all__)  # ruff sorts it
    assert set(mongoledger.web.__all__) == public
    assert {"create_app", "Viewer", "VIEW_OWN", "VIEW_ALL", "ADJUST"} <= public
    assert list(inspect.signature(mongoledger.web.create_app).parameters)[:2] == [
        "ledger",
        "identify",
    ]


def test_authorize() -> None:
    own = ObjectId()
    alice = Access(Viewer("alice", {"user_id": 1}, {VIEW_OWN}), own)
    with pytest.raises(NotAuthenticated):
        authorize(Access(None), VIEW_OWN)
    assert authorize(alice, VIEW_OWN).name == "alice"
    assert authorize(alice, VIEW_OWN, account_id=own).name == "alice"
    for denied in (
        lambda: authorize(alice, VIEW_OWN, account_id=ObjectId()),
        lambda: authorize(alice, VIEW_ALL),
        lambda: authorize(alice, ADJUST),
        lambda: authorize(Access(Viewer("x", None, {VIEW_OWN}), None), VIEW_OWN, account_id=None),
        lambda: authorize(Access(Viewer("t", own, {ADJUST}), own), VIEW_OWN, account_id=own),
    ):
        with pytest.raises(Forbidden):
            denied()
    auditor = Access(Viewer("a", None, {VIEW_ALL}))
    assert authorize(auditor, VIEW_OWN, account_id=ObjectId()).name == "a"
    assert authorize(auditor, VIEW_OWN).name == "a"
    with pytest.raises(ValueError, match="unknown permission"):
        authorize(auditor, "administer everything")


def test_same_id_compares_as_mongodb_does() -> None:
    oid = ObjectId()
    assert same_id(7, Int64(7))
    assert same_id(7, 7.0)
    assert same_id(oid, ObjectId(str(oid)))
    assert not same_id(True, 1)
    assert not same_id("7", 7)
    assert not same_id(oid, str(oid))


@pytest.mark.parametrize(
    "value", [ObjectId(), 7, -3, "wallet-7", "7", "007", "true", "str:x", True, 1.5, "oid:abc"]
)
def test_account_ids_round_trip_through_url_text(value: object) -> None:
    text = account_id_text(value)
    back = parse_account_id(text)
    assert type(back) is type(value)
    assert back == value


def test_the_library_and_cli_work_without_the_web_extra() -> None:
    script = (
        "import sys\n"
        "for name in ('fastapi', 'starlette', 'jinja2', 'uvicorn', 'argon2'):\n"
        "    sys.modules[name] = None\n"
        "import mongoledger, mongoledger.cli\n"
        "from mongoledger.memory import MemoryClient\n"
        "db = MemoryClient()['x']\n"
        "assert mongoledger.cli.main(['increase', '--account', 'a=1', '5'], database=db) == 0\n"
        "sys.exit(mongoledger.cli.main(['users', 'list'], database=db))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'mongoledger[web]'" in proc.stderr
