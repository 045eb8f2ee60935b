"""Read preferences, read and write concerns: what a client carries and what the server says.

``Options`` is the part of PyMongo's client, database and collection objects that travels
down (``with_options``, ``get_database(..., write_concern=...)``); ``write_concern_error``
is what a one-member replica set answers a write concern with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pymongo import common
from pymongo.errors import ConfigurationError, WriteConcernError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import (
    ReadPreference,
    _ServerMode,
    make_read_preference,
    read_pref_mode_from_name,
)
from pymongo.write_concern import WriteConcern

from ._bson import Document

__all__ = ["Options", "client_options", "write_concern_error"]


@dataclass(frozen=True)
class Options:
    """A client's, database's or collection's read preference, read and write concerns."""

    read_preference: _ServerMode = field(default_factory=lambda: ReadPreference.PRIMARY)
    read_concern: ReadConcern = field(default_factory=ReadConcern)
    write_concern: WriteConcern = field(default_factory=WriteConcern)
    # The server's default write concern: nothing to check around a write.
    plain_writes: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain_writes", self.write_concern.is_server_default)

    def derive(
        self,
        read_preference: Any = None,
        write_concern: Any = None,
        read_concern: Any = None,
    ) -> Options:
        """These options with the given ones replacing theirs (PyMongo's ``with_options``)."""
        changes: dict[str, Any] = {}
        if read_preference is not None:
            if not isinstance(read_preference, _ServerMode):
                raise TypeError(
                    f"{read_preference!r} is not valid for read_preference. See "
                    "pymongo.read_preferences for valid options."
                )
            changes["read_preference"] = read_preference
        if write_concern is not None:
            if not isinstance(write_concern, WriteConcern):
                raise TypeError(
                    f"write_concern must be an instance of WriteConcern, not {write_concern!r}"
                )
            changes["write_concern"] = write_concern
        if read_concern is not None:
            if not isinstance(read_concern, ReadConcern):
                raise TypeError(
                    f"read_concern must be an instance of ReadConcern, not {read_concern!r}"
                )
            changes["read_concern"] = read_concern
        return replace(self, **changes) if changes else self


def client_options(kwargs: Mapping[str, Any]) -> Options:
    """The options of ``MongoClient(**kwargs)`` (URI option names, validated by PyMongo):
    ``w``, ``wTimeoutMS``, ``journal``, ``readPreference``, ``readConcernLevel``, ...
    ``read_preference=``, ``write_concern=`` and ``read_concern=`` objects are accepted too."""
    wc: dict[str, Any] = {}
    mode = None
    tags = None
    max_staleness = -1
    level = None
    options = Options()
    for name, value in kwargs.items():
        key, validated = common.validate(name, value)
        lowered = key.lower()
        if lowered == "w":
            wc["w"] = validated
        elif lowered == "wtimeoutms":
            wc["wtimeout"] = validated
        elif lowered in ("journal", "j"):
            wc["j"] = validated
        elif lowered == "fsync":
            wc["fsync"] = validated
        elif lowered == "readpreference":
            mode = validated
        elif lowered == "readpreferencetags":
            tags = validated
        elif lowered == "maxstalenessseconds":
            max_staleness = validated
        elif lowered == "readconcernlevel":
            level = validated
        else:
            raise ConfigurationError(f"memory engine: unsupported client option {name!r}")
    if wc:
        options = options.derive(write_concern=WriteConcern(**wc))
    if mode is not None:
        preference = make_read_preference(read_pref_mode_from_name(mode), tags, max_staleness)
        options = options.derive(read_preference=preference)
    if level is not None:
        options = options.derive(read_concern=ReadConcern(level))
    return options


def write_concern_error(wc: WriteConcern | None) -> Document | None:
    """The ``writeConcernError`` a one-member replica set answers ``wc`` with, or None when
    it can satisfy it (``w`` of 0 or 1, ``"majority"``, journaled or not)."""
    if wc is None or wc.is_server_default:
        return None
    return unsatisfied(wc.document)


def unsatisfied(concern: Mapping[str, Any]) -> Document | None:
    """The ``writeConcernError`` for a write concern document whose ``w`` is well formed
    (a non-negative number or a string): a number above 1 is more members than the set has
    (100), a string other than ``"majority"`` names no tag set (79). The one rule both the
    clients and the command dispatcher answer with."""
    w = concern.get("w")
    if w is None or w in (0, 1, "majority"):
        return None
    info = {"writeConcern": {"wtimeout": 0, **concern, "provenance": "clientSupplied"}}
    if type(w) is int and w > 1:
        return {
            "code": 100,
            "codeName": "UnsatisfiableWriteConcern",
            "errmsg": "Not enough data-bearing nodes",
            "errInfo": info,
        }
    if isinstance(w, str):
        return {
            "code": 79,
            "codeName": "UnknownReplWriteConcern",
            "errmsg": f"No write concern mode named '{w}' found in replica set configuration",
            "errInfo": info,
        }
    return None


def raise_write_concern_error(error: Document) -> None:
    """Raise ``error`` as PyMongo raises a command's ``writeConcernError``."""
    raise WriteConcernError(error["errmsg"], error["code"], dict(error))
