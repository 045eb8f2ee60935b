"""Where a command (``mongoledger``, the notifier) keeps its data: the target it connects to,
chosen from its options and environment, and how a target is named in messages (connecting
to it is :mod:`._connection`'s).

The choice (:func:`resolve`) is the same for every command, so ``serve`` and ``serve-db``
choose as the others do:

1. ``--memory``: a fresh in-memory engine, empty at every start;
2. ``--uri URI`` or ``--store DIR`` on the command line (not both);
3. ``MONGOLEDGER_URI``, then ``MONGOLEDGER_STORE`` in the environment;
4. otherwise the embedded store in the per-user default directory (:func:`default_store`):
   ``$XDG_DATA_HOME/mongoledger/store`` (``~/.local/share/mongoledger/store``) on Linux,
   ``~/Library/Application Support/mongoledger/store`` on macOS,
   ``%LOCALAPPDATA%\\mongoledger\\store`` on Windows (a long-running consumer such as the
   notifier asks for a server there instead: ``mongodb://localhost:27017``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mongoledger._text import UsageError

__all__ = [
    "DEFAULT_URI",
    "Target",
    "add_connection_defaults",
    "default_store",
    "hosts_of",
    "redact",
    "resolve",
]

DEFAULT_URI = "mongodb://localhost:27017"
_CREDENTIALS = re.compile(r"^(mongodb(?:\+srv)?://)([^@/]*)@")


@dataclass(frozen=True)
class Target:
    """What a command connects to: ``kind`` is "uri", "store" or "memory"."""

    kind: str
    uri: str | None = None
    store: Path | None = None
    default: bool = False  # the store is the per-user default one

    def describe(self) -> str:
        if self.kind == "uri":
            return f"MongoDB at {hosts_of(self.uri or DEFAULT_URI)}"
        if self.kind == "store":
            return f"the store {self.store}"
        return "an in-memory engine"


def default_store(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The per-user default store directory (see the module docstring)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "win32":
        base = Path(env["LOCALAPPDATA"]) if env.get("LOCALAPPDATA") else home / "AppData/Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_DATA_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / "mongoledger" / "store"


def add_connection_defaults(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], store: Path | None = None
) -> None:
    """Record the environment's say on the parser, so :func:`resolve` can rank it below the
    command line (``store``: :func:`default_store`, if already known)."""
    parser.set_defaults(
        env_uri=environ.get("MONGOLEDGER_URI") or None,
        env_store=environ.get("MONGOLEDGER_STORE") or None,
        default_store=str(default_store(environ) if store is None else store),
    )


def resolve(args: argparse.Namespace, *, fallback: str = "store", serving: bool = False) -> Target:
    """The target the parsed arguments (and the environment they carry) choose; without any
    choice, the default store (``fallback="uri"``: the local server). ``serving`` (serve-db,
    which serves a store or an engine) passes over ``MONGOLEDGER_URI``: that names where the
    other commands connect, possibly this very endpoint."""
    uri = getattr(args, "uri", None)
    store = getattr(args, "store", None)
    if getattr(args, "memory", False):
        if uri or store:
            given = "--uri" if uri else "--store"
            raise UsageError(f"--memory and {given} exclude each other: --memory keeps nothing")
        return Target("memory")
    if uri and store:
        raise UsageError(
            "--uri and --store exclude each other: --uri names a MongoDB server, "
            "--store a directory the embedded store keeps its data in"
        )
    if uri:
        return Target("uri", uri=uri)
    if store:
        return Target("store", store=_directory(store))
    env_uri = None if serving else getattr(args, "env_uri", None)
    if env_uri:
        return Target("uri", uri=env_uri)
    env_store = getattr(args, "env_store", None)
    if env_store:
        return Target("store", store=_directory(env_store))
    if fallback == "uri":
        return Target("uri", uri=DEFAULT_URI)
    chosen = getattr(args, "default_store", None) or str(default_store())
    return Target("store", store=_directory(chosen), default=True)


def _directory(text: str) -> Path:
    return Path(text).expanduser().absolute()


def redact(uri: str) -> str:
    """The URI with its password hidden, fit for an error message."""
    match = _CREDENTIALS.match(uri)
    if match is None:
        return uri
    user = match.group(2).split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{uri[match.end() :]}"


def hosts_of(uri: str) -> str:
    """The host list of a MongoDB URI (``db0:27017,db1``), for messages."""
    rest = _CREDENTIALS.sub(r"\1", uri).split("://", 1)[-1]
    return re.split(r"[/?]", rest, maxsplit=1)[0] or "localhost"
