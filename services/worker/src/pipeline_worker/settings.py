"""The worker's configuration, read once from the environment.

Databricks credentials come one of two ways, and exactly one must be set: a
token (``DATABRICKS_TOKEN``: a personal access token, or a token made for a
service principal), or a service principal's OAuth client id and secret
(``DATABRICKS_CLIENT_ID`` and ``DATABRICKS_CLIENT_SECRET``), which
databricks-sdk exchanges for short-lived OAuth tokens and refreshes itself.
These are also the names databricks-sdk itself reads. An empty value counts as
unset, so compose can pass every variable and leave the unused ones empty.
Secrets are ``SecretStr``: they print as ``**********`` and no error message
quotes them.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from pipeline_shared.settings import CatalogueSettings

from .databricks import DatabricksCredentials, PersonalAccessToken, ServicePrincipal

#: The three variables that carry Databricks credentials, as the errors name them.
_TOKEN = "DATABRICKS_TOKEN"
_OAUTH = "DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET"


class WorkerSettings(CatalogueSettings):
    #: The workspace URL, e.g. https://dbc-1234.cloud.databricks.com (or the emulator).
    DATABRICKS_HOST: str
    #: A token for a principal that may run the job (a PAT or a service principal's token)...
    DATABRICKS_TOKEN: SecretStr | None = None
    #: ...or, instead, a service principal's OAuth M2M credentials.
    DATABRICKS_CLIENT_ID: str | None = None
    DATABRICKS_CLIENT_SECRET: SecretStr | None = None
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
    #: The most bytes of task exit values kept in one run's report (the rest is
    #: marked truncated); the report is stored with the pipeline and emailed.
    REPORT_OUTPUT_BUDGET_BYTES: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Workflow executions held at once by this process (Resonate leases).
    MAX_CONCURRENT_TASKS: int = Field(default=256, gt=0)
    #: A team's pipelines: importable modules (comma-separated) whose ``@pipeline``
    #: functions are registered beside the shipped ones, e.g. ``acme_pipelines``.
    PIPELINE_MODULES: str = ""

    @property
    def pipeline_modules(self) -> list[str]:
        return [name.strip() for name in self.PIPELINE_MODULES.split(",") if name.strip()]

    @field_validator("DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _exactly_one_way_to_sign_in(self) -> Self:
        token = self.DATABRICKS_TOKEN is not None
        client_id, secret = self.DATABRICKS_CLIENT_ID is not None, self.DATABRICKS_CLIENT_SECRET is not None
        if token and (client_id or secret):
            raise ValueError(f"set either {_TOKEN} or {_OAUTH}, not both: Databricks credentials are one or the other")
        if client_id != secret:
            given, missing = (
                ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET")
                if client_id
                else ("DATABRICKS_CLIENT_SECRET", "DATABRICKS_CLIENT_ID")
            )
            raise ValueError(f"{given} is set but {missing} is not; a service principal needs both")
        if not (token or client_id):
            raise ValueError(
                f"no Databricks credentials: set {_TOKEN} (a personal access token) "
                f"or {_OAUTH} (a service principal's OAuth secret)"
            )
        return self

    def databricks_credentials(self) -> DatabricksCredentials:
        if self.DATABRICKS_TOKEN is not None:
            return PersonalAccessToken(self.DATABRICKS_TOKEN.get_secret_value())
        assert self.DATABRICKS_CLIENT_ID is not None and self.DATABRICKS_CLIENT_SECRET is not None  # validated
        return ServicePrincipal(self.DATABRICKS_CLIENT_ID, self.DATABRICKS_CLIENT_SECRET.get_secret_value())
