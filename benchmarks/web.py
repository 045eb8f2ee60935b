"""The web app's overhead: JSON balance reads and increases through ``mongoledger.web``.

Each request goes through the whole ASGI app (routing, ``identify``, :func:`authorize`, body
validation, the security-headers middleware, JSON encoding) by an in-process ASGI caller, so
no HTTP parsing or socket is timed; the same operations are called on the library directly
in the same run. 16 concurrent workers, each on its own account; rounds alternate which side
goes first; the ratio is the median over rounds of app time / library time (target <= 2).
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from mongoledger import AsyncLedger

WORKERS = 16
TARGET = 2.0


def _caller(app: Any) -> Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]:
    """An in-process ASGI client: one request in, (status, body) out."""

    async def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = [(b"host", b"bench")]
        if body:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # pragma: no cover - a finished request never waits
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    return call


async def web_throughput(
    async_db: Any,
    ops: int,
    rounds: int,
    time_async: Callable[..., Awaitable[float]],
    collector: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The bench rows: per operation, app and library ops/s and their time ratio."""
    from mongoledger.cli._values import account_id_text
    from mongoledger.web import ADJUST, VIEW_ALL, Viewer, create_app

    ledger = AsyncLedger(async_db)
    await ledger.ensure_indexes()
    accounts = [await ledger.open_account({"bench": "web", "n": n}) for n in range(WORKERS)]
    for account in accounts:
        await ledger.increase(account, 1)
    viewer = Viewer("bench", None, {VIEW_ALL, ADJUST})
    app = create_app(ledger, identify=lambda request: viewer)
    call = _caller(app)
    paths = [f"/api/accounts/{account_id_text(a)}" for a in accounts]
    body = json.dumps({"amount": 1}).encode()

    async def app_balance(w: int, _: Any) -> None:
        status, _body = await call("GET", paths[w] + "/balance")
        assert status == 200, _body

    async def lib_balance(w: int, _: Any) -> None:
        await ledger.balance(accounts[w])

    async def app_increase(w: int, _: Any) -> None:
        status, _body = await call("POST", paths[w] + "/increase", body)
        assert status == 201, _body

    async def lib_increase(w: int, _: Any) -> None:
        await ledger.increase(accounts[w], 1)

    rows = []
    per = max(ops // WORKERS, 2)
    for name, through_app, direct in (
        ("balance read", app_balance, lib_balance),
        ("increase", app_increase, lib_increase),
    ):
        for fn in (through_app, direct):  # warm-up, not timed
            await fn(0, None)
        rates: dict[str, list[float]] = {"app": [], "library": []}
        for n in range(rounds):
            sides = [("app", through_app), ("library", direct)]
            for label, fn in sides if n % 2 == 0 else sides[::-1]:
                args = [list(range(per)) for _ in range(WORKERS)]
                rates[label].append(await time_async(fn, args, collector))
        paired = [lib / web for web, lib in zip(rates["app"], rates["library"], strict=True)]
        row = {
            "operation": name,
            "mode": f"async x{WORKERS}",
            "app_ops_s": round(max(rates["app"]), 1),
            "library_ops_s": round(max(rates["library"]), 1),
            "ratio": round(statistics.median(paired), 3),
            "round_ratios": [round(r, 3) for r in paired],
        }
        rows.append(row)
        log(
            f"  web {name:12s} app {row['app_ops_s']:8.0f}/s  library {row['library_ops_s']:8.0f}/s"
            f"  ratio {row['ratio']:.2f}"
        )
    return rows


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "### The web app (`mongoledger.web`): JSON API vs the library (same engine, same run)",
        "",
        "Each request through the whole ASGI app (routing, `identify`, `authorize`, validation, "
        "security headers, JSON) by an in-process ASGI caller; 16 concurrent workers; "
        "app/library time: the median over rounds.",
        "",
        "| operation | mode | app requests/s | library ops/s | app/library time |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        mark = "" if r["ratio"] <= TARGET else f" (**{r['ratio']:.3f} > {TARGET}**)"
        out.append(
            f"| {r['operation']} | {r['mode']} | {r['app_ops_s']:,.0f} | "
            f"{r['library_ops_s']:,.0f} | {r['ratio']:.2f}{mark} |"
        )
    return out
