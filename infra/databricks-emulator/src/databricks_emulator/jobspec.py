"""The jobs the emulated workspace holds, as read from the bundle, and how ``jobs/get`` shows them.

A :class:`JobSpec` is one job of ``databricks.yml`` after its variables are
resolved (``bundle``): its id, name, declared job parameters, limits and
tasks. A :class:`TaskSpec` is one task: its key, dependencies, ``run_if``
condition, kind (a notebook the emulator really runs, or another task type it
models as a timed step) and the settings ``jobs/get`` and ``runs/get`` show
for it. Nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: Who owns and runs the jobs in the emulated workspace.
USER_NAME: Final = "emulator@localhost"
#: The longest idempotency token the Jobs API accepts.
MAX_IDEMPOTENCY_TOKEN_CHARS: Final = 64
#: ``run_if`` of a task that sets none, as the reference defaults it.
DEFAULT_RUN_IF: Final = "ALL_SUCCESS"
#: Every ``run_if`` condition the Jobs API defines.
RUN_IF_CONDITIONS: Final = (
    "ALL_SUCCESS",
    "AT_LEAST_ONE_SUCCESS",
    "NONE_FAILED",
    "ALL_DONE",
    "AT_LEAST_ONE_FAILED",
    "ALL_FAILED",
)
#: The task type the emulator really executes (through the harness).
NOTEBOOK_TASK: Final = "notebook_task"
#: Task types the emulator models as a step that takes ``TASK_SECONDS`` and succeeds
#: unless a fault plan says otherwise: they need compute the emulator does not have.
STEP_TASKS: Final = (
    "sql_task",
    "spark_python_task",
    "python_wheel_task",
    "spark_jar_task",
    "spark_submit_task",
    "dbt_task",
    "run_job_task",
    "pipeline_task",
)
#: Task settings shown as the bundle gives them (besides the task type's own block).
TASK_SETTINGS: Final = (
    "description",
    "timeout_seconds",
    "max_retries",
    "min_retry_interval_millis",
    "retry_on_timeout",
    "disable_auto_optimization",
    "job_cluster_key",
    "existing_cluster_id",
    "new_cluster",
    "environment_key",
    "libraries",
    "email_notifications",
    "webhook_notifications",
    "notification_settings",
    "health",
)
#: Of those, what a run's ``RunTask`` does not carry (databricks-sdk's model has no such field).
NOT_IN_RUN_TASK: Final = ("health",)
#: Job settings shown as the bundle gives them, besides those the emulator acts on.
JOB_SETTINGS: Final = (
    "description",
    "tags",
    "email_notifications",
    "notification_settings",
    "job_clusters",
    "environments",
    "health",
)
#: The arrays of a job's settings that Jobs API 2.2 pages (100 elements a page).
PAGED_JOB_ARRAYS: Final = ("tasks", "job_clusters", "parameters", "environments")


def read_boolean(value: object) -> bool | None:
    """A boolean as the Jobs API and bundles take one (true/false, or those strings); None if it is none."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


@dataclass(frozen=True)
class TaskSpec:
    """One task of a job, as the emulator runs it and as the API shows it."""

    key: str
    #: ``notebook_task`` or one of ``STEP_TASKS``.
    kind: str
    depends_on: tuple[str, ...]
    run_if: str
    #: The task's settings as ``jobs/get`` shows them (paths as a workspace would have them).
    settings: dict[str, Any]
    #: The notebook (notebook tasks) or file (file-based SQL tasks) on this machine.
    local_file: Path | None = None
    timeout_seconds: int = 0
    max_retries: int = 0
    min_retry_interval_millis: int = 0
    retry_on_timeout: bool = False

    @property
    def runs_notebook(self) -> bool:
        return self.kind == NOTEBOOK_TASK

    def run_task_settings(self) -> dict[str, Any]:
        """What a run's task entry (a ``RunTask``) repeats of the task's settings."""
        return {name: value for name, value in self.settings.items() if name not in NOT_IN_RUN_TASK}


@dataclass(frozen=True)
class JobSpec:
    """One job of the bundle, after variable resolution."""

    job_id: int
    #: The job's key under ``resources.jobs`` in the bundle.
    resource_key: str
    name: str
    #: Declared job parameters and their defaults, in declaration order.
    parameters: dict[str, str]
    tasks: tuple[TaskSpec, ...]
    max_concurrent_runs: int
    timeout_seconds: int
    queue_enabled: bool
    #: ``webhook_notifications``: event (``on_start``, ...) to destination ids.
    webhooks: dict[str, tuple[str, ...]]
    #: ``notification_settings.no_alert_for_canceled_runs`` / ``_skipped_runs``.
    no_alert_for_canceled_runs: bool
    no_alert_for_skipped_runs: bool
    #: Settings shown as given (``JOB_SETTINGS``).
    extra_settings: dict[str, Any] = field(default_factory=dict)
    created_time: int = 0

    def task(self, key: str) -> TaskSpec:
        return next(task for task in self.tasks if task.key == key)

    @property
    def task_keys(self) -> tuple[str, ...]:
        return tuple(task.key for task in self.tasks)

    def dependents(self, key: str) -> tuple[str, ...]:
        """The tasks that depend on ``key`` directly."""
        return tuple(task.key for task in self.tasks if key in task.depends_on)

    def downstream(self, keys: set[str]) -> set[str]:
        """Every task that depends on one of ``keys``, directly or not."""
        found: set[str] = set()
        frontier = set(keys)
        while frontier:
            frontier = {dependent for key in frontier for dependent in self.dependents(key)} - found
            found |= frontier
        return found

    @property
    def leaves(self) -> tuple[str, ...]:
        """The tasks no other task depends on: they decide the job run's result."""
        return tuple(task.key for task in self.tasks if not self.dependents(task.key))

    def settings_json(self, *, max_concurrent_runs: int, timeout_seconds: int) -> dict[str, Any]:
        """The job's ``settings`` as ``jobs/get`` shows them, every array whole.

        The limits are passed in because a global setting may override the bundle's.
        """
        settings: dict[str, Any] = {
            **self.extra_settings,
            "name": self.name,
            "format": "MULTI_TASK",
            "max_concurrent_runs": max_concurrent_runs,
            "timeout_seconds": timeout_seconds,
            "queue": {"enabled": self.queue_enabled},
            "tasks": [task.settings for task in self.tasks],
        }
        if self.parameters:
            settings["parameters"] = [{"name": name, "default": default} for name, default in self.parameters.items()]
        webhooks = {
            event: [{"id": destination} for destination in destinations]
            for event, destinations in self.webhooks.items()
            if destinations
        }
        settings["webhook_notifications"] = webhooks
        settings.setdefault("email_notifications", {})
        return settings
