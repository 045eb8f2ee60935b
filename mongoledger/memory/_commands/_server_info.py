"""What drivers and shells ask about the server: the ``hello`` handshake (a replica-set
primary), ``buildInfo``, ``getParameter``/``setParameter``, ``getLog``, ``serverStatus``, ...,
and ``configureFailPoint``."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64

from mongoledger.memory._bson import MAX_BSON_SIZE, Document

from ._common import (
    _GENERIC_FIELDS,
    ConnectionInfo,
    Handler,
    Next,
    Part,
    _admin_only,
    _bad_value,
    _now,
)
from ._reads import CURSOR_IDLE_SECONDS

WIRE_VERSION = 21  # MongoDB 7.0


VERSION = "7.0.0"


class ServerInfo(Part):
    """The handshake and what drivers and shells ask about the server."""

    def handlers(self) -> dict[str, Handler]:
        return {
            "hello": self._hello,
            "isMaster": self._hello,
            "ismaster": self._hello,
            "ping": self.ok,
            "buildInfo": self._build_info,
            "buildinfo": self._build_info,
            "serverStatus": self._server_status,
            "hostInfo": self._host_info,
            "getCmdLineOpts": self._cmd_line_opts,
            "getParameter": self._get_parameter,
            "setParameter": self._set_parameter,
            "getLog": self._get_log,
            "connectionStatus": self._connection_status,
            "whatsmyuri": self._whatsmyuri,
            "listCommands": self._list_commands,
            "getLastError": self.ok,
            "replSetGetStatus": self._repl_status,
            "lockInfo": self.ok,
            "configureFailPoint": self._configure_fail_point,
        }

    def _hello(
        self, db: str, body: Mapping[str, Any], session: Any, conn: ConnectionInfo | None
    ) -> Next:
        name = next(iter(body))
        reply = self.server.hello(legacy=name != "hello")
        reply["maxWireVersion"] = WIRE_VERSION
        if conn is not None:
            me = f"{conn.host}:{conn.port}"
            reply["hosts"] = [me]
            reply["primary"] = reply["me"] = me
            reply["connectionId"] = conn.connection_id
        if body.get("helloOk"):
            reply["helloOk"] = True
        return reply

    def _build_info(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {
            "version": VERSION,
            "gitVersion": "mongoledger-memory",
            "versionArray": [7, 0, 0, 0],
            "modules": [],
            "allocator": "system",
            "javascriptEngine": "none",
            "sysInfo": "deprecated",
            "bits": 64,
            "debug": False,
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "storageEngines": ["memory"],
            "openssl": {"running": "disabled", "compiled": "disabled"},
            "buildEnvironment": {},
            "ok": 1.0,
        }

    def _server_status(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {
            "host": "mongoledger-memory",
            "version": VERSION,
            "process": "mongod",
            "pid": Int64(os.getpid()),
            "uptime": time.monotonic(),
            "localTime": _now(),
            "storageEngine": {"name": "memory", "supportsCommittedReads": True},
            "ok": 1.0,
        }

    def _host_info(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {
            "system": {"currentTime": _now(), "hostname": "localhost", "cpuArch": "x86_64"},
            "os": {"type": "Linux", "name": "", "version": ""},
            "extra": {},
            "ok": 1.0,
        }

    def _cmd_line_opts(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "getCmdLineOpts")
        return {"argv": ["mongoledger", "serve-db"], "parsed": {}, "ok": 1.0}

    def _get_parameter(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "getParameter")
        reply: Document = {"ok": 1.0}
        known: Document = {
            "featureCompatibilityVersion": {"version": "7.0"},
            "transactionLifetimeLimitSeconds": int(self.commands.sessions.transaction_lifetime),
            "cursorTimeoutMillis": Int64(CURSOR_IDLE_SECONDS * 1000),
        }
        everything = body.get("getParameter") == "*"
        for key, value in known.items():
            if everything or key in body:
                reply[key] = value
        return reply

    def _set_parameter(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "setParameter")
        reply: Document = {"ok": 1.0}
        for key, value in body.items():
            if key in ("setParameter", *_GENERIC_FIELDS):
                continue
            if key != "transactionLifetimeLimitSeconds":
                raise _bad_value(
                    f"setParameter {key!r} is not implemented by the mongoledger memory engine"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
                raise _bad_value(f"transactionLifetimeLimitSeconds must be >= 1, not {value!r}")
            reply["was"] = int(self.commands.sessions.transaction_lifetime)
            self.commands.sessions.transaction_lifetime = float(value)
            self.commands.sessions.transaction_started()  # the reaper's next deadline moved
        return reply

    def _get_log(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "getLog")
        which = body.get("getLog")
        if which == "*":
            return {"names": ["global", "startupWarnings"], "ok": 1.0}
        return {"totalLinesWritten": 0, "log": [], "ok": 1.0}

    def _connection_status(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}, "ok": 1.0}

    def _whatsmyuri(
        self, db: str, body: Mapping[str, Any], session: Any, conn: ConnectionInfo | None
    ) -> Next:
        you = "in-process" if conn is None else f"{conn.host}:{conn.port}"
        return {"you": you, "ok": 1.0}

    def _list_commands(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        names = sorted(self.commands.handlers)
        return {"commands": {n: {"help": ""} for n in names}, "ok": 1.0}

    def _repl_status(self, db: str, body: Mapping[str, Any], session: Any, conn: Any) -> Next:
        _admin_only(db, "replSetGetStatus")
        hello = self.server.hello()
        return {
            "set": hello["setName"],
            "date": _now(),
            "myState": 1,
            "members": [
                {"_id": 0, "name": hello["me"], "health": 1.0, "state": 1, "stateStr": "PRIMARY"}
            ],
            "ok": 1.0,
        }

    def _configure_fail_point(
        self, db: str, body: Mapping[str, Any], session: Any, conn: Any
    ) -> Next:
        _admin_only(db, "configureFailPoint")
        return self.server.configure_fail_point(body)
