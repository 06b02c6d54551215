"""One pipeline: start it, read where it stands, cancel it, and decide about a failed run (repair, abandon).

Who may do which is decided before a route runs (the pipeline dependencies of :mod:`pipeline_api.deps`);
a route calls the domain and writes the audit line of what it did.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from pipeline_shared.logs import pipeline_context

from ..auth.authenticator import audit_fields
from ..deps import (
    AuthorizedRepair,
    AuthorizedStart,
    CancellablePipeline,
    PipelinesDep,
    ReadablePipeline,
    ReadablePipelineByQuery,
)
from ..routing import AUTHENTICATED_RESPONSES, documented_body, responses
from ..schemas import LegacyRunStatus, PipelineStatus

logger = logging.getLogger("pipeline_api")

router = APIRouter(tags=["pipelines"])


@router.post(
    "/pipelines",
    status_code=202,
    response_model=PipelineStatus,
    responses={200: {"model": PipelineStatus, "description": "Already started with this request."}}
    | responses(*AUTHENTICATED_RESPONSES, 409, 413, 422, 503),
    summary="Start a pipeline",
    openapi_extra=documented_body("PipelineRequest"),
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


@router.get(
    "/pipelines/{pipeline_id}",
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 422, 503),
    summary="Where a pipeline stands",
)
async def get_pipeline(pipeline: ReadablePipeline, pipelines: PipelinesDep) -> PipelineStatus:
    return await pipelines.status(pipeline.root)


@router.post(
    "/pipelines/{pipeline_id}/cancel",
    status_code=202,
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
    summary="Cancel a pipeline and its Databricks run",
)
async def cancel_pipeline(pipeline: CancellablePipeline, pipelines: PipelinesDep) -> PipelineStatus:
    status = await pipelines.cancel(pipeline.root, pipeline.principal.id)
    with pipeline_context(pipeline.root.id):
        logger.info("pipeline cancelled", extra={"fields": audit_fields(pipeline.principal)})
    return status


@router.post(
    "/pipelines/{pipeline_id}/repair",
    status_code=202,
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
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


@router.post(
    "/pipelines/{pipeline_id}/abandon",
    status_code=202,
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
    summary="Abandon a failed pipeline: it ends failed, and its owner is told",
)
async def abandon_pipeline(pipeline: CancellablePipeline, pipelines: PipelinesDep) -> PipelineStatus:
    status = await pipelines.decide(pipeline.root, pipeline.principal.id, "abandon")
    with pipeline_context(pipeline.root.id):
        logger.info("pipeline abandoned", extra={"fields": audit_fields(pipeline.principal)})
    return status


@router.get(
    "/run",
    response_model=LegacyRunStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 422, 503),
    summary="Where a pipeline stands, in the original example's words",
    description="Kept for clients of the original example's `trigger.py`. Read-only: unlike the example, "
    "it never starts anything (a GET must be safe to repeat and to prefetch); start pipelines with "
    "`POST /pipelines`.",
)
async def legacy_run(pipeline: ReadablePipelineByQuery, pipelines: PipelinesDep) -> LegacyRunStatus:
    status = await pipelines.status(pipeline.root)
    done = status.state.is_final
    return LegacyRunStatus(id=status.id, state=status.state, message="I am done" if done else "working on it")
