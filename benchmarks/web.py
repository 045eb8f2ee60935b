"""The web app's overhead: JSON balance reads and increases through ``mongoledger.web``.

Each request goes through the whole ASGI app (routing, ``identify``, :func:`authorize`, body
validation, the security-headers middleware, JSON encoding) by an in-process ASGI caller, so
no HTTP parsing or socket is timed; the same operations are called on the library directly
in the same run. 16 concurrent workers, each on its own account; rounds rotate which side
goes first; the ratio is the median over rounds of app time / library time (target <= 2).

The balance read answers the balance with what pending holds reserve of it (``held``,
``available``): one read of the account (``balance_and_held``), timed against the library's
``balance()``. The floor, a bare ASGI callable making the same ledger calls and encoding the
same JSON, shows what no app around them can save.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._timing import alternate, time_async
from mongoledger import AsyncLedger

WORKERS = 16
TARGET = 2.0


def _caller(app: Any) -> Callable[..., Awaitable[tuple[int, bytes]]]:
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


def _bare(ledger: AsyncLedger, accounts: list[Any]) -> Any:
    """The floor: the lightest ASGI app answering the same requests with the same ledger calls
    and the same JSON (no FastAPI, no routing, no ``identify``/``authorize``, no headers), so
    what the app costs above it is the app's own."""
    from mongoledger._core import receipts
    from mongoledger._format import json_bytes

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        account = accounts[int(scope["path"].split("/")[1])]
        if scope["method"] == "GET":
            balance, held = await ledger.balance_and_held(account)
            answer = {
                "account_id": account,
                "balance": balance,
                "held": held,
                "available": balance - held,
            }
            status = 200
        else:
            body = json.loads((await receive())["body"])
            with receipts.recording() as receipt:
                tid = await ledger.increase(account, body["amount"], body.get("data"))
            rows = receipt.transactions([tid]) or [await ledger.get_transaction(tid)]
            answer = {"kind": "increase", "transaction_ids": [tid], "transactions": rows}
            status = 201
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json_bytes(answer)})

    return app


async def web_throughput(
    async_db: Any,
    ops: int,
    rounds: int,
    collector: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The bench rows: per operation, app and library ops/s and their time ratio, and the
    floor (a bare ASGI app making the same calls) with its ratio."""
    from mongoledger._text import account_id_text
    from mongoledger.web import ADJUST, VIEW_ALL, Viewer, create_app

    ledger = AsyncLedger(async_db)
    await ledger.ensure_indexes()
    accounts = [await ledger.open_account({"bench": "web", "n": n}) for n in range(WORKERS)]
    for account in accounts:
        await ledger.increase(account, 1)
    viewer = Viewer("bench", None, {VIEW_ALL, ADJUST})
    call = _caller(create_app(ledger, identify=lambda request: viewer))
    bare = _caller(_bare(ledger, accounts))
    paths = [f"/api/accounts/{account_id_text(a)}" for a in accounts]
    body = json.dumps({"amount": 1}).encode()

    async def app_balance(w: int, _: Any) -> None:
        status, _body = await call("GET", paths[w] + "/balance")
        assert status == 200, _body

    async def bare_balance(w: int, _: Any) -> None:
        status, _body = await bare("GET", f"/{w}")
        assert status == 200, _body

    async def lib_balance(w: int, _: Any) -> None:
        await ledger.balance(accounts[w])

    async def app_increase(w: int, _: Any) -> None:
        status, _body = await call("POST", paths[w] + "/increase", body)
        assert status == 201, _body

    async def bare_increase(w: int, _: Any) -> None:
        status, _body = await bare("POST", f"/{w}", body)
        assert status == 201, _body

    async def lib_increase(w: int, _: Any) -> None:
        await ledger.increase(accounts[w], 1)

    rows = []
    per = max(ops // WORKERS, 2)
    for name, sides in (
        ("balance read", {"app": app_balance, "floor": bare_balance, "library": lib_balance}),
        ("increase", {"app": app_increase, "floor": bare_increase, "library": lib_increase}),
    ):
        for fn in sides.values():  # warm-up, not timed
            await fn(0, None)
        rates: dict[str, list[float]] = {label: [] for label in sides}
        for n in range(rounds):
            for label, fn in alternate(list(sides.items()), n):
                args = [list(range(per)) for _ in range(WORKERS)]
                rates[label].append(await time_async(fn, args, collector))
        paired = {
            label: [lib / r for r, lib in zip(rates[label], rates["library"], strict=True)]
            for label in ("app", "floor")
        }
        row = {
            "operation": name,
            "mode": f"async x{WORKERS}",
            "app_ops_s": round(max(rates["app"]), 1),
            "library_ops_s": round(max(rates["library"]), 1),
            "floor_ops_s": round(max(rates["floor"]), 1),
            "ratio": round(statistics.median(paired["app"]), 3),
            "floor_ratio": round(statistics.median(paired["floor"]), 3),
            "round_ratios": [round(r, 3) for r in paired["app"]],
        }
        rows.append(row)
        log(
            f"  web {name:12s} app {row['app_ops_s']:8.0f}/s  library {row['library_ops_s']:8.0f}/s"
            f"  ratio {row['ratio']:.2f}  (bare ASGI floor {row['floor_ratio']:.2f})"
        )
    return rows


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "### The web app (`mongoledger.web`): JSON API vs the library (same engine, same run)",
        "",
        "Each request through the whole ASGI app (routing, `identify`, `authorize`, validation, "
        "security headers, JSON) by an in-process ASGI caller; 16 concurrent workers; "
        "app/library time: the median over rounds. The floor: a bare ASGI callable making the "
        "same ledger calls and encoding the same JSON, with nothing of the app around them.",
        "",
        "| operation | mode | app requests/s | library ops/s | app/library time | floor/library |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = "" if r["ratio"] <= TARGET else f" (**{r['ratio']:.3f} > {TARGET}**)"
        out.append(
            f"| {r['operation']} | {r['mode']} | {r['app_ops_s']:,.0f} | "
            f"{r['library_ops_s']:,.0f} | {r['ratio']:.2f}{mark} | {r['floor_ratio']:.2f} |"
        )
    return out
