"""Ops endpoints for services whose only HTTP surface is operational.

The worker and the notifier receive their work over Resonate, so they serve
just ``/healthz`` (the process is up), ``/readyz`` (it can do its job: the
readiness callback says why not) and ``/metrics`` (Prometheus). The gateway
mounts the same metrics app in its own FastAPI application.
:func:`run_resonate_worker` is the life of such a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from .resonate_client import ResonateLink

logger = logging.getLogger(__name__)

#: Returns None when ready, else a human-readable reason.
Readiness = Callable[[], Awaitable[str | None]]


def ops_app(service: str, readiness: Readiness, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "service": service})

    async def readyz(_: Request) -> JSONResponse:
        reason = await readiness()
        if reason is None:
            return JSONResponse({"status": "ready", "service": service})
        return JSONResponse(
            {"status": "not_ready", "service": service, "code": "not_ready", "message": reason},
            status_code=503,
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Mount("/metrics", app=make_asgi_app()),
            *extra_routes,
        ]
    )


async def serve_ops(
    service: str,
    readiness: Readiness,
    port: int,
    stop: asyncio.Event,
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Serve the ops endpoints on ``port`` until ``stop`` is set."""
    config = uvicorn.Config(
        ops_app(service, readiness, extra_routes), host="0.0.0.0", port=port, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    # The service owns signal handling (see stop_on_signals); uvicorn
    # would otherwise take SIGTERM for itself and re-raise it when done.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop; needs a running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_resonate_worker(
    service: str, link: ResonateLink, ops_port: int, extra_routes: Sequence[BaseRoute] = ()
) -> None:
    """Take work from Resonate and serve the ops endpoints until SIGTERM or SIGINT.

    Register every function and dependency on ``link.resonate`` first: work
    may arrive the moment it starts. Ready means the Resonate database
    answers with the expected schema.
    """
    stop = stop_on_signals()
    link.resonate.start()
    logger.info("%s started", service)
    try:
        await serve_ops(service, link.readiness, ops_port, stop, extra_routes)
    finally:
        logger.info("%s stopping", service)
        await link.resonate.stop()
