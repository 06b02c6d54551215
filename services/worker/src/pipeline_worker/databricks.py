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
import json
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
from databricks.sdk.service.jobs import Run, RunLifeCycleState

from pipeline_shared.models import DatabricksRun, RunError

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

#: Lifecycle states after which a run never changes again. TERMINATED carries
#: a result_state; SKIPPED and INTERNAL_ERROR end a run without one.
TERMINAL_STATES = frozenset(
    {RunLifeCycleState.TERMINATED, RunLifeCycleState.SKIPPED, RunLifeCycleState.INTERNAL_ERROR}
)


class TransientDatabricksError(Exception):
    """Databricks did not answer usefully this time; the same call may succeed later."""


class PermanentDatabricksError(Exception):
    """Databricks refused the call for a reason retrying cannot fix."""

    def __init__(self, error: RunError) -> None:
        super().__init__(f"{error.type}: {error.message}")
        self.error = error


@dataclass(frozen=True)
class RunSnapshot:
    """The parts of a run's state the worker acts on."""

    life_cycle_state: str
    result_state: str | None
    state_message: str

    @property
    def terminal(self) -> bool:
        return self.life_cycle_state in {s.value for s in TERMINAL_STATES}

    @property
    def succeeded(self) -> bool:
        return self.life_cycle_state == RunLifeCycleState.TERMINATED.value and self.result_state == "SUCCESS"

    def describe(self) -> str:
        outcome = self.result_state or self.life_cycle_state
        return f"{outcome}: {self.state_message}" if self.state_message else outcome


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
    job_id: int
    #: Per HTTP request.
    http_timeout_seconds: float
    #: How long the SDK keeps retrying 429/503/connection errors in one call.
    retry_timeout_seconds: int
    #: Threads for blocking SDK calls; bounds concurrent Databricks requests.
    max_concurrent_calls: int


class DatabricksJobs:
    """Trigger, inspect and cancel runs of the pipeline job."""

    def __init__(self, config: DatabricksConfig) -> None:
        self._config = config
        self._pool = ThreadPoolExecutor(config.max_concurrent_calls, thread_name_prefix="databricks")
        self._client: WorkspaceClient | None = None
        self._client_lock = threading.Lock()

    @property
    def job_id(self) -> int:
        return self._config.job_id

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run_now(self, job_parameters: dict[str, str], idempotency_token: str) -> DatabricksRun:
        """Start the job, or find the run this token already started."""

        def call() -> DatabricksRun:
            jobs = self._workspace().jobs
            waiter = jobs.run_now(
                job_id=self._config.job_id,
                job_parameters=job_parameters,
                idempotency_token=idempotency_token,
            )
            run = jobs.get_run(waiter.run_id)
            return DatabricksRun(run_id=waiter.run_id, run_page_url=run.run_page_url)

        return await self._call("start job", call)

    async def snapshot(self, run_id: int) -> RunSnapshot:
        run: Run = await self._call("read run", lambda: self._workspace().jobs.get_run(run_id))
        state = run.state
        if state is None or state.life_cycle_state is None:
            raise TransientDatabricksError(f"run {run_id} has no state yet")
        return RunSnapshot(
            life_cycle_state=state.life_cycle_state.value,
            result_state=state.result_state.value if state.result_state else None,
            state_message=state.state_message or "",
        )

    async def notebook_result(self, run_id: int) -> dict[str, Any] | None:
        """The JSON object the notebook passed to ``dbutils.notebook.exit``, if any.

        ``get-output`` answers for a task run, so a multi-task job run is
        resolved to its (only) task first, as the Jobs API requires.
        """

        def call() -> str | None:
            jobs = self._workspace().jobs
            run = jobs.get_run(run_id)
            task_run_id = run_id
            if run.tasks:
                task_run_id = run.tasks[0].run_id or run_id
            output = jobs.get_run_output(task_run_id)
            return output.notebook_output.result if output.notebook_output else None

        raw = await self._call("read run output", call)
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return {"notebook_exit_value": raw}
        return value if isinstance(value, dict) else {"notebook_exit_value": value}

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


def _run_error(what: str, exc: DatabricksError) -> RunError:
    code = exc.error_code or type(exc).__name__
    return RunError(type=f"Databricks{type(exc).__name__}", message=f"could not {what}: {code}: {exc}")
