"""``mongoledger export`` / ``import``: a database as files MongoDB's own tools read.

The layout is ``mongodump``'s: ``DIR/<database>/<collection>.bson`` (the documents, one BSON
document after another) and ``<collection>.metadata.json`` (the indexes, in canonical
extended JSON), so ``mongorestore --uri URI DIR`` restores an export, indexes included. With
``--format json`` the documents go to ``<collection>.json`` instead, one canonical extended
JSON document per line, which ``mongoimport`` reads (types such as ``NumberLong`` and dates
kept exactly). ``import`` reads either layout (and ``mongodump``/``mongoexport`` output) into
the database the command is connected to: this is how a store grows into a replica set, and
how a server's data comes back into a store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS

from mongoledger.cli._values import UsageError
from mongoledger.errors import LedgerError

__all__ = ["ImportRefused", "export_database", "import_database"]

_CODEC = CodecOptions(document_class=dict, tz_aware=False)
_BATCH = 1000
_FORMATS = {"bson": ".bson", "json": ".json"}


class ImportRefused(LedgerError):
    """The target collections already hold documents (exit status 1; nothing written)."""


def _dumps(document: Any) -> str:
    return json_util.dumps(document, json_options=CANONICAL_JSON_OPTIONS)


def export_database(
    db: Any, directory: Path, *, fmt: str = "bson", only: Sequence[str] = ()
) -> dict[str, int]:
    """Write ``db``'s collections under ``directory/<db name>``; returns documents per
    collection."""
    target = directory / db.name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} already exists and is not empty: export into a new directory")
    names = sorted(n for n in db.list_collection_names() if not n.startswith("system."))
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise UsageError(f"no collection {', '.join(map(repr, unknown))} in database {db.name!r}")
    if only:
        names = [n for n in names if n in only]
    target.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in names:
        coll = db[name]
        metadata = {
            "options": {},
            "indexes": [dict(index) for index in coll.list_indexes()],
            "collectionName": name,
            "type": "collection",
        }
        (target / f"{name}.metadata.json").write_text(_dumps(metadata) + "\n", encoding="utf-8")
        count = 0
        path = target / f"{name}{_FORMATS[fmt]}"
        if fmt == "bson":
            with open(path, "wb") as out:
                for doc in coll.find({}):
                    out.write(bson.encode(doc, codec_options=_CODEC))
                    count += 1
        else:
            with open(path, "w", encoding="utf-8") as text:
                for doc in coll.find({}):
                    text.write(_dumps(doc) + "\n")
                    count += 1
        counts[name] = count
    return counts


def _source(directory: Path) -> Path:
    """The folder holding the collections' files: ``directory`` itself, or its only
    database folder (an export or a mongodump root)."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory (give the folder export wrote)")
    if _collection_files(directory):
        return directory
    folders = [p for p in sorted(directory.iterdir()) if p.is_dir() and _collection_files(p)]
    if len(folders) == 1:
        return folders[0]
    if not folders:
        raise UsageError(f"{directory} holds no exported collection (.bson or .json files)")
    names = ", ".join(p.name for p in folders)
    raise UsageError(f"{directory} holds several databases ({names}): give one of their folders")


def _collection_files(folder: Path) -> dict[str, Path]:
    """Collection name -> its data file (.bson preferred over .json) in ``folder``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.endswith(".metadata.json") or not path.is_file():
            continue
        for ext in (".bson", ".json"):
            if name.endswith(ext):
                stem = name[: -len(ext)]
                if ext == ".bson" or stem not in found:
                    found[stem] = path
    for meta in folder.glob("*.metadata.json"):
        found.setdefault(meta.name[: -len(".metadata.json")], meta)  # indexes, no documents
    return found


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    if path.name.endswith(".metadata.json"):
        return
    if path.suffix == ".bson":
        with open(path, "rb") as fh:
            yield from bson.decode_file_iter(fh, codec_options=_CODEC)
        return
    with open(path, encoding="utf-8") as fh:
        first = fh.read(1)
        while first.isspace():
            first = fh.read(1)
        fh.seek(0)
        if first == "[":  # mongoexport --jsonArray
            yield from json_util.loads(fh.read(), json_options=CANONICAL_JSON_OPTIONS)
            return
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS)
                except (ValueError, json.JSONDecodeError) as exc:
                    raise UsageError(f"{path}, line {number}: not extended JSON ({exc})") from None


def _indexes(folder: Path, name: str) -> list[dict[str, Any]]:
    meta = folder / f"{name}.metadata.json"
    if not meta.exists():
        return []
    data = json_util.loads(meta.read_text(encoding="utf-8"), json_options=CANONICAL_JSON_OPTIONS)
    return [ix for ix in data.get("indexes", []) if ix.get("name") != "_id_"]


def import_database(
    db: Any, directory: Path, *, drop: bool = False, only: Sequence[str] = ()
) -> dict[str, int]:
    """Insert an export's collections into ``db`` (indexes first); returns documents per
    collection. Refuses collections that already hold documents unless ``drop``."""
    folder = _source(directory)
    files = _collection_files(folder)
    unknown = sorted(set(only) - set(files))
    if unknown:
        raise UsageError(f"{folder} holds no collection {', '.join(map(repr, unknown))}")
    names = [n for n in sorted(files) if not only or n in only]
    if not drop:
        busy = [n for n in names if db[n].find_one({}, {"_id": 1}) is not None]
        if busy:
            raise ImportRefused(
                f"database {db.name!r} already has documents in {', '.join(busy)}: "
                "import into an empty database, or pass --drop to replace those collections"
            )
    counts: dict[str, int] = {}
    for name in names:
        coll = db[name]
        if drop:
            coll.drop()
        for index in _indexes(folder, name):
            options = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
            coll.create_index(list(index["key"].items()), **options)
        count = 0
        batch: list[dict[str, Any]] = []
        for doc in _documents(files[name]):
            batch.append(doc)
            if len(batch) == _BATCH:
                coll.insert_many(batch)
                count += len(batch)
                batch = []
        if batch:
            coll.insert_many(batch)
            count += len(batch)
        counts[name] = count
    return counts
