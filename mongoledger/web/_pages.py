"""The HTML pages: balance sheets, the all-balances report, statistics, the adjust form.

Routes are thin: parse, authorize, call the ledger, render. Every page extends
``base.html``; every value is escaped by the renderer; forms carry a CSRF token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from mongoledger._format import CurrencyFormat
from mongoledger.errors import InvalidArgument, LedgerError
from mongoledger.web._api import parse_where
from mongoledger.web._context import (
    WebContext,
    account_id_from_text,
    date_from_text,
    int_from_text,
)
from mongoledger.web._errors import status_for
from mongoledger.web._permissions import ADJUST, VIEW_ALL, VIEW_OWN, Access, authorize
from mongoledger.web._render import Renderer
from mongoledger.web._security import csrf_ok

__all__ = ["CsrfRejected", "pages_router"]

OPERATIONS = (
    ("credit", "Credit (increase)"),
    ("debit", "Debit (decrease)"),
    ("transfer", "Transfer"),
    ("revert", "Revert"),
)
_PERIODS = ("day", "month", "year")
_SORT_COLUMNS = (
    ("Account", "id", False),
    ("Attributes", None, False),
    ("Balance", "balance", True),
    ("Minimum", None, True),
    ("Created", "created_at", False),
)


class CsrfRejected(Exception):
    """A form post without this browser's CSRF token (403; nothing read or written)."""


@dataclass(frozen=True)
class Column:
    label: str
    sort: str | None
    numeric: bool
    aria_sort: str | None
    next_sort: str | None


def _here(request: Request) -> str:
    return request.url.path


def pages_router(web: WebContext, renderer: Renderer) -> APIRouter:
    """The HTML routes of one app."""
    ledger = web.ledger
    router = APIRouter(include_in_schema=False)

    async def viewable(request: Request, account_text: str) -> tuple[Access, Any]:
        access = await web.access(request)
        authorize(access, VIEW_OWN)
        account_id = account_id_from_text(account_text)
        authorize(access, VIEW_OWN, account_id=account_id)
        return access, account_id

    async def sheet(request: Request, access: Access, account_id: Any) -> Response:
        q = request.query_params
        start, end = q.get("start") or None, q.get("end") or None
        before = int_from_text(q.get("before"), what="before", minimum=1, maximum=2**63 - 1)
        account = await ledger.get_account(account_id)
        rows = await ledger.history(
            account.id,
            start=date_from_text(start, what="From"),
            end=date_from_text(end, what="To", end_of_day=True),
            limit=web.page_size,
            before_seq=before,
        )
        older = None
        if len(rows) == web.page_size and (rows[-1].account_seq or 0) > 1:
            older = rows[-1].account_seq
        base = request.scope.get("root_path", "")
        return renderer.page(
            request,
            access,
            "sheet.html",
            {
                "account": account,
                "rows": rows,
                "start": start,
                "end": end,
                "before": before,
                "older": older,
                "here": _here(request),
                "events_url": f"{base}/api/accounts/{_quoted(account.id)}/events",
            },
        )

    @router.get("/")
    async def home(request: Request) -> Response:
        access = await web.access(request)
        viewer = authorize(access, VIEW_OWN) if access.viewer is None else access.viewer
        base = request.scope.get("root_path", "")
        if access.own_account_id is not None and viewer.can(VIEW_OWN):
            target = "/balance"
        elif viewer.can(VIEW_ALL):
            target = "/admin/reports/balances"
        elif viewer.can(ADJUST):
            target = "/admin/adjust"
        else:
            target = "/balance"
        return RedirectResponse(base + target, status_code=303)

    @router.get("/balance")
    async def own_sheet(request: Request) -> Response:
        access = await web.access(request)
        authorize(access, VIEW_OWN)
        if access.own_account_id is None:
            return renderer.page(request, access, "no_account.html", {})
        return await sheet(request, access, access.own_account_id)

    @router.get("/user/{account_id}/balance")
    async def account_sheet(request: Request, account_id: str) -> Response:
        access, aid = await viewable(request, account_id)
        return await sheet(request, access, aid)

    async def statistics(request: Request, access: Access, account_id: Any) -> Response:
        q = request.query_params
        period = q.get("period") or "month"
        if period not in _PERIODS:
            raise InvalidArgument(f"period {period!r} is not day, month or year")
        start, end = q.get("start") or None, q.get("end") or None
        account = None if account_id is None else await ledger.get_account(account_id)
        rows = await ledger.statistics(
            None if account is None else account.id,
            period=period,
            start=date_from_text(start, what="From"),
            end=date_from_text(end, what="To", end_of_day=True),
        )
        totals = {
            "credit": sum(r.credit for r in rows),
            "debit": sum(r.debit for r in rows),
            "net": sum(r.net for r in rows),
            "count": sum(r.count for r in rows),
        }
        return renderer.page(
            request,
            access,
            "stats.html",
            {
                "account": account,
                "rows": rows,
                "totals": totals,
                "period": period,
                "start": start,
                "end": end,
                "here": _here(request),
            },
        )

    @router.get("/user/{account_id}/statistics")
    async def account_statistics(request: Request, account_id: str) -> Response:
        access, aid = await viewable(request, account_id)
        return await statistics(request, access, aid)

    @router.get("/admin/reports/statistics")
    async def all_statistics(request: Request) -> Response:
        access = await web.access(request)
        authorize(access, VIEW_ALL)
        return await statistics(request, access, None)

    @router.get("/admin/reports/balances")
    async def report(request: Request) -> Response:
        access = await web.access(request)
        authorize(access, VIEW_ALL)
        q = request.query_params
        sort = q.get("sort") or "-balance"
        if sort.lstrip("-") not in ("balance", "id", "created_at"):
            raise InvalidArgument(f"sort {sort!r} is not balance, id or created_at (- reverses)")
        skip = int_from_text(q.get("skip"), what="skip", minimum=0, maximum=2**31) or 0
        where_text = (q.get("where") or "").strip()
        where = parse_where([where_text])
        # The totals need every matching account; the page is a slice of the same list.
        everything = await ledger.report(sort=sort, attributes=where)
        accounts = everything[skip : skip + web.page_size]
        columns = []
        for label, key, numeric in _SORT_COLUMNS:
            aria = None
            next_sort = key
            if key is not None and sort.lstrip("-") == key:
                aria = "descending" if sort.startswith("-") else "ascending"
                next_sort = key if sort.startswith("-") else f"-{key}"
            columns.append(Column(label, key, numeric, aria, next_sort))
        count = len(everything)
        return renderer.page(
            request,
            access,
            "report.html",
            {
                "accounts": accounts,
                "columns": columns,
                "sort": sort,
                "where": where_text,
                "page_total": sum(a.balance for a in accounts),
                "grand_total": sum(a.balance for a in everything),
                "total_count": count,
                "first": min(skip + 1, count),
                "last": min(skip + web.page_size, count),
                "prev_skip": max(skip - web.page_size, 0) if skip > 0 else None,
                "next_skip": skip + web.page_size if skip + web.page_size < count else None,
                "here": _here(request),
            },
        )

    def adjust_page(
        request: Request,
        access: Access,
        *,
        form: dict[str, str] | None = None,
        written: dict[str, Any] | None = None,
        error: LedgerError | ValueError | None = None,
    ) -> Response:
        values = {"operation": "credit", "account": "", "to_account": "", "amount": ""}
        values |= {"transaction": "", "message": ""}
        if form is not None:
            values |= {k: form.get(k, "") for k in values}
        status = 200
        problem = None
        if error is not None:
            status = status_for(error) if isinstance(error, LedgerError) else 400
            kind = type(error).__name__ if isinstance(error, LedgerError) else "InvalidAmount"
            problem = {"kind": kind, "message": str(error)}
        return renderer.page(
            request,
            access,
            "adjust.html",
            {
                "form": values,
                "written": written,
                "error": problem,
                "operations": OPERATIONS,
                "example_amount": web.money.number(123456),
                "idempotency_key": "form-" + secrets.token_urlsafe(18),
                "here": _here(request),
            },
            status=status,
        )

    @router.get("/admin/adjust")
    async def adjust_form(request: Request) -> Response:
        access = await web.access(request)
        authorize(access, ADJUST)
        return adjust_page(request, access)

    @router.post("/admin/adjust")
    async def adjust(request: Request) -> Response:
        access = await web.access(request)
        viewer = authorize(access, ADJUST)
        raw = await request.form()
        if not csrf_ok(request, raw, web.secret, viewer.name):
            raise CsrfRejected
        form = {k: v.strip() for k, v in raw.items() if isinstance(v, str)}
        operation = form.get("operation", "")
        data = {"message": form["message"]} if form.get("message") else None
        key = form.get("idempotency_key") or None
        try:
            if operation in ("credit", "debit", "transfer"):
                account = account_id_from_text(_required(form, "account", "Account"))
                amount = _major(web.money, _required(form, "amount", "Amount"))
            if operation == "credit":
                ids = [await ledger.increase(account, amount, data, idempotency_key=key)]
            elif operation == "debit":
                ids = [await ledger.decrease(account, amount, data, idempotency_key=key)]
            elif operation == "transfer":
                target = account_id_from_text(_required(form, "to_account", "To account"))
                ids = await ledger.transfer(account, target, amount, data, idempotency_key=key)
            elif operation == "revert":
                tid = _required(form, "transaction", "Transaction")
                result = await ledger.revert(tid, data, idempotency_key=key)
                ids = result if isinstance(result, list) else [result]
            else:
                raise InvalidArgument(
                    f"operation {operation!r} is not credit, debit, transfer or revert"
                )
        except (LedgerError, ValueError) as exc:
            return adjust_page(request, access, form=form, error=exc)
        rows = [await ledger.get_transaction(i) for i in ids]
        kind = {"credit": "increase", "debit": "decrease"}.get(operation, operation)
        written = {"kind": kind, "operation_id": rows[0].operation_id, "rows": rows}
        return adjust_page(request, access, written=written)

    return router


def _major(money: CurrencyFormat, text: str) -> int:
    """An amount typed in the app's format (``1,234.56``; ``1.234,56``) as minor units."""
    plain = text.replace(money.thousands_sep, "") if money.thousands_sep else text
    if money.decimal_sep != ".":
        plain = plain.replace(money.decimal_sep, ".")
    try:
        return money.parse_major(plain)
    except ValueError:
        raise ValueError(
            f"amount {text!r} is not a number of {money.format(123456)}'s form"
        ) from None


def _required(form: dict[str, str], name: str, label: str) -> str:
    value = form.get(name, "")
    if not value:
        raise InvalidArgument(f"{label} is required")
    return value


def _quoted(account_id: Any) -> str:
    from urllib.parse import quote

    from mongoledger.cli._values import account_id_text

    return quote(account_id_text(account_id), safe="")
