"""One pipeline: start it, read where it stands, cancel it, decide about a failed run (repair, abandon) or at a gate.

Who may do which is decided before a route runs (the pipeline dependencies of :mod:`pipeline_api.deps`);
a route calls the domain and writes the audit line of what it did.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from pipeline_shared.errors import MayNotDecide
from pipeline_shared.logs import pipeline_context

from ..auth.authenticator import audit_fields, audit_refusal
from ..deps import (
    AuthorizedAbandon,
    AuthorizedApproval,
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
    '`{"parameters": {...}}`: parameters to change, checked as at start. 409 when it is not awaiting repair. '
    'For a pipeline run by its code, `"step"` (id or name) names the job step when several await repair '
    "(409 `step_ambiguous` otherwise).",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RepairRequest"}}},
        }
    },
)
async def repair_pipeline(repair: AuthorizedRepair, pipelines: PipelinesDep) -> PipelineStatus:
    owned = repair.pipeline
    status = await pipelines.decide(owned.root, owned.principal.id, "repair", repair.parameters, repair.step)
    with pipeline_context(owned.root.id):
        logger.info("pipeline repair asked for", extra={"fields": audit_fields(owned.principal) | _step(repair.step)})
    return status


@router.post(
    "/pipelines/{pipeline_id}/abandon",
    status_code=202,
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
    summary="Abandon a failed pipeline: it ends failed, and its owner is told",
    description='Optional body `{"step": ...}`: for a pipeline run by its code, the job step (id or name) to '
    "abandon when several await repair (409 `step_ambiguous` otherwise).",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AbandonRequest"}}},
        }
    },
)
async def abandon_pipeline(abandon: AuthorizedAbandon, pipelines: PipelinesDep) -> PipelineStatus:
    pipeline = abandon.pipeline
    status = await pipelines.decide(pipeline.root, pipeline.principal.id, "abandon", step=abandon.step)
    with pipeline_context(pipeline.root.id):
        logger.info("pipeline abandoned", extra={"fields": audit_fields(pipeline.principal) | _step(abandon.step)})
    return status


_DECISION_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApprovalRequest"}}},
    }
}
_DECISION_DESCRIPTION = (
    "For a pipeline `awaiting_approval`. Optional body "
    '`{"gate": "<step id or name>", "comment": "..."}`; the gate may be omitted when exactly one is open. '
    "Who may decide: a holder of one of the scopes the gate names (`approve` by default), or an admin; "
    "403 `may_not_decide` otherwise. The first decision stands: 409 `not_awaiting_approval` when no gate is "
    "open, that one was decided already or its deadline passed; 409 `gate_ambiguous` when several are open "
    "and none is named."
)


@router.post(
    "/pipelines/{pipeline_id}/approve",
    status_code=202,
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
    summary="Approve at an approval gate: the pipeline goes on",
    description=_DECISION_DESCRIPTION,
    openapi_extra=_DECISION_BODY,
)
async def approve_pipeline(approval: AuthorizedApproval, pipelines: PipelinesDep, request: Request) -> PipelineStatus:
    return await _decide_gate(approval, pipelines, request, "approve")


@router.post(
    "/pipelines/{pipeline_id}/reject",
    status_code=202,
    response_model=PipelineStatus,
    responses=responses(*AUTHENTICATED_RESPONSES, 404, 409, 422, 503),
    summary="Reject at an approval gate: the step fails, as the pipeline's code says",
    description=_DECISION_DESCRIPTION,
    openapi_extra=_DECISION_BODY,
)
async def reject_pipeline(approval: AuthorizedApproval, pipelines: PipelinesDep, request: Request) -> PipelineStatus:
    return await _decide_gate(approval, pipelines, request, "reject")


async def _decide_gate(
    approval: AuthorizedApproval, pipelines: PipelinesDep, request: Request, action: str
) -> PipelineStatus:
    owned = approval.pipeline
    try:
        status = await pipelines.decide_gate(owned.root, owned.principal, action, approval.gate, approval.comment)
    except MayNotDecide as refusal:
        audit_refusal(request, refusal, owned.principal, "holds none of the gate's scopes")
        raise
    with pipeline_context(owned.root.id):
        fields = (
            audit_fields(owned.principal) | {"decision": action} | ({"gate": approval.gate} if approval.gate else {})
        )
        logger.info("pipeline gate decided", extra={"fields": fields})
    return status


def _step(step: str | None) -> dict[str, str]:
    """The audit line's field naming the step a decision named, if any."""
    return {"step": step} if step is not None else {}


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
