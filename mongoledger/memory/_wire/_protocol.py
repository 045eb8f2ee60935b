"""The MongoDB wire protocol's framing, I/O-free: message headers, OP_MSG, legacy OP_QUERY.

A message is a 16-byte header (length, request id, response-to id, opcode; little-endian
int32s) and a body. Servers since 6.0 speak OP_MSG for every command; drivers still open a
connection with a legacy OP_QUERY ``isMaster``/``hello``, which gets an OP_REPLY. Anything
this module cannot parse raises ``ProtocolError``: the server closes that connection only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.codec_options import CodecOptions

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

HEADER = struct.Struct("<iiii")
HEADER_SIZE = HEADER.size
MAX_MESSAGE_SIZE = 48_000_000  # the server's maxMessageSizeBytes
MAX_BSON_SIZE = 16 * 1024 * 1024
# A command document may exceed a stored document's limit by this much (the server's
# BSONObjMaxInternalSize): room for the command's own fields around a 16 MiB document.
MAX_COMMAND_SIZE = MAX_BSON_SIZE + 16 * 1024

CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
_KNOWN_FLAGS = CHECKSUM_PRESENT | MORE_TO_COME | EXHAUST_ALLOWED
_REQUIRED_FLAGS = 0xFFFF  # bits 0-15: a flag a server does not know must fail the message

# As the server stores and returns values: naive UTC datetimes, dicts, Binary UUIDs as sent.
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(document_class=dict, tz_aware=False)

_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")


class ProtocolError(Exception):
    """A message that cannot be framed or parsed: the connection is closed."""


@dataclass
class Header:
    length: int
    request_id: int
    response_to: int
    op_code: int


@dataclass
class Request:
    """One parsed request: the command document (document sequences folded in)."""

    op_code: int
    request_id: int
    body: dict[str, Any]
    more_to_come: bool = False  # OP_MSG: the client wants no reply (w:0)
    exhaust_allowed: bool = False
    legacy_db: str | None = None  # OP_QUERY: the database of "<db>.$cmd"
    sequences: dict[str, list[Any]] = field(default_factory=dict)


def parse_header(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> Header:
    """The header of a message; its length must fit between the header and ``max_size``."""
    length, request_id, response_to, op_code = HEADER.unpack(data)
    if length < HEADER_SIZE or length > max_size:
        raise ProtocolError(f"message length {length} is outside [{HEADER_SIZE}, {max_size}]")
    return Header(length, request_id, response_to, op_code)


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise ProtocolError("unterminated C string")
    try:
        return data[pos:end].decode("utf-8"), end + 1
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"C string is not UTF-8: {exc}") from None


def _document(data: bytes, pos: int, end: int) -> tuple[dict[str, Any], int]:
    if pos + 4 > end:
        raise ProtocolError("truncated BSON document")
    (size,) = _INT32.unpack_from(data, pos)
    if size < 5 or pos + size > end:
        raise ProtocolError(f"BSON document length {size} does not fit the message")
    if size > MAX_COMMAND_SIZE:
        raise ProtocolError(f"BSON document of {size} bytes exceeds {MAX_COMMAND_SIZE}")
    try:
        doc = bson.decode(data[pos : pos + size], codec_options=CODEC)
    except Exception as exc:  # bson raises InvalidBSON, and others on some corruptions
        raise ProtocolError(f"invalid BSON: {exc}") from None
    return doc, pos + size


def parse_body(header: Header, body: bytes) -> Request:
    """Parse the bytes after the header (``len(body) == header.length - 16``)."""
    if header.op_code == OP_MSG:
        return _parse_msg(header, body)
    if header.op_code == OP_QUERY:
        return _parse_query(header, body)
    if header.op_code == OP_COMPRESSED:
        raise ProtocolError("OP_COMPRESSED: this server advertises no compressor")
    raise ProtocolError(f"unsupported opcode {header.op_code}")


def _parse_msg(header: Header, data: bytes) -> Request:
    if len(data) < 5:
        raise ProtocolError("OP_MSG too short")
    (flags,) = _UINT32.unpack_from(data, 0)
    if flags & _REQUIRED_FLAGS & ~_KNOWN_FLAGS:
        raise ProtocolError(f"OP_MSG has unknown required flag bits: {flags:#x}")
    end = len(data) - (4 if flags & CHECKSUM_PRESENT else 0)
    pos = 4
    body: dict[str, Any] | None = None
    sequences: dict[str, list[Any]] = {}
    while pos < end:
        kind = data[pos]
        pos += 1
        if kind == 0:
            if body is not None:
                raise ProtocolError("OP_MSG has more than one body section")
            body, pos = _document(data, pos, end)
        elif kind == 1:
            if pos + 4 > end:
                raise ProtocolError("truncated document sequence")
            (size,) = _INT32.unpack_from(data, pos)
            stop = pos + size
            if size < 5 or stop > end:
                raise ProtocolError(f"document sequence length {size} does not fit the message")
            name, cursor = _cstring(data, pos + 4)
            docs = []
            while cursor < stop:
                doc, cursor = _document(data, cursor, stop)
                docs.append(doc)
            if name in sequences:
                raise ProtocolError(f"duplicate document sequence {name!r}")
            sequences[name] = docs
            pos = stop
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if pos != end:
        raise ProtocolError("OP_MSG sections overrun the message")
    if body is None:
        raise ProtocolError("OP_MSG has no body section")
    for name, docs in sequences.items():
        if name in body:
            raise ProtocolError(f"field {name!r} is both in the body and a document sequence")
        body[name] = docs
    return Request(
        OP_MSG,
        header.request_id,
        body,
        more_to_come=bool(flags & MORE_TO_COME),
        exhaust_allowed=bool(flags & EXHAUST_ALLOWED),
        sequences=sequences,
    )


def _parse_query(header: Header, data: bytes) -> Request:
    if len(data) < 4:
        raise ProtocolError("OP_QUERY too short")
    name, pos = _cstring(data, 4)
    pos += 8  # numberToSkip, numberToReturn
    query, pos = _document(data, pos, len(data))
    if "$query" in query and isinstance(query["$query"], dict):
        query = query["$query"]
    db = name[: -len(".$cmd")] if name.endswith(".$cmd") else None
    return Request(OP_QUERY, header.request_id, query, legacy_db=db)


def _encode(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc, codec_options=CODEC)


def encode_msg(request_id: int, response_to: int, doc: dict[str, Any], flags: int = 0) -> bytes:
    """An OP_MSG reply: one body section."""
    payload = _UINT32.pack(flags) + b"\x00" + _encode(doc)
    return HEADER.pack(HEADER_SIZE + len(payload), request_id, response_to, OP_MSG) + payload


def encode_reply(request_id: int, response_to: int, doc: dict[str, Any]) -> bytes:
    """An OP_REPLY (the answer to a legacy OP_QUERY): one document, no cursor."""
    payload = struct.pack("<iqii", 0, 0, 0, 1) + _encode(doc)
    return HEADER.pack(HEADER_SIZE + len(payload), request_id, response_to, OP_REPLY) + payload


def encode_request(
    request_id: int, doc: dict[str, Any], sequences: dict[str, list[Any]] | None = None
) -> bytes:
    """An OP_MSG request (for tests and tools): a body and optional document sequences."""
    payload = _UINT32.pack(0) + b"\x00" + _encode(doc)
    for name, docs in (sequences or {}).items():
        inner = name.encode() + b"\x00" + b"".join(_encode(d) for d in docs)
        payload += b"\x01" + _INT32.pack(4 + len(inner)) + inner
    return HEADER.pack(HEADER_SIZE + len(payload), request_id, 0, OP_MSG) + payload
