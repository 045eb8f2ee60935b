"""Page rendering: one Jinja2 environment (autoescaped), the formats, the base layout's context."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from mongoledger._format import format_date, format_value
from mongoledger.cli._values import account_id_text
from mongoledger.web._context import WebContext
from mongoledger.web._permissions import ADJUST, VIEW_ALL, Access
from mongoledger.web._security import csrf_token, set_csrf_cookie

__all__ = ["Renderer"]


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    current: bool


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in ("style.css", "live.js"):
        digest.update(
            resources.files("mongoledger.web").joinpath("static").joinpath(name).read_bytes()
        )
    return digest.hexdigest()[:12]


class Renderer:
    """Renders the templates with the app's formats; every value is HTML-escaped."""

    def __init__(self, web: WebContext) -> None:
        self.web = web
        env = Environment(
            loader=PackageLoader("mongoledger.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        money = web.money
        env.filters["money"] = money.format
        env.filters["signed"] = money.signed
        env.filters["date"] = lambda value: format_date(value, web.date_format)
        env.filters["value"] = format_value
        env.filters["aid"] = lambda value: quote(account_id_text(value), safe="")
        env.filters["aid_text"] = account_id_text
        env.filters["qs"] = lambda params: urlencode(
            [(k, v) for k, v in params.items() if v not in (None, "")]
        )
        self.env = env
        self.asset_version = _asset_version()

    def page(
        self,
        request: Request,
        access: Access,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
    ) -> HTMLResponse:
        web = self.web
        base = request.scope.get("root_path", "")
        viewer = access.viewer
        cookies: dict[str, str] = {}
        token = csrf_token(request, cookies, web.secret, viewer.name if viewer else "")
        path = request.scope.get("path", "")
        relative = path[len(base) :] if base and path.startswith(base) else path
        nav: list[NavItem] = []
        if viewer is not None:
            items = []
            if access.own_account_id is not None and viewer.can("view own balances"):
                items.append(("My balance", "/balance"))
            if viewer.can(VIEW_ALL):
                items.append(("All balances", "/admin/reports/balances"))
                items.append(("Statistics", "/admin/reports/statistics"))
            if viewer.can(ADJUST):
                items.append(("Adjust", "/admin/adjust"))
            nav = [NavItem(label, base + href, relative == href) for label, href in items]
        html = self.env.get_template(template).render(
            app_title=web.title,
            base=base,
            viewer=viewer,
            nav=nav,
            csrf=token,
            logout_url=web.logout_url,
            asset_version=self.asset_version,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        for value in cookies.values():
            set_csrf_cookie(request, response, value)
        return response
