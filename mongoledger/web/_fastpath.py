"""The request path of the app's own routes, without FastAPI's per-request machinery.

FastAPI declares the routes: their parameters, their pydantic bodies, the OpenAPI document.
At request time it runs every request through its router and dependency solver, which on the
in-process engine costs more than the ledger's own balance read (``scripts/bench``, README
"Web"). :class:`FastPath`, a pure-ASGI middleware, serves the routes of the routers
:func:`~mongoledger.web.create_app` builds from those same declarations: each endpoint's
signature is compiled once into where its arguments come from (a path or query string, a
header, the JSON body validated by its pydantic model, the ``Request``), its dependencies run
in order, and the ``Response`` it returns is sent; an exception goes to the app's exception
handlers, as FastAPI would send it.

Routes are tried in the order of the app's own router, so one FastAPI serves (the OpenAPI
document, the static files, a route the service added) keeps its place, and the scope gets
what Starlette's router puts there (``route``, ``endpoint``, ``path_params``, ``router``).

Everything else goes on to FastAPI unchanged: other routes, a method the path lacks (405,
HEAD and OPTIONS included: FastAPI's routes declare neither), a path FastAPI redirects (a
trailing slash), a body that is missing, not JSON or not valid for its model (FastAPI's
422), a signature outside that vocabulary, and every request while the app has
``dependency_overrides``. So an answer is FastAPI's own by construction;
tests/web/test_fastpath.py compares the two paths request by request, headers included.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastapi import params
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FastPath", "compile_route"]

# Where an endpoint argument comes from.
_REQUEST: Final = "request"
_PATH: Final = "path"
_QUERY: Final = "query"
_QUERY_LIST: Final = "query list"
_HEADER: Final = "header"

_JSON_TYPE = re.compile(r"application/(?:[^;/\s]+\+)?json\s*(?:;.*)?", re.IGNORECASE)


@dataclass(frozen=True)
class Compiled:
    """One route: how to match it and where each argument of its endpoint comes from
    (``endpoint`` None: a route FastAPI serves, kept for its place in the order)."""

    methods: frozenset[str] | None  # None: any method
    prefix: str  # the path up to its first parameter: a cheap test before the regex
    regex: re.Pattern[str]
    convertors: Mapping[str, Convertor[Any]]
    endpoint: Callable[..., Awaitable[Response]] | None = None
    route: BaseRoute | None = None  # what Starlette's router puts in ``scope["route"]``
    dependencies: tuple[Callable[[Request], Awaitable[Any]], ...] = ()
    arguments: tuple[tuple[str, str, str, Any], ...] = ()  # (name, source, key, default)
    body: tuple[str, type[BaseModel]] | None = None


def compile_route(route: APIRoute) -> Compiled | None:
    """How :class:`FastPath` serves ``route``, or None when FastAPI must (a parameter, a
    dependency or a return type outside the simple vocabulary our routes use)."""
    endpoint = route.endpoint
    if not inspect.iscoroutinefunction(endpoint) or getattr(route, "max_body_size", None):
        return None  # (FastAPI wraps a route with a body limit of its own)
    try:
        hints = typing.get_type_hints(endpoint, include_extras=True)
    except (NameError, TypeError):
        return None
    returns = hints.get("return")
    if not (inspect.isclass(returns) and issubclass(returns, Response)):
        return None
    dependencies = []
    for depends in route.dependencies:
        call = depends.dependency
        if call is None or not _takes_only_request(call):
            return None
        dependencies.append(call)
    arguments: list[tuple[str, str, str, Any]] = []
    body: tuple[str, type[BaseModel]] | None = None
    for name, parameter in inspect.signature(endpoint).parameters.items():
        hint = hints.get(name)
        source = _source(name, hint, parameter.default, route)
        if source is None:
            if body is None and inspect.isclass(hint) and issubclass(hint, BaseModel):
                body = (name, hint)
                continue
            return None
        arguments.append((name, *source))
    regex = route.path_regex
    prefix = route.path_format.split("{", 1)[0]
    return Compiled(
        methods=frozenset(route.methods or ()),
        prefix=prefix,
        regex=regex,
        convertors=route.param_convertors,
        endpoint=endpoint,
        route=route,
        dependencies=tuple(dependencies),
        arguments=tuple(arguments),
        body=body,
    )


def _header_name(name: str, header: params.Header) -> str:
    """The header a parameter reads, as FastAPI names it (``idempotency_key``:
    ``idempotency-key``)."""
    key = header.alias or (name.replace("_", "-") if header.convert_underscores else name)
    return key.lower()


def _fastapi_serves(route: Any) -> Compiled:
    """A route left to FastAPI, matched only to keep the order of the routes."""
    regex = getattr(route, "path_regex", None) or re.compile("")  # (no regex: any path)
    methods = getattr(route, "methods", None)
    return Compiled(
        methods=None if methods is None else frozenset(methods),
        prefix="",
        regex=regex,
        convertors={},
    )


def _flattened(routes: Sequence[BaseRoute], routers: Sequence[APIRouter]) -> list[BaseRoute]:
    """The app's routes in the order its router tries them, with each of ``routers`` that the
    app included as it is (no prefix, dependencies or body limit of the inclusion) replaced by
    its own routes. FastAPI 0.16x keeps an included router whole (``original_router`` and its
    ``include_context``); earlier versions copied its routes into the app's list."""
    out: list[BaseRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        if any(included is mine for mine in routers) and _plain(context):
            assert included is not None
            out.extend(included.routes)
        else:
            out.append(route)
    return out


def _plain(context: Any) -> bool:
    """Whether an inclusion changes nothing of its routes (FastAPI 0.165's include context:
    no prefix, dependencies, body limit or form limits)."""
    return (
        getattr(context, "prefix", None) == ""
        and not getattr(context, "dependencies", None)
        and getattr(context, "max_body_size", None) is None
        and not getattr(context, "form_limits", None)
    )


def _takes_only_request(call: Callable[..., Any]) -> bool:
    if not inspect.iscoroutinefunction(call):
        return False
    try:
        hints = typing.get_type_hints(call)
    except (NameError, TypeError):
        return False
    names = list(inspect.signature(call).parameters)
    return len(names) == 1 and hints.get(names[0]) is Request


def _source(name: str, hint: Any, default: Any, route: APIRoute) -> tuple[str, str, Any] | None:
    """``(source, key, default)`` of one endpoint parameter, or None."""
    if hint is Request:
        return (_REQUEST, "", None)
    if name in route.param_convertors:
        return (_PATH, name, None) if hint is str else None
    if isinstance(default, params.Header):
        if hint != str | None or default.default is not None:
            return None
        return (_HEADER, _header_name(name, default), None)
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        if len(extras) != 1 or default is not None:
            return None
        (declared,) = extras
        if isinstance(declared, params.Header) and base == str | None:
            return (_HEADER, _header_name(name, declared), None)
        if isinstance(declared, params.Query) and base == list[str] | None:
            return (_QUERY_LIST, declared.alias or name, None)
        return None
    if isinstance(default, params.Param) or default is inspect.Parameter.empty:
        return None  # declared with Query(...)/Path(...) options, or required: FastAPI's job
    if (hint == str | None and default is None) or (hint is str and isinstance(default, str)):
        return (_QUERY, name, default)
    return None


class FastPath:
    """ASGI middleware serving the compiled routes of ``routers``; see the module docstring.

    ``router`` is the app's own (``app.router``): the fast path matches its routes in their
    order, so a route FastAPI serves (the OpenAPI document, the static files, a route the
    mounting service added) keeps its place; only the endpoints of ``routers`` are compiled.
    ``exception_handlers`` and ``dependency_overrides`` are the app's own mappings, read at
    each request: handlers added later count, and while any dependency is overridden (a
    service's tests) every request goes to FastAPI, which applies the overrides.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routers: Sequence[APIRouter],
        router: Router,
        exception_handlers: Mapping[Any, Callable[..., Any]],
        dependency_overrides: Mapping[Any, Any],
    ) -> None:
        self.app = app
        self.router = router
        self.handlers = exception_handlers
        self.overrides = dependency_overrides
        own = {r.endpoint for mine in routers for r in mine.routes if isinstance(r, Route)}
        compiled: list[Compiled] = []
        for entry in _flattened(router.routes, routers):
            found = None
            if isinstance(entry, APIRoute) and entry.endpoint in own:
                found = compile_route(entry)
            compiled.append(found if found is not None else _fastapi_serves(entry))
        self.routes = tuple(compiled)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.overrides:
            path = _route_path(scope)
            method = scope["method"]
            for route in self.routes:
                if not path.startswith(route.prefix):
                    continue
                match = route.regex.match(path)
                if match is None or (route.methods is not None and method not in route.methods):
                    continue
                if route.endpoint is None:
                    break  # the first route that takes the request is FastAPI's to serve
                await self._serve(route, match, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: Compiled, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        assert route.endpoint is not None
        path_params = {k: route.convertors[k].convert(v) for k, v in match.groupdict().items()}
        # What Starlette's router and FastAPI's route put in the scope before the endpoint runs.
        scope.setdefault("router", self.router)
        scope["route"] = route.route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {**scope.get("path_params", {}), **path_params}
        request = Request(scope, receive)
        try:
            for dependency in route.dependencies:
                await dependency(request)
            kwargs: dict[str, Any] = {}
            query = request.query_params if scope.get("query_string") else None
            for name, source, key, default in route.arguments:
                if source is _REQUEST:
                    kwargs[name] = request
                elif source is _PATH:
                    kwargs[name] = path_params[key]
                elif source is _QUERY:
                    kwargs[name] = default if query is None else query.get(key, default)
                elif source is _QUERY_LIST:
                    kwargs[name] = (query.getlist(key) if query is not None else None) or default
                else:
                    kwargs[name] = request.headers.get(key, default)
            if route.body is not None:
                name, model = route.body
                value = await _body(request, model)
                if value is None:  # FastAPI answers what is wrong with it
                    await self.app(scope, _replay(await request.body(), receive), send)
                    return
                kwargs[name] = value
            response = await route.endpoint(**kwargs)
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The app's answer to ``exc`` (as Starlette's ExceptionMiddleware finds it); re-raised
        when the app has no handler for it."""
        handler = None
        if isinstance(exc, HTTPException):
            handler = self.handlers.get(exc.status_code)
        if handler is None:
            handler = next(
                (self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None
            )
        if handler is None:
            raise exc
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response


async def _body(request: Request, model: type[BaseModel]) -> BaseModel | None:
    """The JSON body as ``model``, or None when FastAPI must answer (missing, not JSON,
    invalid)."""
    kind = request.headers.get("content-type")
    if kind is None or not _JSON_TYPE.fullmatch(kind.strip()):
        return None
    raw = await request.body()
    if not raw:
        return None
    try:  # as FastAPI does it: Request.json(), then the model's validation
        return model.model_validate(json.loads(raw), from_attributes=True)
    except (ValueError, ValidationError):  # (a JSONDecodeError is a ValueError)
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` again, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``), as Starlette's router sees it
    (``starlette._utils.get_route_path``, a private function, written again here)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path
