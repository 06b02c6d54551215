"""The gateway's FastAPI application: routes, error mapping and lifespan.

The lifespan builds the Resonate client; routes reach it only through the
dependencies in :mod:`.deps`, which also decide who may do what: every route
requires authentication unless it is made a :class:`PublicRoute`. Every error
a client sees is JSON with a stable ``code`` and a human ``message``.

:func:`create_callback_app` is the public surface: the callback route alone,
for the listener a deployment exposes to the Databricks workspace
(``CALLBACK_PORT``); :class:`ByListener` serves both apps from one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline_shared import names
from pipeline_shared.catalogue import JOB_NAME_PATTERN
from pipeline_shared.errors import (
    AccessRefused,
    AuthenticationUnavailable,
    CallbackConflict,
    CallbackUnauthorized,
    CoordinatorUnavailable,
    IndexUnavailable,
    InsufficientScope,
    InvalidCallback,
    InvalidCredentials,
    InvalidListQuery,
    InvalidNotification,
    NotAwaitingRepair,
    NotificationsDisabled,
    NotificationUnauthorized,
    PipelineAlreadyFinished,
    PipelineAwaitingRepair,
    PipelineConflict,
    PipelineError,
    PipelineNotFound,
    StartLimited,
    StartRateLimited,
    TooManyWaiting,
    Unauthenticated,
    UnknownCallbackPromise,
)
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import PipelineState
from pipeline_shared.resonate_client import ResonateLink, connect

from . import metrics
from .auth.authenticator import Authenticator, audit_fields, challenge
from .deps import (
    AuthorizedRepair,
    AuthorizedStart,
    CancellablePipeline,
    CatalogueDep,
    IndexDep,
    LinkDep,
    PipelinesDep,
    ReadablePipeline,
    ReadablePipelineByQuery,
    Reader,
    authenticate,
    may_start,
)
from .docs import add_documentation
from .domain.callbacks import authenticate_callback
from .domain.limits import DatabaseStartAdmission, RecipientDomains, StartAdmission, StartLimits
from .domain.notifications import NOTIFICATION_PATH, authenticate_notification, parse_notification
from .domain.pipelines import Pipelines
from .index.queries import MAX_PAGE, ListQuery, PipelineIndex
from .routes.streams import StreamEvent, event_stream
from .schemas import (
    CallbackReceipt,
    CallbackRequest,
    ErrorBody,
    JobList,
    JobView,
    LegacyRunStatus,
    NotificationReceipt,
    ParameterView,
    PipelinePage,
    PipelineRequest,
    PipelineStatus,
    PipelineTimeline,
    RepairRequest,
)
from .settings import GatewaySettings
from .ui import PublicPage, create_ui_app
from .ui.sign_outs import DatabaseSignOuts, LocalSignOuts

logger = logging.getLogger("pipeline_api")

_STATUS_BY_ERROR: dict[type[PipelineError], int] = {
    PipelineNotFound: 404,
    PipelineConflict: 409,
    PipelineAlreadyFinished: 409,
    InvalidCallback: 422,
    CallbackUnauthorized: 401,
    UnknownCallbackPromise: 404,
    CallbackConflict: 409,
    CoordinatorUnavailable: 503,
    Unauthenticated: 401,
    InvalidCredentials: 401,
    InsufficientScope: 403,
    AuthenticationUnavailable: 503,
    NotificationsDisabled: 404,
    NotAwaitingRepair: 409,
    PipelineAwaitingRepair: 409,
    NotificationUnauthorized: 401,
    InvalidNotification: 422,
    IndexUnavailable: 503,
    InvalidListQuery: 422,
    StartRateLimited: 429,
    TooManyWaiting: 429,
}

CALLBACK_PATH = "/callbacks/databricks"

#: Told to clients with every 503 (the Resonate database or the identity
#: provider cannot be reached): about how long a database restart takes.
RETRY_AFTER_SECONDS = 5
RETRY_LATER = {"Retry-After": str(RETRY_AFTER_SECONDS)}

#: Every other request body is a few kilobytes (a start request's parameters
#: are capped at 8,000 bytes); anything far larger is refused unread.
REQUEST_MAX_BODY_BYTES = 64 * 1024

#: Request bodies the routes read themselves (the callback's must be checked
#: as raw bytes, the start's is read after authorization), documented as if
#: FastAPI had read them.
DOCUMENTED_BODIES = {
    "CallbackRequest": CallbackRequest,
    "PipelineRequest": PipelineRequest,
    "RepairRequest": RepairRequest,
}

#: Who may call what, in the OpenAPI document.
_AUTHENTICATED_RESPONSES = (401, 403)


def _error(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, details=details)
    return JSONResponse(jsonable_encoder(body, exclude_none=True), status_code=status, headers=headers)


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


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


def create_app(
    settings: GatewaySettings,
    connect_resonate: Callable[[GatewaySettings], ResonateLink] | None = None,
    admission: StartAdmission | None = None,
) -> FastAPI:
    """Build the gateway. ``connect_resonate`` and ``admission`` (the start limits) are test seams."""

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
        app.state.pipelines = Pipelines(link.resonate.promises, settings, limits)
        index = PipelineIndex(link.database, settings) if link.database is not None else None
        app.state.index = index
        app.state.sign_outs = DatabaseSignOuts(link.database) if link.database is not None else LocalSignOuts()
        projector = asyncio.create_task(index.run(), name="pipeline-index") if index else None
        try:
            yield
        finally:
            if projector is not None:
                projector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await projector
            await link.resonate.stop()

    app = FastAPI(
        title="Databricks pipelines gateway",
        description="Start Databricks pipelines, follow them, cancel them; receives the notebook's signed callback.",
        version="1.0.0",
        lifespan=lifespan,
        # Every route authenticates unless it is a PublicRoute (see deps).
        dependencies=[Depends(authenticate)],
        # Served by add_documentation from assets installed with the gateway, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    add_documentation(app)
    app.state.settings = settings
    app.state.callback_signing_secrets = settings.callback_signing_secrets
    # Built here, not in the lifespan: it holds no connection, and a bad keys
    # file must stop the gateway before it serves anything.
    app.state.authenticator = Authenticator.from_settings(settings)
    app.state.recipient_domains = RecipientDomains.from_settings(settings)
    # Every job's series from 0, so that the first start of a job is an increase.
    for job in settings.catalogue.jobs:
        metrics.PIPELINES_STARTED.labels(job=job)
    app.mount("/metrics", make_asgi_app())
    app.add_middleware(BodyLimit, limit_for=_body_limit(settings))
    for error, handler in _ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)

    @app.post(
        "/pipelines",
        status_code=202,
        response_model=PipelineStatus,
        responses={200: {"model": PipelineStatus, "description": "Already started with this request."}}
        | _responses(*_AUTHENTICATED_RESPONSES, 409, 413, 422, 503),
        summary="Start a pipeline",
        openapi_extra=_documented_body("PipelineRequest"),
    )
    async def start_pipeline(start: AuthorizedStart, pipelines: PipelinesDep, response: Response) -> PipelineStatus:
        status, created = await pipelines.start(start)
        with pipeline_context(status.id):
            logger.info(
                "pipeline started" if created else "pipeline start repeated",
                extra={"fields": audit_fields(start.principal)},
            )
        response.status_code = 202 if created else 200
        response.headers["Location"] = f"/pipelines/{status.id}"
        return status

    @app.get(
        "/pipelines/{pipeline_id}",
        response_model=PipelineStatus,
        responses=_responses(*_AUTHENTICATED_RESPONSES, 404, 422, 503),
        summary="Where a pipeline stands",
    )
    async def get_pipeline(pipeline: ReadablePipeline, pipelines: PipelinesDep) -> PipelineStatus:
        return await pipelines.status(pipeline.root)

    @app.post(
        "/pipelines/{pipeline_id}/cancel",
        status_code=202,
        response_model=PipelineStatus,
        responses=_responses(*_AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
        summary="Cancel a pipeline and its Databricks run",
    )
    async def cancel_pipeline(pipeline: CancellablePipeline, pipelines: PipelinesDep) -> PipelineStatus:
        status = await pipelines.cancel(pipeline.root, pipeline.principal.id)
        with pipeline_context(pipeline.root.id):
            logger.info("pipeline cancelled", extra={"fields": audit_fields(pipeline.principal)})
        return status

    app.router.add_api_route(
        CALLBACK_PATH,
        databricks_callback,
        methods=["POST"],
        route_class_override=PlainRoute,
        response_model=CallbackReceipt,
        responses=_responses(401, 404, 409, 413, 422, 503),
        summary="The notebook's signed callback",
        description="Signed with Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) "
        "using the key the pipeline's run received. At most 5 minutes of clock skew. Repeating the "
        "recorded outcome is harmless (200); contradicting it is a 409. Needs no other credentials.",
        # The body is read raw (the signature covers its exact bytes).
        openapi_extra=_documented_body("CallbackRequest"),
    )

    @app.post(
        "/pipelines/{pipeline_id}/repair",
        status_code=202,
        response_model=PipelineStatus,
        responses=_responses(*_AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
        summary="Repair a failed pipeline: rerun its run's failed tasks",
        description="For a pipeline `awaiting_repair`: Databricks reruns only the failed tasks (and those depending "
        "on them) of the same run, and the pipeline goes back to waiting. Optional body "
        '`{"parameters": {...}}`: parameters to change, checked as at start. 409 when it is not awaiting repair.',
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RepairRequest"}}},
            }
        },
    )
    async def repair_pipeline(repair: AuthorizedRepair, pipelines: PipelinesDep) -> PipelineStatus:
        owned = repair.pipeline
        status = await pipelines.decide(owned.root, owned.principal.id, "repair", repair.parameters)
        with pipeline_context(owned.root.id):
            logger.info("pipeline repair asked for", extra={"fields": audit_fields(owned.principal)})
        return status

    @app.post(
        "/pipelines/{pipeline_id}/abandon",
        status_code=202,
        response_model=PipelineStatus,
        responses=_responses(*_AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
        summary="Abandon a failed pipeline: it ends failed, and its owner is told",
    )
    async def abandon_pipeline(pipeline: CancellablePipeline, pipelines: PipelinesDep) -> PipelineStatus:
        status = await pipelines.decide(pipeline.root, pipeline.principal.id, "abandon")
        with pipeline_context(pipeline.root.id):
            logger.info("pipeline abandoned", extra={"fields": audit_fields(pipeline.principal)})
        return status

    @app.get(
        "/pipelines",
        response_model=PipelinePage,
        responses={200: {"content": {"text/event-stream": {}}, "description": "With follow=true: the stream."}}
        | _responses(*_AUTHENTICATED_RESPONSES, 422, 503),
        summary="Your pipelines, newest first (all of them, for admin)",
        description="Filtered by state (repeatable), job and creation time; one page at a time (`limit`, "
        "`cursor` from the previous page's `next_cursor`). With `follow=true` (no paging): a stream of "
        "Server-Sent Events, `event: pipeline` with the pipeline's summary each time one that matches "
        "changes; it resumes after `Last-Event-ID`. Read from the pipeline index, which trails Resonate "
        "by the time a projection takes (see README).",
    )
    async def list_pipelines(
        principal: Reader,
        index: IndexDep,
        state: Annotated[list[PipelineState] | None, Query(description="Only pipelines in this state.")] = None,
        job: Annotated[str | None, Query(pattern=JOB_NAME_PATTERN, description="Only runs of this job.")] = None,
        created_after: Annotated[datetime | None, Query(description="Created at or after (RFC 3339).")] = None,
        created_before: Annotated[datetime | None, Query(description="Created before (RFC 3339).")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
        follow: bool = False,
        last_event_id: Annotated[str | None, Header(max_length=40)] = None,
    ) -> Any:
        query = ListQuery(
            states=frozenset(state or ()),
            job=job,
            created_after=_aware(created_after, "created_after"),
            created_before=_aware(created_before, "created_before"),
            limit=limit,
            cursor=cursor,
        )
        if not follow:
            return await index.page(principal, query)
        after = _stream_position(last_event_id)

        async def changes() -> AsyncIterator[StreamEvent]:
            async for version, summary in index.follow_list(principal, query, after):
                yield StreamEvent("pipeline", summary, id=str(version))

        return event_stream(changes())

    @app.get(
        "/pipelines/{pipeline_id}/events",
        response_model=PipelineTimeline,
        responses={200: {"content": {"text/event-stream": {}}, "description": "With follow=true: the stream."}}
        | _responses(*_AUTHENTICATED_RESPONSES, 404, 422, 503),
        summary="What happened to a pipeline, in order",
        description="Started (by whom), the run triggered, Databricks states seen, callbacks and notifications "
        "received, repairs, emails delivered or refused, finished; each with its time. With `follow=true`: "
        "every event so far and then each new one as Server-Sent Events (`event: timeline`), then "
        "`event: end` once the pipeline has finished; it resumes after `Last-Event-ID`.",
    )
    async def pipeline_events(
        pipeline: ReadablePipeline,
        index: IndexDep,
        pipelines: PipelinesDep,
        follow: bool = False,
        last_event_id: Annotated[str | None, Header(max_length=40)] = None,
    ) -> Any:
        pipeline_id = pipeline.root.id
        if not follow:
            events = await index.timeline(pipeline_id)
            summary = await index.summary(pipeline_id)
            state = summary.state if summary else (await pipelines.status(pipeline.root)).state
            return PipelineTimeline(pipeline_id=pipeline_id, state=state, events=events)
        after = _stream_position(last_event_id) or 0

        async def timeline() -> AsyncIterator[StreamEvent]:
            position = after
            async for event in index.follow_timeline(pipeline_id, after):
                # The highest seq sent so far, not this event's: events come in time order, and
                # resuming after the highest one repeats none.
                position = max(position, event.seq)
                yield StreamEvent("timeline", event, id=str(position))
            summary = await index.summary(pipeline_id)
            yield StreamEvent("end", {"pipeline_id": pipeline_id, "state": summary.state if summary else None})

        return event_stream(timeline())

    app.router.add_api_route(
        NOTIFICATION_PATH,
        databricks_notification,
        methods=["POST"],
        route_class_override=PlainRoute,
        status_code=202,
        response_model=NotificationReceipt,
        responses=_responses(401, 404, 413, 422, 503),
        summary="A Databricks job notification (webhook destination)",
        description="Sent by a Databricks notification destination (generic webhook, HTTP basic auth) for jobs "
        "whose catalogue completion is `notification`. A hint only: it prompts one read of the run from the Jobs "
        "API, at most one per pipeline and event per NOTIFICATION_CHECK_WINDOW_SECONDS; the run's state alone "
        "decides the outcome. 202 whatever was done (`outcome`).",
    )

    @app.get(
        "/jobs",
        response_model=JobList,
        responses=_responses(*_AUTHENTICATED_RESPONSES),
        summary="The catalogue's jobs you may start, with their parameters",
    )
    async def list_jobs(principal: Reader, catalogue: CatalogueDep) -> JobList:
        return JobList(
            jobs=[
                JobView(
                    name=job.name,
                    title=job.title,
                    description=job.description,
                    default=job.name == catalogue.default,
                    completion=job.completion,
                    default_timeout_seconds=job.default_timeout_seconds,
                    max_timeout_seconds=job.max_timeout_seconds,
                    parameters=[
                        ParameterView(
                            name=name,
                            description=parameter.description,
                            required=parameter.required,
                            default=parameter.default,
                            pattern=parameter.pattern,
                            allowed=list(parameter.allowed) if parameter.allowed else None,
                            max_length=parameter.max_length,
                            url=parameter.url,
                            path=parameter.path,
                            integer=parameter.integer,
                            allow_empty=parameter.allow_empty,
                        )
                        for name, parameter in job.parameters.items()
                    ],
                )
                for job in catalogue.jobs.values()
                if may_start(principal, job)
            ]
        )

    @app.get(
        "/run",
        response_model=LegacyRunStatus,
        responses=_responses(*_AUTHENTICATED_RESPONSES, 404, 422, 503),
        summary="Where a pipeline stands, in the original example's words",
        description="Kept for clients of the original example's `trigger.py`. Read-only: unlike the example, "
        "it never starts anything (a GET must be safe to repeat and to prefetch); start pipelines with "
        "`POST /pipelines`.",
    )
    async def legacy_run(pipeline: ReadablePipelineByQuery, pipelines: PipelinesDep) -> LegacyRunStatus:
        status = await pipelines.status(pipeline.root)
        done = status.state.is_final
        return LegacyRunStatus(id=status.id, state=status.state, message="I am done" if done else "working on it")

    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def readyz(link: LinkDep, request: Request) -> JSONResponse:
        reason = await link.readiness()
        index: PipelineIndex | None = request.app.state.index
        if reason is None and index is not None:
            reason = await index.problem()
        if reason is not None:
            return _error(503, "not_ready", reason, headers=RETRY_LATER)
        return JSONResponse({"status": "ready"})

    app.router.add_api_route(
        "/healthz", healthz, methods=["GET"], route_class_override=PublicRoute, summary="The gateway process is up"
    )
    app.router.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        route_class_override=PublicRoute,
        responses=_responses(503),
        summary="The gateway can reach the Resonate database",
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, model in DOCUMENTED_BODIES.items():
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[name] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    _refuse_routes_without_a_scope(app, PublicRoute)
    # The web page: an app of its own (session cookies, HTML refusals), held to the same rule.
    # Mounted here only, so the callback listener (create_callback_app) never serves it.
    ui = create_ui_app(app, lambda exc: _STATUS_BY_ERROR.get(type(exc), 500))
    ui.add_exception_handler(ClientDisconnect, _client_went_away)
    _refuse_routes_without_a_scope(ui, PublicPage)
    app.mount("/ui", ui)
    return app


def _aware(moment: datetime | None, name: str) -> datetime | None:
    """A filter's time, which must say its offset: a naive time means a different instant to every reader."""
    if moment is not None and moment.utcoffset() is None:
        raise InvalidListQuery(f"{name}: give the time with its offset, e.g. 2026-12-01T09:00:00Z")
    return moment


def _stream_position(last_event_id: str | None) -> int | None:
    """Where a reconnecting stream resumes: the Last-Event-ID it was sent."""
    if last_event_id is None or not last_event_id.strip():
        return None
    if not last_event_id.strip().isdigit():
        raise InvalidListQuery("Last-Event-ID: not an id this gateway sent (they are whole numbers)")
    return int(last_event_id)


def _documented_body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def _body_limit(settings: GatewaySettings) -> Callable[[str], int]:
    return lambda path: settings.CALLBACK_MAX_BODY_BYTES if path == CALLBACK_PATH else REQUEST_MAX_BODY_BYTES


def _refuse_routes_without_a_scope(app: FastAPI, public: type[APIRoute] = PublicRoute) -> None:
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


# ── what both apps serve ─────────────────────────────────────────────────────


async def databricks_callback(request: Request) -> Response:
    pipelines: Pipelines = request.app.state.pipelines
    body = await request.body()  # bounded by BodyLimit
    callback = authenticate_callback(body, request.headers, request.app.state.callback_signing_secrets)
    pipeline_id, settled = await pipelines.settle_from_callback(callback)
    outcome = "accepted" if settled else "duplicate"
    metrics.CALLBACKS.labels(outcome=outcome).inc()
    with pipeline_context(pipeline_id):
        # A repeat is routine (notebook retries, replays) and can come in bulk.
        level = logging.INFO if settled else logging.DEBUG
        logger.log(level, "callback %s", outcome, extra={"fields": {"status": callback.status}})
    # Built directly: this is the hot path, and the document is CallbackReceipt's.
    return JSONResponse({"promise_id": callback.promise_id, "pipeline_id": pipeline_id, "outcome": outcome})


async def databricks_notification(request: Request) -> Response:
    authenticate_notification(request.headers.get("authorization"), request.app.state.settings)
    notification = parse_notification(await request.body())  # bounded by BodyLimit
    pipelines: Pipelines = request.app.state.pipelines
    outcome = await pipelines.check_on_notification(notification.run_id, notification.event)
    metrics.NOTIFICATIONS.labels(outcome=outcome).inc()
    logger.info(
        "Databricks notification: %s",
        outcome,
        extra={"fields": {"event_type": notification.event_type, "run_id": notification.run_id}},
    )
    return JSONResponse({"run_id": notification.run_id, "outcome": outcome}, status_code=202)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PipelineError)
    status = _STATUS_BY_ERROR.get(type(exc), 500)
    if request.url.path == CALLBACK_PATH:
        metrics.CALLBACK_REJECTIONS.labels(reason=exc.code).inc()
        if status == 401:
            logger.info("callback refused", extra={"fields": {"code": exc.code, "path": request.url.path}})
    if status >= 500:
        logger.error("request failed: %s", exc.message)
    headers = challenge(exc) if isinstance(exc, AccessRefused) else None
    if isinstance(exc, NotificationUnauthorized):
        headers = {"WWW-Authenticate": 'Basic realm="databricks-notifications"'}
    if status == 503:
        # The database or the identity provider is away; say when to try again.
        headers = (headers or {}) | RETRY_LATER
    if isinstance(exc, StartLimited):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    return _error(status, exc.code, exc.message, exc.details, headers=headers)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return _error(422, "invalid_request", f"{where}: {first['msg']}", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, dict):
        if request.url.path == CALLBACK_PATH:
            metrics.CALLBACK_REJECTIONS.labels(reason=exc.detail["code"]).inc()
        return _error(exc.status_code, exc.detail["code"], exc.detail["message"])
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode at all (not UTF-8,
        # say); to a client that is invalid input like any other.
        return _error(422, "invalid_request", f"body: {exc.detail} (send UTF-8 JSON)")
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    # Keep the exception's headers: a 405 must say what is Allowed.
    return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _too_deep(_: Request, exc: Exception) -> JSONResponse:
    return _error(422, "invalid_request", "body: the JSON is nested too deeply")


async def _client_went_away(request: Request, _: Exception) -> JSONResponse:
    """A client that closed its connection before sending its whole body: routine on a public listener.

    One INFO line, no traceback; nothing was read, so nothing was done. The
    answer goes nowhere (uvicorn drops what is sent on a closed connection).
    """
    logger.info(
        "the client went away before sending its whole request; nothing was done",
        extra={"fields": {"method": request.method, "path": request.url.path}},
    )
    return _error(400, "client_disconnected", "the request body ended before it was complete")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error")
    return _error(500, "internal_error", "the gateway failed unexpectedly; the request may be retried")


_ERROR_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]] = {
    PipelineError: _domain_error,
    RequestValidationError: _invalid_request,
    StarletteHTTPException: _http_error,
    RecursionError: _too_deep,
    ClientDisconnect: _client_went_away,
    Exception: _unexpected,
}


# ── the public surface ───────────────────────────────────────────────────────


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
        middleware=[Middleware(BodyLimit, limit_for=_body_limit(settings))],
        exception_handlers=dict(_ERROR_HANDLERS),
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
