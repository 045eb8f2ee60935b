"""Extra data: the schemaless fields a caller stores on transactions and holds. Checked at
every depth (no ``$``/dotted/non-string keys, no field the ledger owns, only values BSON can
encode), and placed at top level or under ``data_field``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import bson
from bson.errors import InvalidDocument

from mongoledger._core.config import LedgerConfig
from mongoledger._core.dates import deep_utc
from mongoledger._core.schema import CODEC
from mongoledger.errors import InvalidData

__all__ = ["extra_data", "place_data", "validate_data"]


def validate_data(
    cfg: LedgerConfig,
    data: object,
    *,
    what: str = "data",
    owned: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Return a deep copy of the extra data, or raise ``InvalidData`` naming the bad key/value.

    ``owned``: the fields the data may not use at top level (default: a transaction's).
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidData(f"{what} {data!r} is a {type(data).__name__}, not a mapping")
    out: dict[str, Any] = _check_keys(data, path="")
    if not out:
        return out
    if cfg.data_field is None:
        if owned is None:
            owned = cfg.owned_transaction_fields
        for key in out:
            if key in owned:
                raise InvalidData(
                    f"{what} key {key!r} is a field the ledger owns; rename it or set data_field"
                )
    try:
        bson.encode(out, codec_options=CODEC)
    except (InvalidDocument, TypeError, OverflowError) as exc:
        path, value = _unencodable(out, "")
        raise InvalidData(
            f"{what} value {value!r} at {path or 'top level'} cannot be stored in MongoDB: {exc}"
        ) from None
    return out


def _unencodable(value: Any, path: str) -> tuple[str, Any]:
    """The path and value of the first leaf BSON cannot encode."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = (
            (f"{path}.{k}" if path else k, v) for k, v in value.items()
        )
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return path, value
    for where, item in items:
        try:
            bson.encode({"v": item}, codec_options=CODEC)
        except (InvalidDocument, TypeError, OverflowError):
            return _unencodable(item, where)
    return path, value


def _check_keys(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise InvalidData(f"data key {key!r} at {path or 'top level'} is not a string")
            if key.startswith("$") or "." in key or "\x00" in key:
                raise InvalidData(
                    f"data key {key!r} at {path or 'top level'} is not allowed "
                    "('$' prefix, '.' or NUL would be read as an operator or a path)"
                )
            out[key] = _check_keys(item, where)
        return out
    if isinstance(value, list | tuple):
        return [_check_keys(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def place_data(cfg: LedgerConfig, doc: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Put validated extra data on a document: under ``data_field`` (only when there is some),
    or as top-level fields."""
    if cfg.data_field is not None:
        if data:
            doc[cfg.data_field] = dict(data)
    else:
        doc.update(data)


def extra_data(cfg: LedgerConfig, doc: Mapping[str, Any], owned: frozenset[str]) -> dict[str, Any]:
    """The extra data of a stored document, as a dict whichever way ``data_field`` stores it
    (at top level: every field not in ``owned``), datetimes in it timezone-aware UTC."""
    if cfg.data_field is not None:
        data = dict(doc.get(cfg.data_field) or {})
    else:
        data = {k: v for k, v in doc.items() if k not in owned}
    return dict(deep_utc(data))
