"""The JSON API under ``/api``: every read and write of the ledger, behind :func:`authorize`.

Routes are thin: parse, authorize, call the ledger, answer. Ledger errors become
``{"error": class name, "message": ...}`` with the status of :mod:`._errors`; the app's
exception handlers do that, so a route never catches them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mongoledger._format import to_jsonable
from mongoledger.cli._values import account_id_text
from mongoledger.errors import InvalidArgument
from mongoledger.models import Account
from mongoledger.web._context import (
    WebContext,
    account_id_from_text,
    date_from_text,
    int_from_text,
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
_SORTS = ("balance", "-balance", "id", "-id", "created_at", "-created_at")


class UnsupportedMediaType(Exception):
    """An API write whose body is not ``application/json`` (415)."""


def _json(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(to_jsonable(value), status_code=status)


def account_json(account: Account) -> dict[str, Any]:
    """An account with ``ref``: its id as the text the URLs take."""
    body: dict[str, Any] = to_jsonable(account)
    body["ref"] = account_id_text(account.id)
    return body


def _require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise UnsupportedMediaType


def parse_where(items: list[str]) -> dict[str, Any] | None:
    """``KEY=VALUE`` filters (the CLI's value rules) as an attribute mapping."""
    from mongoledger.cli._values import UsageError, parse_pair

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

    async def written(kind: str, ids: list[Any]) -> JSONResponse:
        rows = [await ledger.get_transaction(i) for i in ids]
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

    write = [Depends(adjuster)]

    # Reads

    @router.get("/me", summary="The viewer: name, permissions, own account")
    async def me(request: Request) -> JSONResponse:
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
    async def get_account(request: Request, account_id: str) -> JSONResponse:
        aid = await own_or_all(request, account_id)
        return JSONResponse(account_json(await ledger.get_account(aid)))

    @router.get("/accounts/{account_id}/balance", summary="The balance (now, or at a date)")
    async def get_balance(
        request: Request, account_id: str, at: str | None = None, calculated: str | None = None
    ) -> JSONResponse:
        aid = await own_or_all(request, account_id)
        when = date_from_text(at, what="at", end_of_day=True)
        body: dict[str, Any] = {"account_id": aid}
        if when is not None:
            body["balance"] = await ledger.balance_at(aid, when)
            body["at"] = when
        elif calculated in ("1", "true"):
            body["balance"] = await ledger.calculate_balance(aid)
        else:  # now: with what pending holds reserve of it
            account = await ledger.get_account(aid)
            body.update(balance=account.balance, held=account.held, available=account.available)
        return _json(body)

    @router.get("/accounts/{account_id}/history", summary="The balance sheet, newest first")
    async def get_history(
        request: Request,
        account_id: str,
        start: str | None = None,
        end: str | None = None,
        limit: str | None = None,
        before_seq: str | None = None,
    ) -> JSONResponse:
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
    ) -> JSONResponse:
        aid = await own_or_all(request, account_id)
        rows = await ledger.statistics(
            aid,
            period=period,
            start=date_from_text(start, what="start"),
            end=date_from_text(end, what="end", end_of_day=True),
        )
        return _json({"account_id": aid, "period": period, "periods": rows})

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
    ) -> JSONResponse:
        authorize(await web.access(request), VIEW_ALL)
        if sort not in _SORTS:
            raise InvalidArgument(f"sort {sort!r} is not one of {', '.join(_SORTS)}")
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
    ) -> JSONResponse:
        authorize(await web.access(request), VIEW_ALL)
        rows = await ledger.statistics(
            None,
            period=period,
            start=date_from_text(start, what="start"),
            end=date_from_text(end, what="end", end_of_day=True),
        )
        return _json({"account_id": None, "period": period, "periods": rows})

    @router.get("/transactions/{transaction_id}", summary="One transaction")
    async def get_transaction(request: Request, transaction_id: str) -> JSONResponse:
        access = await web.access(request)
        viewer = authorize(access, VIEW_OWN)
        if viewer.can(VIEW_ALL):
            return _json(await ledger.get_transaction(transaction_id))
        try:
            row = await ledger.get_transaction(transaction_id)
        except LookupError:
            raise Forbidden from None  # unknown and not yours answer alike
        authorize(access, VIEW_OWN, account_id=row.account_id)
        return _json(row)

    @router.get("/verify", summary="Check balances, legs and links (reads everything)")
    async def get_verify(request: Request) -> JSONResponse:
        authorize(await web.access(request), VIEW_ALL)
        report = await ledger.verify()
        body = to_jsonable(report)
        body["ok"] = report.ok
        return JSONResponse(body)

    # Writes (ADJUST; JSON bodies only; Idempotency-Key header)

    @router.post(
        "/accounts",
        summary="Get or create an account by its attributes",
        status_code=201,
        dependencies=write,
    )
    async def post_account(request: Request, body: OpenAccountIn) -> JSONResponse:
        aid = await ledger.open_account(body.attributes, min_balance=body.min_balance)
        return JSONResponse(account_json(await ledger.get_account(aid)), status_code=201)

    def single_entry(kind: str) -> Any:
        """The handler of ``increase`` or ``decrease`` (money entering or leaving)."""

        async def handler(
            request: Request,
            account_id: str,
            body: AmountIn,
            idempotency_key: str | None = Header(default=None),
        ) -> JSONResponse:
            aid = account_id_from_text(account_id)
            write_call = ledger.increase if kind == "increase" else ledger.decrease
            tid = await write_call(aid, body.amount, body.data, idempotency_key=idempotency_key)
            return await written(kind, [tid])

        handler.__name__ = f"post_{kind}"
        return handler

    for kind, summary in (("increase", "Credit an account"), ("decrease", "Debit an account")):
        router.add_api_route(
            f"/accounts/{{account_id}}/{kind}",
            single_entry(kind),
            methods=["POST"],
            summary=summary,
            status_code=201,
            dependencies=write,
        )

    @router.post(
        "/transfers",
        summary="Move an amount between two accounts",
        status_code=201,
        dependencies=write,
    )
    async def post_transfer(
        request: Request, body: TransferIn, idempotency_key: str | None = Header(default=None)
    ) -> JSONResponse:
        ids = await ledger.transfer(
            account_id_from_text(body.from_account),
            account_id_from_text(body.to_account),
            body.amount,
            body.data,
            idempotency_key=idempotency_key,
        )
        return await written("transfer", ids)

    @router.post(
        "/posts",
        summary="Post a balanced multi-leg operation",
        status_code=201,
        dependencies=write,
    )
    async def post_post(
        request: Request, body: PostIn, idempotency_key: str | None = Header(default=None)
    ) -> JSONResponse:
        legs = [(account_id_from_text(leg.account), leg.amount, leg.data) for leg in body.legs]
        ids = await ledger.post(legs, body.data, idempotency_key=idempotency_key)
        return await written("post", ids)

    @router.post(
        "/transactions/{transaction_id}/revert",
        summary="Compensate the transaction's operation",
        status_code=201,
        dependencies=write,
    )
    async def post_revert(
        request: Request,
        transaction_id: str,
        body: DataIn,
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        result = await ledger.revert(transaction_id, body.data, idempotency_key=idempotency_key)
        return await written("revert", result if isinstance(result, list) else [result])

    # Holds (reads: the holds of an account its viewer may see, or all with VIEW_ALL)

    @router.get("/holds", summary="Holds, newest first: of an account (source or target), or all")
    async def get_holds(
        request: Request,
        account: str | None = None,
        status: str = "pending",
        limit: str | None = None,
    ) -> JSONResponse:
        if account is None:
            authorize(await web.access(request), VIEW_ALL)
            aid = None
        else:
            aid = await own_or_all(request, account)
        statuses = None if status == "all" else status.split(",")
        page = int_from_text(limit, what="limit", minimum=1, maximum=MAX_PAGE) or web.page_size
        holds = await ledger.holds(aid, status=statuses, limit=page)
        return _json({"account_id": aid, "holds": holds, "count": len(holds)})

    @router.get("/holds/{hold_id}", summary="One hold")
    async def get_hold(request: Request, hold_id: str) -> JSONResponse:
        access = await web.access(request)
        viewer = authorize(access, VIEW_OWN)
        if viewer.can(VIEW_ALL):
            return _json(await ledger.get_hold(hold_id))
        try:
            hold = await ledger.get_hold(hold_id)
        except LookupError:
            raise Forbidden from None  # unknown and not yours answer alike
        try:
            authorize(access, VIEW_OWN, account_id=hold.from_account_id)
        except Forbidden:
            authorize(access, VIEW_OWN, account_id=hold.to_account_id)
        return _json(hold)

    @router.post(
        "/holds",
        summary="Reserve an amount of an account's available balance for another",
        status_code=201,
        dependencies=write,
    )
    async def post_hold(
        request: Request, body: HoldIn, idempotency_key: str | None = Header(default=None)
    ) -> JSONResponse:
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

    @router.post(
        "/holds/{hold_id}/capture",
        summary="Move all or part of a pending hold; the rest is released",
        status_code=201,
        dependencies=write,
    )
    async def post_capture(
        request: Request,
        hold_id: str,
        body: CaptureIn,
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        ids = await ledger.capture(hold_id, body.amount, body.data, idempotency_key=idempotency_key)
        return await written("capture", ids)

    @router.post(
        "/holds/{hold_id}/void",
        summary="Release a pending hold entirely",
        dependencies=write,
    )
    async def post_void(request: Request, hold_id: str, body: DataIn) -> JSONResponse:
        await ledger.void(hold_id, body.data)
        return _json(await ledger.get_hold(hold_id))

    return router


async def _prepend(first: str, rest: Any) -> Any:
    yield first
    async for chunk in rest:
        yield chunk
