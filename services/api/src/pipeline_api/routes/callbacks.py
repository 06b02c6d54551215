"""What Databricks sends: the notebook's signed callback and the job notifications (a webhook destination).

These are the public listener's routes (``CALLBACK_PORT``, :func:`pipeline_api.app.create_callback_app`),
served on the gateway's port too. They need no credentials of the gateway's: the callback is signed
per pipeline, a notification carries HTTP basic auth. Both are plain Starlette endpoints
(:class:`~pipeline_api.routing.PlainRoute`): they are the hottest routes.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from pipeline_shared.logs import pipeline_context

from .. import metrics
from ..domain.callbacks import CALLBACK_PATH, authenticate_callback
from ..domain.notifications import NOTIFICATION_PATH, authenticate_notification, parse_notification
from ..domain.pipelines import Pipelines
from ..routing import PlainRoute, documented_body, responses
from ..schemas import CallbackReceipt, NotificationReceipt

logger = logging.getLogger("pipeline_api")

router = APIRouter(tags=["databricks"])


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


router.add_api_route(
    CALLBACK_PATH,
    databricks_callback,
    methods=["POST"],
    route_class_override=PlainRoute,
    response_model=CallbackReceipt,
    responses=responses(401, 404, 409, 413, 422, 503),
    summary="The notebook's signed callback",
    description="Signed with Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) "
    "using the key the pipeline's run received. At most 5 minutes of clock skew. Repeating the "
    "recorded outcome is harmless (200); contradicting it is a 409. Needs no other credentials.",
    # The body is read raw (the signature covers its exact bytes).
    openapi_extra=documented_body("CallbackRequest"),
)
router.add_api_route(
    NOTIFICATION_PATH,
    databricks_notification,
    methods=["POST"],
    route_class_override=PlainRoute,
    status_code=202,
    response_model=NotificationReceipt,
    responses=responses(401, 404, 413, 422, 503),
    summary="A Databricks job notification (webhook destination)",
    description="Sent by a Databricks notification destination (generic webhook, HTTP basic auth) for jobs "
    "whose catalogue completion is `notification`. A hint only: it prompts one read of the run from the Jobs "
    "API, at most one per pipeline and event per NOTIFICATION_CHECK_WINDOW_SECONDS; the run's state alone "
    "decides the outcome. 202 whatever was done (`outcome`).",
)
