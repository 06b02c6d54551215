"""The emulator's configuration, read once from ``DATABRICKS_EMULATOR_*`` env vars.

The token and the service principal's OAuth secret have development
defaults on purpose: the emulator is a local stand-in with nothing behind it
worth protecting, and every client in the stack (worker, tests, compose) can
use it without setup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from databricks_emulator.notifications import NotificationDestination

#: The bearer token the emulator accepts unless told otherwise.
DEV_TOKEN = "dapi-emulator-dev-token"
#: The service principal whose OAuth secret the emulator accepts unless told otherwise
#: (a workspace's client ids are UUIDs and its secrets start with ``dose``).
DEV_CLIENT_ID = "00000000-0000-4000-8000-00000000e2e0"
DEV_CLIENT_SECRET = "dose-emulator-dev-secret"
#: How long a workspace's OAuth access token lives.
OAUTH_TOKEN_SECONDS = 3600
#: Settings an older emulator read, and what replaced them.
RETIRED = {
    "DATABRICKS_EMULATOR_NOTEBOOK_PATH": "the bundle names each job's notebooks (DATABRICKS_EMULATOR_BUNDLE)",
}


class Settings(BaseSettings):
    """Everything the emulator can be told through its environment."""

    model_config = SettingsConfigDict(env_prefix="DATABRICKS_EMULATOR_", frozen=True)

    #: The personal access token clients must send as ``Authorization: Bearer``.
    TOKEN: str = Field(default=DEV_TOKEN, min_length=1)
    #: The service principal that may get OAuth tokens (client_credentials) in place of the PAT.
    CLIENT_ID: str = Field(default=DEV_CLIENT_ID, min_length=1)
    CLIENT_SECRET: str = Field(default=DEV_CLIENT_SECRET, min_length=1)
    #: ``expires_in`` of the OAuth access tokens issued; after it a token is refused.
    #: databricks-sdk refreshes a token 40 s before it expires, so a test that wants to
    #: see a refresh soon sets a little over 40.
    OAUTH_TOKEN_LIFETIME_SECONDS: int = Field(default=OAUTH_TOKEN_SECONDS, ge=1, le=86_400)
    #: The Databricks Asset Bundle whose jobs the workspace holds (relative to the working
    #: directory; the image has it at /app/infra/databricks/databricks.yml).
    BUNDLE: Path = Path("infra/databricks/databricks.yml")
    #: Values for the bundle's variables, as a JSON object; each replaces the variable's default.
    BUNDLE_VARIABLES: dict[str, Any] = Field(default_factory=dict)
    #: The id of the bundle's first job (what ``DATABRICKS_JOB_ID`` names for the pipeline);
    #: the others get the ids after it, in the bundle's order.
    JOB_ID: int = Field(default=1001, ge=1)
    #: Refuse to start while a notebook or file a job names is missing. Off, the emulator
    #: starts, logs a warning for each, and a task whose file is missing fails.
    REQUIRE_NOTEBOOKS: bool = False
    #: How long a task that is not a notebook (a SQL task, a wheel, ...) takes to run.
    TASK_SECONDS: float = Field(default=0.5, ge=0)
    #: Overrides every job's ``timeout_seconds`` when set: a run still going after this long
    #: ends TIMEDOUT.
    RUN_TIMEOUT_SECONDS: float | None = Field(default=None, gt=0)
    #: Where webhook notifications go: destination id to ``{"url", "username", "password"}``.
    NOTIFICATION_DESTINATIONS: dict[str, NotificationDestination] = Field(default_factory=dict)
    #: Where the emulator is reached from outside; run_page_url starts with it.
    PUBLIC_URL: str = "http://localhost:8080"
    #: The interface and port to listen on.
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8080, ge=1, le=65535)
    #: The workspace id reported in discovery, run page URLs and ``x-databricks-org-id``.
    WORKSPACE_ID: str = "1234567890123456"
    #: Overrides every job's ``max_concurrent_runs`` when set; runs beyond it wait QUEUED
    #: (or are skipped, for a job without a queue).
    MAX_CONCURRENT_RUNS: int | None = Field(default=None, ge=0)
    #: How long a run stays QUEUED, PENDING (compute start) and TERMINATING before
    #: moving on. Real runs spend seconds to minutes here; tests set zeros.
    QUEUED_SECONDS: float = Field(default=0.2, ge=0)
    PENDING_SECONDS: float = Field(default=1.0, ge=0)
    TERMINATING_SECONDS: float = Field(default=0.3, ge=0)
    #: SIGKILL follows SIGTERM this much later when a run's process group is ended.
    KILL_GRACE_SECONDS: float = Field(default=2.0, ge=0)
    #: The folder that stands for the drivers' ``/Volumes/`` (Unity Catalog volumes), shared by
    #: every run, as a workspace's volumes are; each notebook's process is told where it is in
    #: ``PIPELINE_VOLUMES_ROOT``. Unset: a ``Volumes`` folder in the emulator's temporary run
    #: directory, gone when the emulator stops (as its runs are).
    VOLUMES_DIR: Path | None = None

    @field_validator("PUBLIC_URL")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _refuse_retired(cls, values: Any) -> Any:
        for name, instead in RETIRED.items():
            if name in os.environ:
                raise ValueError(f"{name} is no longer read: {instead}")
        return values

    @property
    def internal_url(self) -> str:
        """How the emulator's own run processes reach it (they share its host)."""
        return f"http://127.0.0.1:{self.PORT}"
