"""The JSON API under ``/api``: every read and write of the ledger, behind :func:`authorize`.

Routes are thin: parse, authorize, call the ledger, answer. Ledger errors become
``{"error": class name, "message": ...}`` with the status of :mod:`._errors`; the app's
exception handlers do that, so a route never catches them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.types import DecoratedCallable
from starlette.responses import Response, StreamingResponse

from mongoledger._core.reads import REPORT_SORTS
from mongoledger._format import json_bytes
from mongoledger._text import account_id_text
from mongoledger.errors import InvalidArgument
from mongoledger.models import Account
from mongoledger.web._context import (
    WebContext,
    account_id_from_text,
    date_from_text,
    int_from_text,
    run_write,
)
from mongoledger.web._live import balance_events
from mongoledger.web._permissions import ADJUST, VIEW_ALL, VIEW_OWN, Forbidden, authorize
from mongoledger.web._schemas import (
    AmountIn,
    CaptureIn,
    DataIn,
    HoldIn,
    OpenAccountIn,
    PostIn,
    TransferIn,
)

__all__ = ["api_router"]

MAX_PAGE = 1000


T = TypeVar("T")
Owners = Callable[[Any], Iterable[Any]]  # the accounts a transaction or hold belongs to
IdempotencyKey = Annotated[
    str | None,
    Header(description="a retry with the same key answers with the first call's result"),
]


class UnsupportedMediaType(Exception):
    """An API write whose body is not ``application/json`` (415)."""


def _json(value: Any, status: int = 200) -> Response:
    return Response(json_bytes(value), status_code=status, media_type="application/json")


def account_json(account: Account) -> dict[str, Any]:
    """An account with ``ref``: its id as the text the URLs take. Its values stay as the
    model holds them: :func:`json_bytes` converts each once, as it encodes."""
    body = account.model_dump()
    body["ref"] = account_id_text(account.id)
    return body


def _require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise UnsupportedMediaType


def parse_where(items: list[str]) -> dict[str, Any] | None:
    """``KEY=VALUE`` filters (the CLI's value rules) as an attribute mapping."""
    from mongoledger._text import UsageError, parse_pair

    where: dict[str, Any] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            try:
                key, value = parse_pair(part.strip(), what="where")
            except UsageError as exc:
                raise InvalidArgument(str(exc)) from None
            where[key] = value
    return where or None


def api_router(web: WebContext) -> APIRouter:
    """The ``/api`` routes of one app."""
    ledger = web.ledger
    router = APIRouter(prefix="/api", tags=["ledger"])

    async def written(kind: str, write: Awaitable[Any]) -> Response:
        """201 with what ``write`` (a ledger call) wrote."""
        ids, rows = await run_write(ledger, write)
        return _json(
            {
                "kind": kind,
                "operation_id": rows[0].operation_id if rows else None,
                "transaction_ids": ids,
                "transactions": rows,
            },
            201,
        )

    async def own_or_all(request: Request, account_text: str) -> Any:
        """The account id of the path, if the viewer may see it (401/403 first)."""
        access = await web.access(request)
        authorize(access, VIEW_OWN)
        account_id = account_id_from_text(account_text)
        authorize(access, VIEW_OWN, account_id=account_id)
        return account_id

    async def adjuster(request: Request) -> None:
        """Runs before the body is validated: 401/403/415 win over a 422."""
        authorize(await web.access(request), ADJUST)
        _require_json(request)

    async def statistics(
        account_id: Any, period: str, start: str | None, end: str | None
    ) -> Response:
        """Credit/debit totals per period of ``account_id`` (None: of every account)."""
        rows = await ledger.statistics(
            account_id,
            period=period,
            start=date_from_text(start, what="start"),
            end=date_from_text(end, what="end", end_of_day=True),
        )
        return _json({"account_id": account_id, "period": period, "periods": rows})

    def adjusting(
        path: str, summary: str, status: int = 201
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """A write route: ADJUST, a JSON body, 401/403/415 before the body's 422."""
        return router.post(
            path, summary=summary, status_code=status, dependencies=[Depends(adjuster)]
        )

    async def visible(request: Request, read: Callable[[], Awaitable[T]], owners: Owners) -> T:
        """What ``read()`` finds, if the viewer may see it: with VIEW_ALL, or VIEW_OWN of one
        of the accounts ``owners`` names; one it may not see answers as an unknown id (403)."""
        access = await web.access(request)
        if authorize(access, VIEW_OWN).can(VIEW_ALL):
            return await read()
        try:
            found = await read()
        except LookupError:
            raise Forbidden from None
        for account_id in owners(found):
            with contextlib.suppress(Forbidden):
                authorize(access, VIEW_OWN, account_id=account_id)
                return found
        raise Forbidden

    # Reads

    @router.get("/me", summary="The viewer: name, permissions, own account")
    async def me(request: Request) -> Response:
        access = await web.access(request)
        viewer = access.viewer
        if viewer is None:
            authorize(access, VIEW_OWN)  # raises NotAuthenticated
            raise AssertionError  # pragma: no cover
        own = access.own_account_id
        return _json(
            {
                "name": viewer.name,
                "permissions": sorted(viewer.permissions),
                "account_id": own,
                "account_ref": None if own is None else account_id_text(own),
            }
        )

    @router.get("/accounts/{account_id}", summary="An account and its cached balance")
    async def get_account(request: Request, account_id: str) -> Response:
        aid = await own_or_all(request, account_id)
        return _json(account_json(await ledger.get_account(aid)))

    @router.get("/accounts/{account_id}/balance", summary="The balance (now, or at a date)")
    async def get_balance(
        request: Request, account_id: str, at: str | None = None, calculated: str | None = None
    ) -> Response:
        aid = await own_or_all(request, account_id)
        when = date_from_text(at, what="at", end_of_day=True)
        body: dict[str, Any] = {"account_id": aid}
        if when is not None:
            body["balance"] = await ledger.balance_at(aid, when)
            body["at"] = when
        elif calculated in ("1", "true"):
            body["balance"] = await ledger.calculate_balance(aid)
        else:  # now: with what pending holds reserve of it
            balance, held = await ledger.balance_and_held(aid)
            body.update(balance=balance, held=held, available=balance - held)
        return _json(body)

    @router.get("/accounts/{account_id}/history", summary="The balance sheet, newest first")
    async def get_history(
        request: Request,
        account_id: str,
        start: str | None = None,
        end: str | None = None,
        limit: str | None = None,
        before_seq: str | None = None,
    ) -> Response:
        aid = await own_or_all(request, account_id)
        page = int_from_text(limit, what="limit", minimum=1, maximum=MAX_PAGE) or web.page_size
        before = int_from_text(before_seq, what="before_seq", minimum=1, maximum=2**63 - 1)
        rows = await ledger.history(
            aid,
            start=date_from_text(start, what="start"),
            end=date_from_text(end, what="end", end_of_day=True),
            limit=page,
            before_seq=before,
        )
        more = None
        if len(rows) == page and (rows[-1].account_seq or 0) > 1:
            more = rows[-1].account_seq
        return _json({"account_id": aid, "transactions": rows, "next_before_seq": more})

    @router.get("/accounts/{account_id}/statistics", summary="Credit/debit totals per period")
    async def get_account_statistics(
        request: Request,
        account_id: str,
        period: str = "month",
        start: str | None = None,
        end: str | None = None,
    ) -> Response:
        return await statistics(await own_or_all(request, account_id), period, start, end)

    @router.get(
        "/accounts/{account_id}/events",
        summary="Server-sent events: the balance after each committed operation",
        response_class=StreamingResponse,
    )
    async def get_events(request: Request, account_id: str) -> Response:
        aid = await own_or_all(request, account_id)
        await ledger.get_account(aid)  # 404 before the stream opens
        events = balance_events(ledger, aid, web.money)
        first = await anext(events)  # the change stream is open (or its error raised) here
        return StreamingResponse(
            _prepend(first, events),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    @router.get("/balances", summary="All balances (the report), sortable and paged")
    async def get_balances(
        request: Request,
        sort: str = "-balance",
        limit: str | None = None,
        skip: str | None = None,
        where: Annotated[list[str] | None, Query()] = None,
    ) -> Response:
        authorize(await web.access(request), VIEW_ALL)
        if sort not in REPORT_SORTS:
            raise InvalidArgument(f"sort {sort!r} is not one of {', '.join(REPORT_SORTS)}")
        page = int_from_text(limit, what="limit", minimum=1, maximum=MAX_PAGE) or web.page_size
        offset = int_from_text(skip, what="skip", minimum=0, maximum=2**31) or 0
        accounts = await ledger.report(
            sort=sort, limit=page, skip=offset, attributes=parse_where(where or [])
        )
        return _json(
            {
                "accounts": [account_json(a) for a in accounts],
                "count": len(accounts),
                "total": sum(a.balance for a in accounts),
            }
        )

    @router.get("/statistics", summary="Credit/debit totals per period, all accounts")
    async def get_statistics(
        request: Request, period: str = "month", start: str | None = None, end: str | None = None
    ) -> Response:
        authorize(await web.access(request), VIEW_ALL)
        return await statistics(None, period, start, end)

    @router.get("/transactions/{transaction_id}", summary="One transaction")
    async def get_transaction(request: Request, transaction_id: str) -> Response:
        row = await visible(
            request, lambda: ledger.get_transaction(transaction_id), lambda t: [t.account_id]
        )
        return _json(row)

    @router.get("/verify", summary="Check balances, legs and links (reads everything)")
    async def get_verify(request: Request) -> Response:
        authorize(await web.access(request), VIEW_ALL)
        report = await ledger.verify()
        body = report.model_dump()
        body["ok"] = report.ok
        return _json(body)

    # Writes (ADJUST; JSON bodies only; Idempotency-Key header)

    @adjusting("/accounts", "Get or create an account by its attributes")
    async def post_account(request: Request, body: OpenAccountIn) -> Response:
        aid = await ledger.open_account(body.attributes, min_balance=body.min_balance)
        return _json(account_json(await ledger.get_account(aid)), 201)

    def single_entry(kind: str) -> Any:
        """The handler of ``increase`` or ``decrease`` (money entering or leaving)."""

        async def handler(
            request: Request,
            account_id: str,
            body: AmountIn,
            idempotency_key: IdempotencyKey = None,
        ) -> Response:
            aid = account_id_from_text(account_id)
            write_call = ledger.increase if kind == "increase" else ledger.decrease
            return await written(
                kind, write_call(aid, body.amount, body.data, idempotency_key=idempotency_key)
            )

        handler.__name__ = f"post_{kind}"
        return handler

    for kind, summary in (("increase", "Credit an account"), ("decrease", "Debit an account")):
        adjusting(f"/accounts/{{account_id}}/{kind}", summary)(single_entry(kind))

    @adjusting("/transfers", "Move an amount between two accounts")
    async def post_transfer(
        request: Request, body: TransferIn, idempotency_key: IdempotencyKey = None
    ) -> Response:
        return await written(
            "transfer",
            ledger.transfer(
                account_id_from_text(body.from_account),
                account_id_from_text(body.to_account),
                body.amount,
                body.data,
                idempotency_key=idempotency_key,
            ),
        )

    @adjusting("/posts", "Post a balanced multi-leg operation")
    async def post_post(
        request: Request, body: PostIn, idempotency_key: IdempotencyKey = None
    ) -> Response:
        legs = [(account_id_from_text(leg.account), leg.amount, leg.data) for leg in body.legs]
        return await written("post", ledger.post(legs, body.data, idempotency_key=idempotency_key))

    @adjusting("/transactions/{transaction_id}/revert", "Compensate the transaction's operation")
    async def post_revert(
        request: Request,
        transaction_id: str,
        body: DataIn,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        return await written(
            "revert", ledger.revert(transaction_id, body.data, idempotency_key=idempotency_key)
        )

    # Holds (reads: the holds of an account its viewer may see, or all with VIEW_ALL)

    @router.get("/holds", summary="Holds, newest first: of an account (source or target), or all")
    async def get_holds(
        request: Request,
        account: str | None = None,
        status: str = "pending",
        limit: str | None = None,
    ) -> Response:
        if account is None:
            authorize(await web.access(request), VIEW_ALL)
            aid = None
        else:
            aid = await own_or_all(request, account)
        statuses = None if status == "all" else status.split(",")
        page = int_from_text(limit, what="limit", minimum=1, maximum=MAX_PAGE) or web.page_size
        holds = await ledger.holds(aid, status=statuses, limit=page)
        return _json({"account_id": aid, "holds": holds, "count": len(holds)})

    @router.get("/holds/{hold_id}", summary="One hold (of an account the viewer may see)")
    async def get_hold(request: Request, hold_id: str) -> Response:
        hold = await visible(
            request,
            lambda: ledger.get_hold(hold_id),
            lambda h: [h.from_account_id, h.to_account_id],
        )
        return _json(hold)

    @adjusting("/holds", "Reserve an amount of an account's available balance for another")
    async def post_hold(
        request: Request, body: HoldIn, idempotency_key: IdempotencyKey = None
    ) -> Response:
        expires: Any = None
        if body.expires_at is not None and body.expires_in is not None:
            raise InvalidArgument("give expires_at or expires_in, not both")
        if body.expires_at is not None:
            expires = date_from_text(body.expires_at, what="expires_at")
        elif body.expires_in is not None:
            if body.expires_in <= 0:
                raise InvalidArgument(f"expires_in {body.expires_in} must be positive seconds")
            expires = timedelta(seconds=body.expires_in)
        hold_id = await ledger.hold(
            account_id_from_text(body.from_account),
            account_id_from_text(body.to_account),
            body.amount,
            body.data,
            expires_at=expires,
            idempotency_key=idempotency_key,
        )
        return _json(await ledger.get_hold(hold_id), 201)

    @adjusting(
        "/holds/{hold_id}/capture", "Move all or part of a pending hold; the rest is released"
    )
    async def post_capture(
        request: Request,
        hold_id: str,
        body: CaptureIn,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        return await written(
            "capture",
            ledger.capture(hold_id, body.amount, body.data, idempotency_key=idempotency_key),
        )

    @adjusting("/holds/{hold_id}/void", "Release a pending hold entirely", status=200)
    async def post_void(request: Request, hold_id: str, body: DataIn) -> Response:
        await ledger.void(hold_id, body.data)
        return _json(await ledger.get_hold(hold_id))

    return router


async def _prepend(first: str, rest: Any) -> Any:
    yield first
    async for chunk in rest:
        yield chunk
