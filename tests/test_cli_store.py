"""The CLI without a server: where the data goes (store, URI, memory), the store across
processes, export/import, and the README's command-line section run as written."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64, json_util

from mongoledger import Ledger
from mongoledger.cli import build_parser, main
from mongoledger.cli._connection import Target, default_store, resolve
from mongoledger.memory import MemoryClient

ROOT = Path(__file__).resolve().parents[1]
ALICE = ["--account", "user_id=1", "--account", "type=wallet"]
BOB = ["--account", "user_id=2", "--account", "type=wallet"]


def target(argv: list[str], environ: dict[str, str]) -> Target:
    return resolve(build_parser({"HOME": "/home/u", **environ}).parse_args([*argv, "init"]))


# --------------------------------------------------------------------------- the choice


def test_without_a_uri_commands_use_the_store() -> None:
    default = Path("/home/u/.local/share/mongoledger/store")
    assert target([], {}) == Target("store", store=default, default=True)
    assert target([], {"MONGOLEDGER_STORE": "/data/s"}) == Target("store", store=Path("/data/s"))
    assert target(["--store", "/x"], {}) == Target("store", store=Path("/x"))
    assert target([], {"MONGOLEDGER_URI": "mongodb://db"}) == Target("uri", uri="mongodb://db")
    # The environment's URI wins over its store; the command line wins over both.
    both = {"MONGOLEDGER_URI": "mongodb://db", "MONGOLEDGER_STORE": "/data/s"}
    assert target([], both).kind == "uri"
    assert target(["--store", "/x"], both) == Target("store", store=Path("/x"))
    assert target(["--uri", "mongodb://other"], both).uri == "mongodb://other"
    assert target(["--memory"], both) == Target("memory")
    assert target(["--store", "rel"], {}).store == Path.cwd() / "rel"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--uri", "mongodb://db", "--store", "/x"], "--uri and --store exclude each other"),
        (["--memory", "--store", "/x"], "--memory and --store exclude each other"),
        (["--memory", "--uri", "mongodb://db"], "--memory and --uri exclude each other"),
    ],
)
def test_contradictory_targets_are_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "balance", *ALICE], environ={"HOME": str(tmp_path)}) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_serve_connects_its_async_client_where_the_other_commands_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mongomock

    import mongoledger.cli._connection as connection
    from mongoledger.cli._context import async_database

    seen: list[Target] = []

    def fake(target: Target, **_: Any) -> Any:
        seen.append(target)
        return {"ledger": "the async database"}

    monkeypatch.setattr(connection, "connect_async", fake)
    args = build_parser({"MONGOLEDGER_URI": "mongodb://db9:27017"}).parse_args(["serve"])
    # A database that is not the in-process engine's (whose server would be shared instead).
    ctx: Any = type("Ctx", (), {"ledger": Ledger(mongomock.MongoClient()["ledger"])})()
    assert async_database(args, ctx) == "the async database"
    assert seen == [Target("uri", uri="mongodb://db9:27017")]


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {"HOME": "/h"}, "/h/.local/share/mongoledger/store"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "/xdg"}, "/xdg/mongoledger/store"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "relative"}, "/h/.local/share/mongoledger/store"),
        ("darwin", {"HOME": "/h"}, "/h/Library/Application Support/mongoledger/store"),
        ("win32", {"HOME": "/h", "LOCALAPPDATA": "/l"}, "/l/mongoledger/store"),
    ],
)
def test_the_default_store_follows_the_platform(
    platform: str, environ: dict[str, str], expected: str
) -> None:
    assert default_store(environ, platform) == Path(expected)


def test_help_names_the_store_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], environ={"HOME": "/home/u"}) == 0
    text = capsys.readouterr().out
    assert "MONGOLEDGER_STORE" in text
    assert "/home/u/.local/share/mongoledger/store" in " ".join(text.split())


def test_one_parser_computes_the_default_store_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import mongoledger.cli._parser as parser
    import mongoledger.cli._target as choice

    calls: list[object] = []

    def counted(environ: Any = None, platform: str | None = None) -> Path:
        calls.append(environ)
        return default_store(environ, platform)

    monkeypatch.setattr(parser, "default_store", counted)
    monkeypatch.setattr(choice, "default_store", counted)
    args = build_parser({"HOME": "/home/u"}).parse_args(["balance", "--account", "a=1"])
    assert len(calls) == 1  # not once per subcommand
    assert resolve(args).store == Path("/home/u/.local/share/mongoledger/store")


# --------------------------------------------------------------------------- separate processes


def run(
    argv: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mongoledger", *argv],
        check=False,
        env=env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGOLEDGER_", "XDG_"))}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def test_the_store_keeps_data_between_commands_in_separate_processes(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home", MONGOLEDGER_STORE=str(tmp_path / "ledger"))
    first = run(["increase", *ALICE, "1000", "--data", "note=topup"], env)
    assert first.returncode == 0, first.stderr
    assert first.stderr == f"mongoledger: created the store {tmp_path / 'ledger'}\n"
    second = run(
        ["transfer", "--from", "user_id=1", "--from", "type=wallet", "--to-id", "b", "250"], env
    )
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""  # said once, when the store was created
    balance = run(["--json", "balance", *ALICE], env)
    assert json.loads(balance.stdout)["balance"] == 750
    assert not (tmp_path / "home").exists()  # the default store was never touched


def test_the_default_store_is_created_once_and_announced(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    store = tmp_path / ".local" / "share" / "mongoledger" / "store"
    first = run(["increase", *ALICE, "5"], env)
    assert first.returncode == 0, first.stderr
    assert f"created the store {store} (the default" in first.stderr
    assert "MONGOLEDGER_STORE" in first.stderr
    again = run(["--json", "balance", *ALICE], env)
    assert (again.returncode, again.stderr) == (0, "")
    assert json.loads(again.stdout)["balance"] == 5


WATCHER = """
import sys
from mongoledger.cli import main
sys.exit(main(["watch", "--limit", "1"]))
"""


def test_a_second_process_gets_a_one_line_error_naming_the_holder(tmp_path: Path) -> None:
    env = clean_env(tmp_path, MONGOLEDGER_STORE=str(tmp_path / "s"))
    lock = tmp_path / "s" / "lock"
    with subprocess.Popen(
        [sys.executable, "-c", WATCHER],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as watcher:
        try:
            deadline = time.monotonic() + 30
            while not (lock.exists() and lock.read_text().strip() == str(watcher.pid)):
                assert time.monotonic() < deadline, "the watcher never opened the store"
                time.sleep(0.02)
            busy = run(["balance", *ALICE], env)
            assert busy.returncode == 1
            assert busy.stderr.count("\n") == 1
            assert str(tmp_path / "s") in busy.stderr
            assert f"process {watcher.pid}" in busy.stderr
        finally:
            watcher.kill()
            watcher.wait()
    assert run(["increase", *ALICE, "5"], env).returncode == 0  # its death freed the store


# --------------------------------------------------------------------------- export / import


def populated() -> Any:
    db = MemoryClient()["shop"]
    ledger = Ledger(db)
    ledger.open_account({"user_id": 1}, min_balance=0)
    ledger.increase({"user_id": 1}, 1000, {"note": "é"}, idempotency_key="k1")
    ledger.transfer({"user_id": 1}, {"user_id": 2}, 300)
    db["extra"].create_index(
        [("a", 1), ("b", -1)], unique=True, partialFilterExpression={"a": {"$exists": True}}
    )
    db["extra"].insert_one({"_id": 1, "a": 1, "b": 2, "big": Int64(2**40), "small": Int64(3)})
    return db


def contents(db: Any) -> dict[str, Any]:
    out = {}
    for name in sorted(db.list_collection_names()):
        out[name] = (list(db[name].find({}).sort("_id", 1)), db[name].index_information())
    return out


def cli(argv: list[str], db: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, database=db, environ={}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("fmt", ["bson", "json"])
def test_export_then_import_copies_documents_and_indexes_exactly(fmt: str, tmp_path: Path) -> None:
    source = populated()
    code, out, err = cli(["export", str(tmp_path), "--format", fmt], source)
    assert code == 0, err
    assert "mongorestore" in out if fmt == "bson" else "mongoimport" in out
    folder = tmp_path / "shop"
    names = sorted(p.name for p in folder.iterdir())
    assert f"accounts.{fmt}" in names
    assert "accounts.metadata.json" in names

    target = MemoryClient()["other"]
    code, out, err = cli(["--json", "import", str(tmp_path)], target)
    assert code == 0, err
    assert json.loads(out)["collections"]["transactions"] == 3
    assert contents(target) == contents(source)
    assert type(target["extra"].find_one({})["small"]) is Int64
    assert Ledger(target).verify().ok


def test_the_files_are_what_mongorestore_and_mongoimport_read(tmp_path: Path) -> None:
    source = populated()
    assert cli(["export", str(tmp_path / "b")], source)[0] == 0
    assert cli(["export", str(tmp_path / "j"), "--format", "json"], source)[0] == 0
    raw = (tmp_path / "b" / "shop" / "extra.bson").read_bytes()
    assert bson.decode_all(raw) == [{"_id": 1, "a": 1, "b": 2, "big": 2**40, "small": 3}]
    line = (tmp_path / "j" / "shop" / "extra.json").read_text().strip()
    assert json.loads(line)["small"] == {"$numberLong": "3"}  # canonical extended JSON
    meta = json.loads((tmp_path / "b" / "shop" / "extra.metadata.json").read_text())
    assert meta["collectionName"] == "extra"
    partial = next(ix for ix in meta["indexes"] if ix["name"] == "a_1_b_-1")
    assert partial["unique"] is True
    assert partial["partialFilterExpression"] == {"a": {"$exists": True}}
    assert list(partial["key"]) == ["a", "b"]


def test_import_refuses_a_database_with_documents_and_writes_nothing(tmp_path: Path) -> None:
    source = populated()
    assert cli(["export", str(tmp_path)], source)[0] == 0
    target = MemoryClient()["shop"]
    target["accounts"].insert_one({"_id": "mine"})
    code, _, err = cli(["import", str(tmp_path)], target)
    assert code == 1
    assert "already has documents in accounts" in err
    assert "--drop" in err
    assert sorted(target.list_collection_names()) == ["accounts"]
    assert cli(["import", str(tmp_path), "--drop"], target)[0] == 0
    assert target["accounts"].find_one({"_id": "mine"}) is None
    assert contents(target) == contents(source)


def test_export_refuses_a_used_directory_and_unknown_collections(tmp_path: Path) -> None:
    source = populated()
    assert cli(["export", str(tmp_path), "--collection", "accounts"], source)[0] == 0
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == [
        "accounts.bson",
        "accounts.metadata.json",
    ]
    code, _, err = cli(["export", str(tmp_path)], source)
    assert code == 2
    assert "not empty" in err
    code, _, err = cli(["export", str(tmp_path / "new"), "--collection", "nope"], source)
    assert (code, "'nope'" in err) == (2, True)


def test_import_reads_mongoexport_json_arrays_and_lines(tmp_path: Path) -> None:
    docs = [{"_id": i, "n": Int64(i)} for i in range(3)]
    (tmp_path / "things.json").write_text(json_util.dumps(docs))  # --jsonArray
    target = MemoryClient()["d"]
    assert cli(["import", str(tmp_path)], target)[0] == 0
    assert list(target["things"].find({})) == docs
    (tmp_path / "things.json").write_text("{bad json\n")
    code, _, err = cli(["import", str(tmp_path), "--drop"], MemoryClient()["e"])
    assert code == 2
    assert "things.json, line 1" in err


# --------------------------------------------------------------------------- the README


def readme_cli_block() -> list[tuple[str, list[str]]]:
    """The README's first command-line example block: (command, the output lines shown)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The command line", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block is not None
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            steps[-1][1].append(line)
    return steps


def test_the_readme_cli_section_works_on_a_fresh_machine_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command runs as the ``mongoledger`` entry point does (``main``), in a fresh home
    and working directory; separate processes are covered above."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    environ = {"HOME": str(home)}
    steps = readme_cli_block()
    assert len(steps) >= 6
    for command, shown in steps:
        assert "--uri" not in command, command  # this block needs no server
        words = shlex.split(command.split("  #", 1)[0])
        assert words[0] == "mongoledger", command
        out, err = io.StringIO(), io.StringIO()
        code = main(words[1:], environ=environ, stdout=out, stderr=err)
        assert code == 0, f"{command}: {err.getvalue()}"
        output = (out.getvalue() + err.getvalue()).replace(str(home), "~")
        for line in shown:
            assert line.strip() in output, f"{command}: {line!r} not in {output!r}"
