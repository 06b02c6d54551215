"""The HTTP face of the emulator: the Jobs API subset databricks-sdk uses, and a control API.

Jobs API (under ``/api/2.2``, ``/api/2.1`` and ``/api/2.0``, bearer token or
OAuth access token required): ``jobs/run-now``, ``jobs/runs/get``,
``jobs/runs/cancel``, ``jobs/runs/get-output``, ``jobs/get``,
``jobs/list``, each reading its parameters from the query string and a JSON
body alike (``params``), as declared in ``surface``. Answers, errors and
status codes follow the real API; the other Jobs endpoints answer 501 naming
themselves. See the package README for what is and is not modelled.

Unauthenticated: host metadata and OAuth discovery and tokens (``oauth``),
``/healthz``, the run page at ``/`` and the emulator-only control API under
``/emulator`` (fault plans, counters, runs, OAuth tokens, and the sink that
swallows dropped callbacks).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from databricks_emulator.errors import ApiError, invalid_parameter, not_modelled
from databricks_emulator.faults import FaultPlan
from databricks_emulator.jobspec import JOB_NAME, USER_NAME, job_settings
from databricks_emulator.oauth import IssuerDep, TokenIssuer, discovery
from databricks_emulator.params import read_call
from databricks_emulator.settings import Settings
from databricks_emulator.surface import (
    API_VERSIONS,
    JOBS_GET,
    JOBS_LIST,
    LEGACY_TASK_PARAMETERS,
    NOT_MODELLED_ENDPOINTS,
    RUN_NOW,
    RUNS_CANCEL,
    RUNS_GET,
    RUNS_GET_OUTPUT,
    Endpoint,
    NotModelledEndpoint,
)
from databricks_emulator.workspace import Workspace, tail

#: The most jobs one jobs/list page may ask for (and the default), per the reference.
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20


def _workspace(request: Request) -> Workspace:
    return request.app.state.workspace


WorkspaceDep = Annotated[Workspace, Depends(_workspace)]


def _authenticate(request: Request) -> None:
    """Bearer check, answering as the real API does: 401 without one, 403 for a bad one.

    The personal access token and any live OAuth access token are both accepted;
    an expired OAuth token is refused like any other bad token.
    """
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(
            401, 401, "Credential was not sent or was of an unsupported type for this API."
        )
    pat = request.app.state.workspace.settings.TOKEN
    tokens: TokenIssuer = request.app.state.tokens
    if not (hmac.compare_digest(presented.encode(), pat.encode()) or tokens.is_live(presented)):
        raise ApiError(
            403,
            403,
            "Invalid access token.",
            headers={"X-Databricks-Reason-Phrase": "Invalid access token."},
        )


def _version(request: Request, version: str) -> str:
    """The path's API version; one the Jobs API does not have is the real 404."""
    if version not in API_VERSIONS:
        raise StarletteHTTPException(404)
    return version


VersionDep = Annotated[str, Depends(_version)]


def reads(endpoint: Endpoint) -> Callable[[Request, str], Awaitable[dict[str, Any]]]:
    """A dependency giving ``endpoint``'s parameters, read as the real API reads them."""

    async def parameters(request: Request, version: VersionDep) -> dict[str, Any]:
        return await read_call(request, endpoint, version)

    return parameters


jobs = APIRouter(prefix="/api/{version}", dependencies=[Depends(_authenticate), Depends(_version)])


@jobs.post(f"/{RUN_NOW.path}")
async def run_now(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(RUN_NOW))]
) -> dict[str, int]:
    job_id = call["job_id"]
    workspace.check_job(job_id)
    legacy = [name for name in LEGACY_TASK_PARAMETERS if call.get(name)]
    if legacy:
        raise invalid_parameter(
            f"{', '.join(legacy)} cannot be used with job {job_id}: it defines job parameters; "
            "pass them as job_parameters."
        )
    token = call.get("idempotency_token")
    run = workspace.run_now(job_id, call.get("job_parameters") or {}, token or None)
    delay = workspace.faults.take_slow_response(run.pipeline_id)
    if delay:
        await asyncio.sleep(delay)
    return {"run_id": run.run_id, "number_in_job": run.run_id}


@jobs.get(f"/{RUNS_GET.path}")
async def get_run(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(RUNS_GET))]
) -> dict[str, Any]:
    run_id = call["run_id"]
    run = workspace.any_run(run_id)
    return run.job_run_json() if run.run_id == run_id else run.task_run_json()


@jobs.post(f"/{RUNS_CANCEL.path}")
async def cancel_run(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(RUNS_CANCEL))]
) -> dict[str, Any]:
    workspace.cancel(call["run_id"])
    return {}


@jobs.get(f"/{RUNS_GET_OUTPUT.path}")
async def get_run_output(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(RUNS_GET_OUTPUT))]
) -> dict[str, Any]:
    run_id = call["run_id"]
    run = workspace.any_run(run_id)
    if run.run_id == run_id:
        # The real API serves output per task run only, whatever the job's task count.
        raise invalid_parameter(
            "Retrieving the output of runs with multiple tasks is not supported. "
            "Please retrieve the output of each individual task run instead."
        )
    return run.output_json()


def _base_job_json(workspace: Workspace, *, with_tasks: bool) -> dict[str, Any]:
    """The job as ``jobs/list`` shows it (a ``BaseJob``: no ``run_as_user_name``)."""
    settings = workspace.settings
    job_settings_json = job_settings(
        timeout_seconds=settings.RUN_TIMEOUT_SECONDS,
        max_concurrent_runs=settings.MAX_CONCURRENT_RUNS,
    )
    if not with_tasks:
        del job_settings_json["tasks"]
    return {
        "job_id": settings.JOB_ID,
        "creator_user_name": USER_NAME,
        "created_time": workspace.created_time,
        "settings": job_settings_json,
    }


@jobs.get(f"/{JOBS_GET.path}")
async def get_job(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(JOBS_GET))]
) -> dict[str, Any]:
    workspace.check_job(call["job_id"])
    return {**_base_job_json(workspace, with_tasks=True), "run_as_user_name": USER_NAME}


@jobs.get(f"/{JOBS_LIST.path}")
async def list_jobs(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(JOBS_LIST))]
) -> dict[str, Any]:
    limit = call.get("limit", DEFAULT_LIST_LIMIT)
    offset = call.get("offset", 0)
    if not 0 < limit <= MAX_LIST_LIMIT:
        raise invalid_parameter(f"limit must be between 1 and {MAX_LIST_LIMIT}; got {limit}.")
    if offset < 0:
        raise invalid_parameter(f"offset must not be negative; got {offset}.")
    # The name filter is exact but case-insensitive, as the reference says.
    name = call.get("name")
    if offset > 0 or (name is not None and name.casefold() != JOB_NAME.casefold()):
        return {"has_more": False}
    # Without expand_tasks a workspace lists jobs without their tasks.
    return {
        "jobs": [_base_job_json(workspace, with_tasks=call.get("expand_tasks", False))],
        "has_more": False,
    }


def _refuse(endpoint: NotModelledEndpoint) -> Callable[[str], Awaitable[None]]:
    async def refuse(version: VersionDep) -> None:
        raise not_modelled(f"{endpoint.method} /api/{version}/{endpoint.path}", endpoint.why)

    return refuse


for _endpoint in NOT_MODELLED_ENDPOINTS:
    jobs.add_api_route(
        f"/{_endpoint.path}", _refuse(_endpoint), methods=[_endpoint.method], include_in_schema=False
    )


control = APIRouter(prefix="/emulator")


@control.get("/faults")
async def get_faults(workspace: WorkspaceDep) -> dict[str, Any]:
    registry = workspace.faults
    return {
        "default": registry.default.model_dump(),
        "pipelines": {pid: plan.model_dump() for pid, plan in registry.plans.items()},
    }


@control.put("/faults")
async def set_default_plan(plan: FaultPlan, workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.set_default(plan)
    return plan.model_dump()


@control.delete("/faults")
async def clear_plans(workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.clear_all()
    return {}


@control.put("/faults/pipelines/{pipeline_id}")
async def set_pipeline_plan(
    pipeline_id: str, plan: FaultPlan, workspace: WorkspaceDep
) -> dict[str, Any]:
    workspace.faults.set_plan(pipeline_id, plan)
    return plan.model_dump()


@control.delete("/faults/pipelines/{pipeline_id}")
async def clear_pipeline_plan(pipeline_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.clear_plan(pipeline_id)
    return {}


@control.get("/pipelines/{pipeline_id}")
async def pipeline_counters(pipeline_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    counters = workspace.faults.counters.get(pipeline_id)
    if counters is None:
        return {
            "pipeline_id": pipeline_id,
            "run_now_calls": 0,
            "run_now_rejected": 0,
            "runs": 0,
            "run_ids": [],
            "dropped_callbacks": 0,
        }
    return {
        "pipeline_id": pipeline_id,
        "run_now_calls": counters.run_now_calls,
        "run_now_rejected": counters.run_now_rejected,
        "runs": len(counters.run_ids),
        "run_ids": list(counters.run_ids),
        "dropped_callbacks": counters.dropped_callbacks,
    }


@control.get("/runs")
async def list_runs(workspace: WorkspaceDep, pipeline_id: str | None = None) -> dict[str, Any]:
    runs = [
        r for r in workspace.runs.values() if pipeline_id is None or r.pipeline_id == pipeline_id
    ]
    return {"runs": [run.summary_json() for run in runs]}


@control.get("/runs/{run_id}")
async def run_details(run_id: int, workspace: WorkspaceDep) -> dict[str, Any]:
    run = workspace.any_run(run_id)
    return {**run.summary_json(), "stdout": tail(run.stdout_path), "stderr": tail(run.stderr_path)}


@control.get("/oauth")
async def oauth_tokens(tokens: IssuerDep) -> dict[str, Any]:
    """How many OAuth tokens were issued and how many are live (a refresh issues one more)."""
    return {"client_id": tokens.client_id, "tokens_issued": tokens.issued, "live_tokens": tokens.live()}


@control.post("/oauth/expire")
async def expire_oauth_tokens(tokens: IssuerDep) -> dict[str, Any]:
    """End every live OAuth token now, as if its lifetime had passed."""
    return {"expired": tokens.expire_all()}


@control.post("/callback-sink/{run_id}")
async def swallow_callback(run_id: int, workspace: WorkspaceDep) -> dict[str, Any]:
    """Where a ``drop_callback`` run's callback goes: accepted, counted, never delivered."""
    run = workspace.any_run(run_id)
    workspace.faults.counters_for(run.pipeline_id).dropped_callbacks += 1
    return {"dropped": True}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The emulator app; settings come from the environment unless given."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with tempfile.TemporaryDirectory(prefix="databricks-emulator-") as run_root:
            app.state.workspace = Workspace(settings, Path(run_root))
            app.state.tokens = TokenIssuer(
                settings.CLIENT_ID, settings.CLIENT_SECRET, settings.OAUTH_TOKEN_LIFETIME_SECONDS
            )
            try:
                yield
            finally:
                await app.state.workspace.shutdown()

    app = FastAPI(
        title="Databricks Jobs API emulator",
        lifespan=lifespan,
        docs_url="/emulator/docs",
        openapi_url="/emulator/openapi.json",
        redoc_url=None,
    )
    app.include_router(jobs)
    app.include_router(discovery)
    app.include_router(control)

    @app.middleware("http")
    async def org_id_header(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers["x-databricks-org-id"] = settings.WORKSPACE_ID
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            message = f"No API found for '{request.method} {request.url.path}'"
            return JSONResponse(
                {"error_code": "ENDPOINT_NOT_FOUND", "message": message}, status_code=404
            )
        return JSONResponse(
            {"error_code": str(exc.status_code), "message": str(exc.detail)},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return JSONResponse(
            {"error_code": "INVALID_PARAMETER_VALUE", "message": problems}, status_code=400
        )

    @app.get("/healthz")
    async def healthz(workspace: WorkspaceDep) -> dict[str, Any]:
        active = sum(1 for run in workspace.runs.values() if not run.is_terminal)
        return {
            "status": "ok",
            "job_id": settings.JOB_ID,
            "runs": len(workspace.runs),
            "active_runs": active,
        }

    @app.get("/", response_class=HTMLResponse)
    async def run_page(workspace: WorkspaceDep) -> str:
        """Where run_page_url lands: every run, newest first (the URL's fragment names one)."""
        rows = "".join(
            f"<tr id='run-{run.run_id}'><td>{run.run_id}</td>"
            f"<td>{html.escape(run.pipeline_id)}</td>"
            f"<td>{run.life_cycle.value}</td><td>{(run.result_state or '')}</td>"
            f"<td>{html.escape(run.state_message)}</td></tr>"
            for run in sorted(workspace.runs.values(), key=lambda r: r.start_time, reverse=True)
        )
        return (
            "<!doctype html><title>Databricks emulator: runs</title>"
            f"<h1>{html.escape(JOB_NAME)} (job {settings.JOB_ID})</h1>"
            "<table><tr><th>run</th><th>pipeline</th><th>state</th><th>result</th><th>message</th></tr>"
            f"{rows}</table>"
        )

    return app
