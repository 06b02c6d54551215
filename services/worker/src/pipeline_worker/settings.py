"""The worker's configuration, read once from the environment."""

from __future__ import annotations

from pydantic import Field

from pipeline_shared.settings import SigningSettings


class WorkerSettings(SigningSettings):
    #: The workspace URL, e.g. https://dbc-1234.cloud.databricks.com (or the emulator).
    DATABRICKS_HOST: str
    #: A token for a principal that may run the job (a PAT or service principal token).
    DATABRICKS_TOKEN: str
    #: The job that runs notebooks/pipeline.py (see infra/databricks).
    DATABRICKS_JOB_ID: int = Field(gt=0)
    #: Namespaces idempotency tokens, so deployments sharing a workspace never collide.
    DATABRICKS_IDEMPOTENCY_NAMESPACE: str = "resonate-databricks"
    DATABRICKS_HTTP_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    #: How long one SDK call keeps retrying 429/503/connection errors before
    #: the step gives up for now (Resonate then retries the step).
    DATABRICKS_RETRY_TIMEOUT_SECONDS: int = Field(default=60, gt=0)
    #: Concurrent blocking Databricks calls (threads).
    DATABRICKS_MAX_CONCURRENT_CALLS: int = Field(default=32, gt=0)
    #: Where the notebook calls back: the gateway's callback endpoint as seen
    #: from the Databricks workspace.
    GATEWAY_CALLBACK_URL: str
    #: How often the watchdog asks Databricks about a run that has not called back.
    WATCHDOG_INTERVAL_SECONDS: float = Field(default=60.0, gt=0)
    #: Workflow executions held at once by this process (Resonate leases).
    MAX_CONCURRENT_TASKS: int = Field(default=256, gt=0)
