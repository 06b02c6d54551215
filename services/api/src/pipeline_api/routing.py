"""How routes are made: who may call them unauthenticated, how big a body may be, how they are documented.

Every route authenticates (the app's default dependency, :func:`pipeline_api.deps.authenticate`)
unless it is made a :class:`PublicRoute`; every authenticated route names the scope it needs, or
``create_app`` refuses to build (:func:`refuse_routes_without_a_scope`). :class:`BodyLimit` bounds
every request body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import authenticate
from .domain.callbacks import CALLBACK_PATH
from .schemas import ErrorBody
from .settings import GatewaySettings

#: Every other request body is a few kilobytes (a start request's parameters
#: are capped at 8,000 bytes); anything far larger is refused unread.
REQUEST_MAX_BODY_BYTES = 64 * 1024

#: Who may call what, in the OpenAPI document.
AUTHENTICATED_RESPONSES = (401, 403)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route documents, each answered with an :class:`ErrorBody`."""
    return {status: {"model": ErrorBody} for status in statuses}


def documented_body(schema: str) -> dict[str, Any]:
    """A required JSON body the route reads itself, documented as if FastAPI had read it."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def include(app: FastAPI, router: APIRouter) -> None:
    """Add ``router``'s routes to ``app`` itself, as if each had been declared on it.

    Not ``app.include_router``: since FastAPI 0.165 that keeps the included
    routes behind a router of their own and applies the app's dependencies
    to them at request time, so a PublicRoute would authenticate again and
    ``app.routes`` would no longer list the routes that
    :func:`refuse_routes_without_a_scope` checks. Added here, each route is
    built on the app's router: the default authentication is applied (or
    taken off a PublicRoute) when the route is made, as for any other.
    """
    for route in router.routes:
        assert isinstance(route, APIRoute), f"{route} is not an API route"
        app.router.add_api_route(
            route.path,
            route.endpoint,
            route_class_override=type(route),
            methods=route.methods,
            name=route.name,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            operation_id=route.operation_id,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            openapi_extra=route.openapi_extra,
        )


def body_limit(settings: GatewaySettings) -> Callable[[str], int]:
    return lambda path: settings.CALLBACK_MAX_BODY_BYTES if path == CALLBACK_PATH else REQUEST_MAX_BODY_BYTES


class BodyLimit:
    """Refuse request bodies over a per-path size with 413, without reading them whole.

    A declared Content-Length over the limit is refused before any body is
    read; a chunked body is counted as it arrives and refused once it passes
    the limit. Every route gets a bound, so no request can make the gateway
    buffer an arbitrary amount of memory.

    Written here rather than taken from FastAPI's ``max_body_size`` (Starlette's
    RequestBodyLimitMiddleware): that one checks a declared Content-Length
    only when the route reads its body or starts its response, so a route that
    ignores its body (cancel) would act first and answer 413 after; checked
    with FastAPI 0.165. A rejected request must change nothing.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        too_large = {"code": "body_too_large", "message": f"the body exceeds {limit} bytes"}
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse(too_large, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=too_large)
            return message

        await self.app(scope, counted, send)


class PublicRoute(APIRoute):
    """A route anyone may call: the app's default authentication is taken off it.

    The exemption is visible where a route is made, and the set of public
    routes is pinned by a test; every other route authenticates.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["dependencies"] = [d for d in kwargs.get("dependencies") or () if d.dependency is not authenticate]
        super().__init__(path, endpoint, **kwargs)


class PlainRoute(PublicRoute):
    """A route FastAPI documents like any other but serves as a plain Starlette endpoint.

    The endpoint takes the Request and returns a finished Response, so the
    per-request work FastAPI adds around it (solving dependencies, even none,
    and serialising a response model) is skipped. Profiled in process, a
    repeated callback cost 121 us with injected dependencies, 101 without
    them and 78 through this class; /healthz costs 40. Errors still reach the
    app's exception handlers, and the body limit still applies.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def refuse_routes_without_a_scope(app: FastAPI, public: type[APIRoute] = PublicRoute) -> None:
    """Every authenticated route (any but a ``public`` one) must say which scope it needs: deny by default."""

    def scopes(dependant: Any) -> set[Any]:
        own = getattr(dependant.call, "required_scope", None)
        found = {own} if own is not None else set()
        for child in dependant.dependencies:
            found |= scopes(child)
        return found

    for route in app.routes:
        if isinstance(route, APIRoute) and not isinstance(route, public) and not scopes(route.dependant):
            raise RuntimeError(
                f"{sorted(route.methods)} {route.path} needs no scope: depend on one of deps' Starter, Reader, "
                "Canceller or pipeline dependencies, or make it a PublicRoute"
            )
