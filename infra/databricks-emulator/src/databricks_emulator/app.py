"""The HTTP face of the emulator: the Jobs API subset databricks-sdk uses, and a control API.

Jobs API (under ``/api/2.2``, ``/api/2.1`` and ``/api/2.0``, bearer token or
OAuth access token required): ``jobs/run-now``, ``jobs/runs/get``,
``jobs/runs/cancel``, ``jobs/runs/repair``, ``jobs/runs/get-output``, ``jobs/get``,
``jobs/list``, ``jobs/runs/list`` (``run_list``), each reading its parameters from the query string and a JSON
body alike (``params``), as declared in ``surface``. Answers, errors and
status codes follow the real API; the other Jobs endpoints answer 501 naming
themselves. See the package README for what is and is not modelled.

The emulator-only control API under ``/emulator`` (fault plans, counters,
runs and their tasks, webhook deliveries, OAuth tokens) needs the same token:
it changes how runs fail and shows every run, and the notebooks it runs share
its host, so whatever a notebook can be made to fetch must not reach it
without a credential. Its listings never show a run's callback signing key
(``REDACTED_PARAMETERS``): a key settles its pipeline, and nothing a run can
read may hand out another pipeline's.

Unauthenticated: host metadata and OAuth discovery and tokens (``oauth``),
``/healthz``, the run page at ``/`` (run ids, states and messages only), and
the sink that swallows dropped callbacks (``/emulator/callback-sink``: where
a notebook posts, with nothing to hand out).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from databricks_emulator import run_list, run_page
from databricks_emulator.bundle import Bundle, BundleError, load_bundle
from databricks_emulator.driver import tail
from databricks_emulator.errors import ApiError, invalid_parameter, not_modelled
from databricks_emulator.faults import FaultPlan
from databricks_emulator.jobspec import PAGED_JOB_ARRAYS, USER_NAME, JobSpec
from databricks_emulator.notifications import Notifier
from databricks_emulator.oauth import IssuerDep, TokenIssuer, discovery
from databricks_emulator.pages import PAGE_SIZE, decode_token, encode_token, page, whole_under_2_1
from databricks_emulator.params import read_call
from databricks_emulator.runs import PAGED_RUN_ARRAYS, JobRun, TaskRun, now_ms
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
    RUNS_LIST,
    RUNS_REPAIR,
    Endpoint,
    NotModelledEndpoint,
)
from databricks_emulator.workspace import Workspace

log = logging.getLogger("databricks_emulator")

#: The most jobs one jobs/list page may ask for (and the default), per the reference.
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20
#: jobs/list refuses an offset beyond this (deprecated paging; page_token has no limit).
MAX_LIST_OFFSET = 1000


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
        raise ApiError(401, 401, "Credential was not sent or was of an unsupported type for this API.")
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
async def run_now(workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(RUN_NOW))]) -> dict[str, int]:
    job = workspace.job(call["job_id"])
    _refuse_legacy_parameters(call, job)
    token = call.get("idempotency_token")
    run = workspace.run_now(job.job_id, call.get("job_parameters") or {}, token or None)
    delay = workspace.faults.take_slow_response(run.pipeline_id, job.job_id)
    if delay:
        await asyncio.sleep(delay)
    return {"run_id": run.run_id, "number_in_job": run.run_id}


def _refuse_legacy_parameters(call: dict[str, Any], job: JobSpec) -> None:
    """Task parameters (notebook_params, ...) are refused for a job that defines job parameters."""
    legacy = [name for name in LEGACY_TASK_PARAMETERS if call.get(name)]
    if legacy:
        raise invalid_parameter(
            f"{', '.join(legacy)} cannot be used with job {job.job_id}: it defines job parameters; "
            "pass them as job_parameters."
        )


@jobs.post(f"/{RUNS_REPAIR.path}")
async def repair_run(
    workspace: WorkspaceDep, call: Annotated[dict[str, Any], Depends(reads(RUNS_REPAIR))]
) -> dict[str, int]:
    _refuse_legacy_parameters(call, workspace.job_run_of(call["run_id"]).job)
    repair_id = workspace.repair(
        call["run_id"],
        rerun_tasks=call.get("rerun_tasks"),
        rerun_all_failed_tasks=call.get("rerun_all_failed_tasks", False),
        rerun_dependent_tasks=call.get("rerun_dependent_tasks", False),
        latest_repair_id=call.get("latest_repair_id"),
        job_parameters=call.get("job_parameters") or {},
    )
    return {"repair_id": repair_id}


def _page_number(call: dict[str, Any], kind: str, owner: int) -> int:
    """The page a request asks for; an empty page_token (as some clients send) is the first."""
    token = call.get("page_token")
    return decode_token(token, kind, owner) if token else 0


@jobs.get(f"/{RUNS_GET.path}")
async def get_run(
    workspace: WorkspaceDep, version: VersionDep, call: Annotated[dict[str, Any], Depends(reads(RUNS_GET))]
) -> dict[str, Any]:
    run = workspace.any_run(call["run_id"])
    workspace.count_run_read(run)
    if isinstance(run, TaskRun):
        if call.get("page_token"):
            raise invalid_parameter(f"Invalid page_token: a task run has no pages ({call['page_token']!r}).")
        return run.task_run_json()
    document = run.job_run_json(include_history=call.get("include_history", False))
    if version != "2.2":
        whole_under_2_1(document["tasks"], "runs/get of a job run", version)
        return document
    number = _page_number(call, "run", run.run_id)
    paged, more = page(document, PAGED_RUN_ARRAYS, number)
    if more:
        paged["next_page_token"] = encode_token("run", run.run_id, number + 1)
    return paged


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
    run = workspace.any_run(call["run_id"])
    if isinstance(run, JobRun):
        # The real API serves output per task run only, whatever the job's task count.
        raise invalid_parameter(
            "Retrieving the output of runs with multiple tasks is not supported. "
            "Please retrieve the output of each individual task run instead."
        )
    return run.output_json()


def _base_job_json(workspace: Workspace, job: JobSpec, *, with_tasks: bool) -> dict[str, Any]:
    """The job as ``jobs/list`` shows it (a ``BaseJob``: no ``run_as_user_name``)."""
    settings = job.settings_json(
        max_concurrent_runs=workspace.max_concurrent_runs(job), timeout_seconds=workspace.timeout_seconds(job)
    )
    if not with_tasks:
        del settings["tasks"]
    return {
        "job_id": job.job_id,
        "creator_user_name": USER_NAME,
        "created_time": job.created_time,
        "settings": settings,
    }


@jobs.get(f"/{JOBS_GET.path}")
async def get_job(
    workspace: WorkspaceDep, version: VersionDep, call: Annotated[dict[str, Any], Depends(reads(JOBS_GET))]
) -> dict[str, Any]:
    job = workspace.job(call["job_id"])
    document = {**_base_job_json(workspace, job, with_tasks=True), "run_as_user_name": USER_NAME}
    if version != "2.2":
        whole_under_2_1(document["settings"]["tasks"], "jobs/get of a job", version)
        return document
    number = _page_number(call, "job", job.job_id)
    paged, more = page(document, PAGED_JOB_ARRAYS, number, inside="settings")
    if more:
        paged["next_page_token"] = encode_token("job", job.job_id, number + 1)
    return paged


@jobs.get(f"/{JOBS_LIST.path}")
async def list_jobs(
    workspace: WorkspaceDep, version: VersionDep, call: Annotated[dict[str, Any], Depends(reads(JOBS_LIST))]
) -> dict[str, Any]:
    limit = call.get("limit", DEFAULT_LIST_LIMIT)
    if not 0 < limit <= MAX_LIST_LIMIT:
        raise invalid_parameter(f"limit must be between 1 and {MAX_LIST_LIMIT}; got {limit}.")
    offset = call.get("offset", 0)
    if offset < 0:
        raise invalid_parameter(f"offset must not be negative; got {offset}.")
    if offset > MAX_LIST_OFFSET:
        raise invalid_parameter(
            f"The supplied offset {offset} has exceeded the value of {MAX_LIST_OFFSET} allowed for this "
            "parameter. Please use the page_token parameter to paginate."
        )
    if call.get("page_token"):
        offset = decode_token(call["page_token"], "jobs", 0)
    # The name filter is exact but case-insensitive, as the reference says; newest job first.
    name = call.get("name")
    matching = [
        job
        for job in sorted(workspace.jobs.values(), key=lambda job: job.created_time, reverse=True)
        if name is None or job.name.casefold() == name.casefold()
    ]
    chosen = matching[offset : offset + limit]
    expand = call.get("expand_tasks", False)
    listed = []
    for job in chosen:
        entry = _base_job_json(workspace, job, with_tasks=expand)
        if expand and version == "2.2":
            entry, more = page(entry, PAGED_JOB_ARRAYS, 0, inside="settings")
            entry["has_more"] = more
        elif expand and len(job.tasks) > PAGE_SIZE:
            # Measured on a live workspace (open-metadata/OpenMetadata#33204): Jobs API 2.1
            # answers such a job without its tasks, and without saying so.
            del entry["settings"]["tasks"]
        listed.append(entry)
    answer: dict[str, Any] = {"jobs": listed} if listed else {}
    more = offset + limit < len(matching)
    if version != "2.2":
        # Jobs API 2.2 dropped the top-level has_more for the page tokens.
        answer["has_more"] = more
    if more:
        answer["next_page_token"] = encode_token("jobs", 0, offset + limit)
    if offset > 0:
        answer["prev_page_token"] = encode_token("jobs", 0, max(0, offset - limit))
    return answer


@jobs.get(f"/{RUNS_LIST.path}")
async def list_job_runs(
    workspace: WorkspaceDep, version: VersionDep, call: Annotated[dict[str, Any], Depends(reads(RUNS_LIST))]
) -> dict[str, Any]:
    answer = run_list.list_runs(workspace, call, version)
    workspace.calls.runs_list += 1
    return answer


def _refuse(endpoint: NotModelledEndpoint) -> Callable[[str], Awaitable[None]]:
    async def refuse(version: VersionDep) -> None:
        raise not_modelled(f"{endpoint.method} /api/{version}/{endpoint.path}", endpoint.why)

    return refuse


for _endpoint in NOT_MODELLED_ENDPOINTS:
    jobs.add_api_route(f"/{_endpoint.path}", _refuse(_endpoint), methods=[_endpoint.method], include_in_schema=False)


control = APIRouter(prefix="/emulator", dependencies=[Depends(_authenticate)])
#: Where notebooks post dropped callbacks: they hold no token, and it only counts.
callback_sink = APIRouter(prefix="/emulator")


def _checked(plan: FaultPlan, jobs: list[JobSpec]) -> FaultPlan:
    """The plan, if every task key it names is a task of one of ``jobs``; else the 422."""
    known = {key for job in jobs for key in job.task_keys}
    unknown = plan.unknown_tasks(known)
    if unknown:
        raise ApiError(
            422,
            "INVALID_PARAMETER_VALUE",
            f"tasks: no job here has a task {', '.join(map(repr, unknown))}; the task keys are: "
            f"{', '.join(sorted(known))}",
        )
    return plan


@control.get("/faults")
async def get_faults(workspace: WorkspaceDep) -> dict[str, Any]:
    registry = workspace.faults
    return {
        "default": registry.default.model_dump(),
        "pipelines": {pid: plan.model_dump() for pid, plan in registry.plans.items()},
        "jobs": {str(job_id): plan.model_dump() for job_id, plan in registry.job_plans.items()},
    }


@control.put("/faults")
async def set_default_plan(plan: FaultPlan, workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.set_default(_checked(plan, list(workspace.jobs.values())))
    return plan.model_dump()


@control.delete("/faults")
async def clear_plans(workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.clear_all()
    return {}


@control.put("/faults/pipelines/{pipeline_id}")
async def set_pipeline_plan(pipeline_id: str, plan: FaultPlan, workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.set_plan(pipeline_id, _checked(plan, list(workspace.jobs.values())))
    return plan.model_dump()


@control.delete("/faults/pipelines/{pipeline_id}")
async def clear_pipeline_plan(pipeline_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.clear_plan(pipeline_id)
    return {}


@control.put("/faults/jobs/{job_id}")
async def set_job_plan(job_id: int, plan: FaultPlan, workspace: WorkspaceDep) -> dict[str, Any]:
    """The plan for a job's runs whose pipeline has none (jobs without a pipeline_id parameter)."""
    job = workspace.job(job_id)
    workspace.faults.set_job_plan(job.job_id, _checked(plan, [job]))
    return plan.model_dump()


@control.delete("/faults/jobs/{job_id}")
async def clear_job_plan(job_id: int, workspace: WorkspaceDep) -> dict[str, Any]:
    workspace.faults.clear_job_plan(workspace.job(job_id).job_id)
    return {}


@control.get("/pipelines/{pipeline_id}")
async def pipeline_counters(pipeline_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    counters = workspace.faults.counters.get(pipeline_id)
    if counters is None:
        return {
            "pipeline_id": pipeline_id,
            "run_now_calls": 0,
            "runs_get_calls": 0,
            "run_now_rejected": 0,
            "runs": 0,
            "run_ids": [],
            "dropped_callbacks": 0,
        }
    return {
        "pipeline_id": pipeline_id,
        "run_now_calls": counters.run_now_calls,
        "runs_get_calls": counters.runs_get_calls,
        "run_now_rejected": counters.run_now_rejected,
        "runs": len(counters.run_ids),
        "run_ids": list(counters.run_ids),
        "dropped_callbacks": counters.dropped_callbacks,
    }


@control.post("/pipelines/{pipeline_id}/release")
async def release_pipeline(pipeline_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    """Let the pipeline's held runs (a plan's ``held``) go on, and hold none of its later ones."""
    workspace.faults.release(pipeline_id)
    return {"pipeline_id": pipeline_id, "released": True}


@control.get("/calls")
async def workspace_calls(workspace: WorkspaceDep) -> dict[str, int]:
    """Jobs API calls counted workspace-wide: a watchdog's listings and reads, for tests and the benchmark."""
    return workspace.calls.as_json()


@control.get("/runs")
async def list_runs(
    workspace: WorkspaceDep, pipeline_id: str | None = None, job_id: int | None = None
) -> dict[str, Any]:
    runs = [
        run
        for run in workspace.runs.values()
        if (pipeline_id is None or run.pipeline_id == pipeline_id) and (job_id is None or run.job.job_id == job_id)
    ]
    return {"runs": [run.summary_json() for run in runs]}


def _with_logs(attempt: TaskRun) -> dict[str, Any]:
    return {**attempt.summary_json(), "stdout": tail(attempt.stdout_path), "stderr": tail(attempt.stderr_path)}


@control.get("/runs/{run_id}")
async def run_details(run_id: int, workspace: WorkspaceDep) -> dict[str, Any]:
    """A job run with every task attempt and its logs; or, for a task run id, that attempt."""
    run = workspace.any_run(run_id)
    if isinstance(run, TaskRun):
        return {**_with_logs(run), "job_run_id": run.job_run.run_id}
    return {**run.summary_json(), "tasks": [_with_logs(attempt) for attempt in run.task_runs()]}


class NotificationSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


@control.get("/notifications")
async def notification_deliveries(
    workspace: WorkspaceDep, run_id: int | None = None, job_id: int | None = None
) -> dict[str, Any]:
    """Every webhook notification sent (or held back), oldest first."""
    notifier = workspace.notifier
    deliveries = [
        delivery
        for delivery in notifier.deliveries
        if (run_id is None or delivery.run_id == run_id) and (job_id is None or delivery.job_id == job_id)
    ]
    return {"enabled": notifier.enabled, "deliveries": [delivery.as_json() for delivery in deliveries]}


@control.put("/notifications")
async def switch_notifications(switch: NotificationSwitch, workspace: WorkspaceDep) -> dict[str, Any]:
    """Switch sending off (notifications are then recorded as suppressed) or back on."""
    workspace.notifier.enabled = switch.enabled
    return {"enabled": switch.enabled}


@control.get("/oauth")
async def oauth_tokens(tokens: IssuerDep) -> dict[str, Any]:
    """How many OAuth tokens were issued and how many are live (a refresh issues one more)."""
    return {"client_id": tokens.client_id, "tokens_issued": tokens.issued, "live_tokens": tokens.live()}


@control.post("/oauth/expire")
async def expire_oauth_tokens(tokens: IssuerDep) -> dict[str, Any]:
    """End every live OAuth token now, as if its lifetime had passed."""
    return {"expired": tokens.expire_all()}


@callback_sink.post("/callback-sink/{run_id}")
async def swallow_callback(run_id: int, workspace: WorkspaceDep) -> dict[str, Any]:
    """Where a ``drop_callback`` run's callback goes: accepted, counted, never delivered."""
    run = workspace.job_run_of(run_id)
    workspace.faults.counters_for(run.pipeline_id).dropped_callbacks += 1
    return {"dropped": True}


def workspace_bundle(settings: Settings) -> Bundle:
    """The bundle the settings name; BundleError when it cannot be served."""
    bundle = load_bundle(
        settings.BUNDLE, variables=settings.BUNDLE_VARIABLES, first_job_id=settings.JOB_ID, created_time=now_ms()
    )
    if settings.REQUIRE_NOTEBOOKS and bundle.missing_files:
        raise BundleError(
            "DATABRICKS_EMULATOR_REQUIRE_NOTEBOOKS is set and the bundle names files that do not exist:\n  "
            + "\n  ".join(bundle.missing_files)
        )
    return bundle


def _report(bundle: Bundle) -> None:
    for missing in bundle.missing_files:
        log.warning("%s does not exist: that task fails until it does", missing)
    for ignored in bundle.ignored:
        log.warning("%s is not modelled and is left out of the job", ignored)
    for job in bundle.jobs:
        log.info("job %s: %s (%d task(s))", job.job_id, job.name, len(job.tasks))


def create_app(settings: Settings | None = None, bundle: Bundle | None = None) -> FastAPI:
    """The emulator app; settings come from the environment and the bundle from them unless given."""
    settings = settings or Settings()
    bundle = bundle or workspace_bundle(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _report(bundle)
        with tempfile.TemporaryDirectory(prefix="databricks-emulator-") as run_root:
            notifier = Notifier(settings.NOTIFICATION_DESTINATIONS, settings.WORKSPACE_ID)
            app.state.workspace = Workspace(settings, Path(run_root), bundle, notifier)
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
    app.include_router(callback_sink)

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
            return JSONResponse({"error_code": "ENDPOINT_NOT_FOUND", "message": message}, status_code=404)
        return JSONResponse(
            {"error_code": str(exc.status_code), "message": str(exc.detail)},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """Only the control API validates bodies this way: its refusals are 422s naming each problem."""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE", "message": problems}, status_code=422)

    @app.get("/healthz")
    async def healthz(workspace: WorkspaceDep) -> dict[str, Any]:
        active = sum(1 for run in workspace.runs.values() if not run.is_terminal)
        return {
            "status": "ok",
            "job_id": settings.JOB_ID,
            "jobs": {str(job.job_id): job.name for job in workspace.jobs.values()},
            "runs": len(workspace.runs),
            "active_runs": active,
        }

    @app.get("/", response_class=HTMLResponse)
    async def runs_page(workspace: WorkspaceDep) -> str:
        """Where run_page_url lands: the run its fragment names, or every run (see run_page)."""
        return run_page.render(workspace.bundle.name, workspace.runs.values())

    return app
