"""The worker's view of the Databricks Jobs API, through ``databricks-sdk``.

It owns two decisions the rest of the worker must not make for itself:

- Which errors are transient. ``databricks-sdk`` already retries 429 and 503
  (honouring Retry-After), connection errors and timeouts, for up to
  ``retry_timeout_seconds``. What still escapes is sorted here into
  :class:`TransientDatabricksError`, which the calling step lets Resonate
  retry with the same idempotency token, and :class:`PermanentDatabricksError`
  (bad job id, bad parameters, 401/403), which fails the pipeline with a cause
  a person can act on.
- Which run states are terminal, and what they mean for the pipeline.

It signs in with a token or as a service principal (OAuth M2M); either way
the credentials go to databricks-sdk's unified authentication, which for a
service principal discovers the workspace's token endpoint, gets an OAuth
token and refreshes it before it expires. An OAuth sign-in the workspace
refuses (wrong client id or secret) is permanent, as a refused token is.

The SDK is synchronous (``requests``); every call runs on a bounded thread
pool so a slow or throttled Databricks never blocks the worker's event loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import (
    BadRequest,
    DatabricksError,
    NotFound,
    NotImplemented,
    PermissionDenied,
    Unauthenticated,
)
from databricks.sdk.service.jobs import Run, RunTask, RunType

from pipeline_shared.catalogue import Job
from pipeline_shared.models import DatabricksRun, RunError, RunReport, TaskOutcome

from .run_states import Verdict, verdict

#: Errors that retrying cannot fix: the request itself, the credentials or
#: the job are wrong.
_PERMANENT = (BadRequest, Unauthenticated, PermissionDenied, NotFound, NotImplemented)

#: OAuth errors (RFC 6749 section 5.2) meaning the credentials themselves are
#: refused. databricks-sdk raises them as ``ValueError("<error>: <description>")``
#: when it gets a token; any other ValueError there (a token endpoint that did
#: not answer usefully) is transient.
_OAUTH_REFUSAL = re.compile(
    r"\b(invalid_client|unauthorized_client|invalid_grant|invalid_scope|unsupported_grant_type):"
)

#: What runs/get-output returns of an exit value at most (Databricks cuts it there).
DATABRICKS_OUTPUT_CAP_BYTES = 5 * 1024 * 1024

#: Runs per jobs/runs/list page: the most the Jobs API serves (it refuses more).
RUNS_PER_LIST_PAGE = 25

#: runs/get-output calls of one report in flight at once.
OUTPUT_READS_AT_ONCE = 8


class TransientDatabricksError(Exception):
    """Databricks did not answer usefully this time; the same call may succeed later."""


class PermanentDatabricksError(Exception):
    """Databricks refused the call for a reason retrying cannot fix."""

    def __init__(self, error: RunError) -> None:
        super().__init__(f"{error.type}: {error.message}")
        self.error = error


@dataclass(frozen=True)
class RunView:
    """A run as read now: what its state means, and (once it is over) the report."""

    verdict: Verdict
    report: RunReport

    def describe(self) -> str:
        outcome = self.report.result_state or self.report.life_cycle_state
        return f"{outcome}: {self.report.state_message}" if self.report.state_message else outcome


#: Task results a repair leaves as they are.
_NOT_RERUN = frozenset({"SUCCESS", "SUCCESS_WITH_FAILURES", "EXCLUDED"})


@dataclass(frozen=True)
class RepairMade:
    """A repair of a run: its id, the tasks it reruns, and whether it was found already made."""

    repair_id: int | None
    rerun_tasks: list[str]
    adopted: bool


@dataclass(frozen=True)
class PersonalAccessToken:
    """A token (a PAT, or one made for a service principal) sent as the bearer."""

    token: str = field(repr=False)

    def sdk_config(self) -> dict[str, str]:
        return {"auth_type": "pat", "token": self.token}

    def describe(self) -> str:
        return "a token"


@dataclass(frozen=True)
class ServicePrincipal:
    """A service principal's OAuth M2M credentials; the SDK turns them into short-lived tokens."""

    client_id: str
    client_secret: str = field(repr=False)

    def sdk_config(self) -> dict[str, str]:
        return {"auth_type": "oauth-m2m", "client_id": self.client_id, "client_secret": self.client_secret}

    def describe(self) -> str:
        return f"OAuth as service principal {self.client_id}"


DatabricksCredentials = PersonalAccessToken | ServicePrincipal


@dataclass(frozen=True)
class DatabricksConfig:
    host: str
    credentials: DatabricksCredentials
    #: Per HTTP request.
    http_timeout_seconds: float
    #: How long the SDK keeps retrying 429/503/connection errors in one call.
    retry_timeout_seconds: int
    #: Threads for blocking SDK calls; bounds concurrent Databricks requests.
    max_concurrent_calls: int


class DatabricksJobs:
    """Find jobs, trigger and read their runs, list the active ones, cancel them."""

    def __init__(self, config: DatabricksConfig) -> None:
        self._config = config
        self._pool = ThreadPoolExecutor(config.max_concurrent_calls, thread_name_prefix="databricks")
        self._client: WorkspaceClient | None = None
        self._client_lock = threading.Lock()
        #: Job ids found by name, per catalogue entry: resolved once per process.
        self._job_ids: dict[str, int] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def job_id(self, job: Job) -> int:
        """The id of ``job``'s Databricks job: given, or found once by its name through jobs/list.

        A name that matches no job, or several, is a permanent error naming
        the ids found: the catalogue must then name the job by id.
        """
        if job.databricks_job_id is not None:
            return job.databricks_job_id
        known = self._job_ids.get(job.name)
        if known is not None:
            return known
        name = job.databricks_job_name
        found = await self._call(
            "find job", lambda: [j.job_id for j in self._workspace().jobs.list(name=name) if j.job_id is not None]
        )
        if len(found) != 1:
            detail = (
                "no job has that name" if not found else f"{len(found)} jobs have it (ids {', '.join(map(str, found))})"
            )
            raise PermanentDatabricksError(
                RunError(
                    type="DatabricksJobNotFound" if not found else "DatabricksJobAmbiguous",
                    message=f"catalogue job {job.name!r} names the Databricks job {name!r}, but {detail}; "
                    "deploy it (infra/databricks) or name it by databricks_job_id",
                )
            )
        self._job_ids[job.name] = found[0]
        return found[0]

    def forget_job(self, job: Job) -> None:
        """Find ``job`` by name again next time (its job was deleted, say, and deployed anew)."""
        self._job_ids.pop(job.name, None)

    async def run_now(self, job_id: int, job_parameters: dict[str, str], idempotency_token: str) -> DatabricksRun:
        """Start the job, or find the run this token already started."""

        def call() -> DatabricksRun:
            jobs = self._workspace().jobs
            waiter = jobs.run_now(job_id=job_id, job_parameters=job_parameters, idempotency_token=idempotency_token)
            run = jobs.get_run(waiter.run_id)
            return DatabricksRun(run_id=waiter.run_id, run_page_url=run.run_page_url, job_id=job_id)

        return await self._call("start job", call)

    async def active_run_ids(self, job_id: int | None = None) -> set[int]:
        """The ids of the runs Databricks lists as active now: of job ``job_id``, or of every job.

        Active is what ``jobs/runs/list`` with ``active_only`` says: a job run
        QUEUED, PENDING, RUNNING or TERMINATING, so one that has not ended (a
        repaired run is active again while its repair runs). Only JOB_RUNs are
        listed: a run-now run is one. The listing costs one call per
        ``RUNS_PER_LIST_PAGE`` active runs, however many runs the caller
        watches; databricks-sdk follows ``next_page_token`` itself.

        A run missing from the set is not known to have ended: it may have
        ended, or started after its page was read, or Databricks may show it
        in a state the listing leaves out. A caller reads such a run
        (``read_run``) before it decides anything about it; the set only
        spares it the reads of runs that are plainly still going.
        """

        def call() -> set[int]:
            listed = self._workspace().jobs.list_runs(
                active_only=True, job_id=job_id, run_type=RunType.JOB_RUN, limit=RUNS_PER_LIST_PAGE
            )
            return {run.run_id for run in listed if run.run_id is not None}

        return await self._call("list active runs", call)

    async def read_run(self, run_id: int, *, result_task: str | None = None, output_budget: int) -> RunView:
        """The run's state and, once it is over, every task's outcome with its exit value.

        databricks-sdk's ``get_run`` follows ``next_page_token`` itself, so a
        run of more than 100 tasks (Jobs API 2.2 pages them) is read whole.
        A task that ran more than once (a retry, a repair) is listed once per
        attempt; the latest attempt of each task key is the one reported.
        Exit values are read from each task run (``runs/get-output`` answers
        only for task runs), at most ``output_budget`` bytes of them in all:
        the result task's first, the rest in task order; what does not fit is
        marked truncated.
        """
        run: Run = await self._call("read run", lambda: self._workspace().jobs.get_run(run_id))
        report = _report_of(run)
        meaning = _verdict_of(run, report)
        if meaning.terminal and report.tasks:
            report = report.model_copy(
                update={"tasks": await self._with_outputs(report.tasks, result_task, output_budget)}
            )
        return RunView(verdict=meaning, report=report)

    async def _with_outputs(self, tasks: list[TaskOutcome], result_task: str | None, budget: int) -> list[TaskOutcome]:
        gate = asyncio.Semaphore(OUTPUT_READS_AT_ONCE)

        async def output(task: TaskOutcome) -> tuple[str | None, bool, str | None]:
            if task.run_id is None or task.result_state is None:
                return None, False, None
            async with gate:
                try:
                    answer = await self._call(
                        "read task output", lambda: self._workspace().jobs.get_run_output(task.run_id)
                    )
                except PermanentDatabricksError as exc:
                    return None, False, exc.error.message
            notebook = answer.notebook_output
            value = notebook.result if notebook and notebook.result else None
            return value, bool(notebook and notebook.truncated), answer.error

        read = await asyncio.gather(*(output(task) for task in tasks))
        order = sorted(range(len(tasks)), key=lambda i: tasks[i].task_key != result_task)
        left = budget
        kept: dict[int, TaskOutcome] = {}
        for i in order:
            value, truncated, error = read[i]
            if value is not None:
                encoded = value.encode()
                if len(encoded) > left:
                    value, truncated = encoded[: max(left, 0)].decode(errors="ignore") or None, True
                left -= len(encoded)
            kept[i] = tasks[i].model_copy(update={"exit_value": value, "truncated": truncated, "error": error})
        return [kept[i] for i in range(len(tasks))]

    async def repair(self, run_id: int, *, attempt: int, job_parameters: dict[str, str]) -> RepairMade:
        """Rerun the run's failed tasks (and their dependents) as repair number ``attempt``, exactly once.

        ``jobs/runs/repair`` takes no idempotency token, so a worker that died
        after asking for a repair and before recording it must not ask again:
        the run's repair history (``include_history``) is read first, and when
        it already holds repair number ``attempt`` that repair is the one
        made. Every repair of the run is taken to be this service's (a repair
        made by hand in the workspace would be counted as one). From the
        second repair on, Databricks requires the latest repair's id.
        ``job_parameters`` are all of them, passed again on every repair: a
        repair without them would rerun with the original run's values.
        """

        def call() -> RepairMade | None:
            jobs = self._workspace().jobs
            run = jobs.get_run(run_id, include_history=True)
            made = [h for h in run.repair_history or () if h.type is not None and h.type.value == "REPAIR"]
            report = _report_of(run)
            if len(made) < attempt and not _verdict_of(run, report).terminal:
                return None  # a notebook that reported its failure: its run is still ending
            rerun = [t.task_key for t in report.tasks if t.result_state not in _NOT_RERUN]
            if len(made) >= attempt:
                return RepairMade(repair_id=made[attempt - 1].id, rerun_tasks=rerun, adopted=True)
            waiter = jobs.repair_run(
                run_id,
                rerun_all_failed_tasks=True,
                rerun_dependent_tasks=True,
                latest_repair_id=made[-1].id if made else None,
                job_parameters=job_parameters,
            )
            return RepairMade(repair_id=waiter.response.repair_id, rerun_tasks=rerun, adopted=False)

        made = await self._call("repair run", call)
        if made is None:
            # Databricks repairs only a run that has ended; Resonate retries the step.
            raise TransientDatabricksError(f"run {run_id} has not ended yet; it is repaired once it has")
        return made

    async def cancel(self, run_id: int) -> None:
        """Ask Databricks to cancel a run; a finished run is left as it is."""
        await self._call("cancel run", lambda: self._workspace().jobs.cancel_run(run_id))

    def _workspace(self) -> WorkspaceClient:
        # Built lazily, on a pool thread: construction makes a blocking request
        # (the SDK probes the host's configuration endpoint).
        with self._client_lock:
            if self._client is None:
                self._client = WorkspaceClient(
                    config=Config(
                        host=self._config.host,
                        # auth_type is set, so the SDK tries nothing else it finds around.
                        **self._config.credentials.sdk_config(),
                        http_timeout_seconds=self._config.http_timeout_seconds,
                        retry_timeout_seconds=self._config.retry_timeout_seconds,
                        # One pooled connection per thread that may call at once
                        # (the SDK's default pool of 20 would churn connections).
                        max_connection_pools=self._config.max_concurrent_calls,
                        max_connections_per_pool=self._config.max_concurrent_calls,
                    )
                )
            return self._client

    async def _call[T](self, what: str, call: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, call)
        except _PERMANENT as exc:
            raise PermanentDatabricksError(_run_error(what, exc)) from exc
        except (DatabricksError, TimeoutError, OSError) as exc:
            raise TransientDatabricksError(f"could not {what}: {exc}") from exc
        except ValueError as exc:
            # Raised by the SDK's authentication: building the client, or getting an OAuth token.
            if _OAUTH_REFUSAL.search(str(exc)):
                message = f"could not {what}: the workspace refused the OAuth sign-in: {exc}"
                raise PermanentDatabricksError(RunError(type="DatabricksOAuthRefused", message=message)) from exc
            raise TransientDatabricksError(f"could not {what}: {exc}") from exc


def _report_of(run: Run) -> RunReport:
    """The run's state and its tasks' (latest attempts), without outputs."""
    latest: dict[str, RunTask] = {}
    for task in run.tasks or ():
        key = task.task_key or str(task.run_id)
        if key not in latest or (task.attempt_number or 0) >= (latest[key].attempt_number or 0):
            latest[key] = task
    life_cycle, result, message = _state_of(run)
    code, kind = _termination_of(run)
    return RunReport(
        life_cycle_state=life_cycle or "",
        result_state=result,
        state_message=message,
        termination_code=code,
        termination_type=kind,
        tasks=[_task_outcome(key, task) for key, task in latest.items()],
    )


def _verdict_of(run: Run, report: RunReport) -> Verdict:
    """What the run's state, in either shape the Jobs API shows, means for the pipeline."""
    return verdict(
        report.life_cycle_state or None,
        report.result_state,
        run.status.state.value if run.status and run.status.state else None,
        report.termination_code,
    )


def _task_outcome(key: str, task: RunTask) -> TaskOutcome:
    life_cycle, result, message = _state_of(task)
    code, kind = _termination_of(task)
    return TaskOutcome(
        task_key=key,
        run_id=task.run_id,
        attempt_number=task.attempt_number or 0,
        life_cycle_state=life_cycle or "",
        result_state=result,
        state_message=message,
        termination_code=code,
        termination_type=kind,
    )


def _state_of(run: Run | RunTask) -> tuple[str | None, str | None, str]:
    state = run.state
    if state is None:
        return None, None, ""
    return (
        state.life_cycle_state.value if state.life_cycle_state else None,
        state.result_state.value if state.result_state else None,
        state.state_message or "",
    )


def _termination_of(run: Run | RunTask) -> tuple[str | None, str | None]:
    details = run.status.termination_details if run.status else None
    if details is None:
        return None, None
    return (details.code.value if details.code else None, details.type.value if details.type else None)


def _run_error(what: str, exc: DatabricksError) -> RunError:
    code = exc.error_code or type(exc).__name__
    return RunError(type=f"Databricks{type(exc).__name__}", message=f"could not {what}: {code}: {exc}")
