"""The one job the emulated workspace holds: the pipeline notebook as a job.

It mirrors the job that ``infra/databricks/databricks.yml`` deploys (same
parameters, one notebook task); a test holds the two to the same parameter
names. The worker passes the inputs as job parameters, and Databricks pushes
job parameters down to the notebook as widgets of the same names.
"""

from __future__ import annotations

from typing import Any, Final

#: The job's name, as the bundle names it.
JOB_NAME: Final = "Resonate pipeline"
#: The key of the job's one task.
TASK_KEY: Final = "pipeline"
#: Where the bundle puts the notebook in a workspace (shown in task details only).
WORKSPACE_NOTEBOOK_PATH: Final = (
    "/Workspace/Shared/.bundle/resonate-pipeline/files/notebooks/pipeline"
)
#: Who owns and runs the job in the emulated workspace.
USER_NAME: Final = "emulator@localhost"
#: The job parameters and their defaults; a run may set only these.
JOB_PARAMETERS: Final[dict[str, str]] = {
    "pipeline_id": "",
    "callback_promise_id": "",
    "callback_url": "",
    "callback_signing_key": "",
    "parameters": "{}",
}
#: The longest idempotency token the Jobs API accepts.
MAX_IDEMPOTENCY_TOKEN_CHARS: Final = 64


def job_settings(*, timeout_seconds: float, max_concurrent_runs: int) -> dict[str, Any]:
    """The job's ``settings`` as ``jobs/get`` shows them."""
    return {
        "name": JOB_NAME,
        "format": "MULTI_TASK",
        "max_concurrent_runs": max_concurrent_runs,
        "timeout_seconds": int(timeout_seconds),
        "queue": {"enabled": True},
        "parameters": [
            {"name": name, "default": default} for name, default in JOB_PARAMETERS.items()
        ],
        "tasks": [
            {
                "task_key": TASK_KEY,
                "notebook_task": {"notebook_path": WORKSPACE_NOTEBOOK_PATH, "source": "WORKSPACE"},
                "run_if": "ALL_SUCCESS",
                "timeout_seconds": 0,
            }
        ],
        "email_notifications": {},
        "webhook_notifications": {},
    }
