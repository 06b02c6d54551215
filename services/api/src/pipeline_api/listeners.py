"""The public listener: the callback and notification routes alone, for the port a deployment exposes
to the Databricks workspace (``CALLBACK_PORT``), and :class:`ByListener`, which serves both apps from
one process.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .domain.callbacks import CALLBACK_PATH
from .domain.notifications import NOTIFICATION_PATH
from .errors import ERROR_HANDLERS
from .routes.callbacks import databricks_callback, databricks_notification
from .routing import BodyLimit, body_limit
from .settings import GatewaySettings


def create_callback_app(gateway: FastAPI) -> Starlette:
    """The callback and notification routes and nothing else: no docs, no OpenAPI, no other route (404 JSON).

    It shares the gateway's state, so one Resonate link (built by the
    gateway's lifespan) and one cache of settled callbacks serve both.
    """
    settings: GatewaySettings = gateway.state.settings
    app = Starlette(
        routes=[
            Route(CALLBACK_PATH, databricks_callback, methods=["POST"]),
            Route(NOTIFICATION_PATH, databricks_notification, methods=["POST"]),
        ],
        middleware=[Middleware(BodyLimit, limit_for=body_limit(settings))],
        exception_handlers=dict(ERROR_HANDLERS),
    )
    app.state = gateway.state
    return app


class ByListener:
    """Serve the callback-only app to connections on ``callback_port``, the gateway to all others.

    Told apart by the local port the connection came in on (the ASGI
    ``server`` of the socket, which no client can change). The lifespan is the
    gateway's, which builds what both share.
    """

    def __init__(self, gateway: ASGIApp, callback_app: ASGIApp, callback_port: int) -> None:
        self.gateway = gateway
        self.callback_app = callback_app
        self.callback_port = callback_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or (None, None)
        if scope["type"] != "lifespan" and server[1] == self.callback_port:
            await self.callback_app(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)
