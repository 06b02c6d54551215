"""Whether the gateway is up and ready, for orchestrators and load balancers; its metrics are mounted by the app."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..deps import LinkDep
from ..errors import RETRY_LATER, error_response
from ..index.queries import PipelineIndex
from ..routing import PublicRoute, responses

router = APIRouter(tags=["health"])


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(link: LinkDep, request: Request) -> JSONResponse:
    reason = await link.readiness()
    index: PipelineIndex | None = request.app.state.index
    if reason is None and index is not None:
        reason = await index.problem()
    if reason is not None:
        return error_response(503, "not_ready", reason, headers=RETRY_LATER)
    return JSONResponse({"status": "ready"})


router.add_api_route(
    "/healthz", healthz, methods=["GET"], route_class_override=PublicRoute, summary="The gateway process is up"
)
router.add_api_route(
    "/readyz",
    readyz,
    methods=["GET"],
    route_class_override=PublicRoute,
    responses=responses(503),
    summary="The gateway can reach the Resonate database",
)
