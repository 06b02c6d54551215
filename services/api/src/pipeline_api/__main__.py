"""Run the gateway: ``python -m pipeline_api``.

One process, one event loop, one Resonate link; with ``CALLBACK_PORT`` set, two
listeners: ``PORT`` serves the whole gateway, ``CALLBACK_PORT`` the callback
route alone (see app.create_callback_app), so a deployment can publish only
the latter to the Databricks workspace. Each listener has its own bounds on
what a connection may cost (see connections).
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.types import ASGIApp

from pipeline_shared.logs import configure_logging
from pipeline_shared.settings import load_settings
from pipeline_shared.tracing import configure_tracing

from .app import create_app
from .connections import limited_protocol, listener_limits
from .listeners import ByListener, create_callback_app
from .settings import GatewaySettings

HOST = "0.0.0.0"


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("api", settings.LOG_LEVEL)
    configure_tracing("pipeline-api")  # off unless an OTEL_EXPORTER_OTLP_*ENDPOINT is set
    gateway = create_app(settings)
    protocol = limited_protocol(listener_limits(settings))
    if settings.CALLBACK_PORT is None:
        uvicorn.run(gateway, host=HOST, port=settings.PORT, log_config=None, proxy_headers=True, http=protocol)
        return
    app = ByListener(gateway, create_callback_app(gateway), settings.CALLBACK_PORT)
    config = uvicorn.Config(app, host=HOST, port=settings.PORT, log_config=None, proxy_headers=True, http=protocol)
    # One server on both sockets: one lifespan, one set of signal handlers.
    sockets = [config.bind_socket(), listening_socket(app, settings.CALLBACK_PORT)]
    uvicorn.Server(config).run(sockets=sockets)


def listening_socket(app: ASGIApp, port: int) -> socket.socket:
    """A socket bound to ``port`` for the one server to serve too.

    Through a uvicorn Config with ``log_config=None`` like the server's own:
    with its default, making the Config reconfigures logging, which turned on
    uvicorn's plain-text access lines (every path with its query string, so
    a key sent as ``?access_token=`` was written out) and took uvicorn's
    lines out of the JSON log.
    """
    return uvicorn.Config(app, host=HOST, port=port, log_config=None).bind_socket()


if __name__ == "__main__":
    main()
