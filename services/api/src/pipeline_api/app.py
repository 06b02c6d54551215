"""The gateway's FastAPI application, assembled: settings, lifespan, error handlers and one router per resource.

The lifespan builds the Resonate client, the pipeline index and the start limits; routes reach
them only through the dependencies in :mod:`.deps`. Every route requires authentication unless it
is made a :class:`~.routing.PublicRoute`. Every error a client sees is JSON with a stable ``code``
and a human ``message`` (:mod:`.errors`). The web page (:mod:`.ui`) is an app of its own, mounted at
``/ui``; the public listener's app is :func:`.listeners.create_callback_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import make_asgi_app
from starlette.requests import ClientDisconnect

from pipeline_shared import names
from pipeline_shared.resonate_client import ResonateLink, connect
from pipeline_shared.tracing import FASTAPI_TELEMETRY

from . import metrics
from .auth.authenticator import Authenticator
from .deps import authenticate
from .docs import add_documentation
from .domain.limits import DatabaseStartAdmission, RecipientDomains, StartAdmission, StartLimits
from .domain.pipelines import Pipelines
from .domain.snapshots import DatabaseSnapshots, PromiseSnapshots
from .errors import ERROR_HANDLERS, client_went_away, status_of
from .index.queries import PipelineIndex
from .routes import callbacks, health, index, jobs, pipelines
from .routing import BodyLimit, PublicRoute, body_limit, include, refuse_routes_without_a_scope
from .schedules import keep_schedules
from .schemas import AbandonRequest, ApprovalRequest, CallbackRequest, PipelineRequest, RepairRequest
from .settings import GatewaySettings
from .ui import PublicPage, create_ui_app
from .ui.sign_outs import DatabaseSignOuts, LocalSignOuts

#: Request bodies the routes read themselves (the callback's must be checked
#: as raw bytes, the start's is read after authorization), documented as if
#: FastAPI had read them.
DOCUMENTED_BODIES = {
    "CallbackRequest": CallbackRequest,
    "PipelineRequest": PipelineRequest,
    "RepairRequest": RepairRequest,
    "AbandonRequest": AbandonRequest,
    "ApprovalRequest": ApprovalRequest,
}


def create_app(
    settings: GatewaySettings,
    connect_resonate: Callable[[GatewaySettings], ResonateLink] | None = None,
    admission: StartAdmission | None = None,
    snapshots: PromiseSnapshots | None = None,
) -> FastAPI:
    """Build the gateway. ``connect_resonate``, ``admission`` (the start limits) and ``snapshots`` (how a
    pipeline's promises are read all at once, see :mod:`.domain.snapshots`) are test seams."""
    app = FastAPI(
        title="Databricks pipelines gateway",
        description="Start Databricks pipelines, follow them, cancel them; receives the notebook's signed callback.",
        version="1.0.0",
        lifespan=_lifespan(settings, connect_resonate, admission, snapshots),
        # Every route authenticates unless it is a PublicRoute (see deps).
        dependencies=[Depends(authenticate)],
        # Served by add_documentation from assets installed with the gateway, not from a CDN.
        docs_url=None,
        redoc_url=None,
        telemetry=FASTAPI_TELEMETRY,  # ours are the spans (see pipeline_shared.tracing)
    )
    add_documentation(app)
    app.state.settings = settings
    app.state.callback_signing_secrets = settings.callback_signing_secrets
    # Built here, not in the lifespan: it holds no connection, and a bad keys
    # file must stop the gateway before it serves anything.
    app.state.authenticator = Authenticator.from_settings(settings)
    app.state.recipient_domains = RecipientDomains.from_settings(settings)
    # Every startable entry's series from 0, so that the first start of one is an increase.
    for job in settings.catalogue.startable:
        metrics.PIPELINES_STARTED.labels(job=job)
    for decision in ("approve", "reject"):
        metrics.APPROVALS.labels(decision=decision)
    app.mount("/metrics", make_asgi_app())
    app.add_middleware(BodyLimit, limit_for=body_limit(settings))
    for error, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)
    for resource in (pipelines, callbacks, index, jobs, health):
        include(app, resource.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    refuse_routes_without_a_scope(app, PublicRoute)
    # The web page: an app of its own (session cookies, HTML refusals), held to the same rule.
    # Mounted here only, so the callback listener (create_callback_app) never serves it.
    ui = create_ui_app(app, status_of)
    ui.add_exception_handler(ClientDisconnect, client_went_away)
    refuse_routes_without_a_scope(ui, PublicPage)
    app.mount("/ui", ui)
    return app


def _lifespan(
    settings: GatewaySettings,
    connect_resonate: Callable[[GatewaySettings], ResonateLink] | None,
    admission: StartAdmission | None,
    snapshots: PromiseSnapshots | None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    def default_connect(s: GatewaySettings) -> ResonateLink:
        # Send-only: the gateway starts, reads and settles; it runs no work.
        return connect(s, names.API_GROUP, listen=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        link = (connect_resonate or default_connect)(settings)
        link.resonate.start()
        app.state.link = link
        # The index and the start limits live in the resonate-pg database; in process (tests) there is none.
        limits = admission
        if limits is None and link.database is not None:
            limits = DatabaseStartAdmission(link.database, StartLimits.from_settings(settings))
        # A pipeline run by its code is read all at once, from the database; in process, only a seam can.
        read_all = snapshots
        if read_all is None and link.database is not None:
            read_all = DatabaseSnapshots(link.database)
        app.state.pipelines = Pipelines(link.resonate.promises, settings, limits, read_all)
        index = PipelineIndex(link.database, settings) if link.database is not None else None
        app.state.index = index
        app.state.sign_outs = DatabaseSignOuts(link.database) if link.database is not None else LocalSignOuts()
        projector = asyncio.create_task(index.run(), name="pipeline-index") if index else None
        schedules = asyncio.create_task(keep_schedules(link, settings), name="pipeline-schedules")
        try:
            yield
        finally:
            schedules.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await schedules
            if projector is not None:
                projector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await projector
            await link.resonate.stop()

    return lifespan


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the bodies the routes read themselves (:data:`DOCUMENTED_BODIES`)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, model in DOCUMENTED_BODIES.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
        app.openapi_schema = document
    return app.openapi_schema
