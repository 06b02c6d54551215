"""The gateway's configuration, read once from the environment."""

from __future__ import annotations

from pydantic import Field

from pipeline_shared.settings import SigningSettings

#: The longest a pipeline may wait for Databricks. Longer waits are possible
#: for Resonate; the bound keeps a typo from parking a pipeline for a century.
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600


class GatewaySettings(SigningSettings):
    PORT: int = 8000
    #: How long a pipeline waits for its notebook when the request names no timeout.
    PIPELINE_DEFAULT_TIMEOUT_SECONDS: int = Field(default=6 * 3600, ge=1, le=MAX_TIMEOUT_SECONDS)
    #: Time the workflow has after the wait to cancel the run and send the
    #: email, before Resonate times the whole pipeline out.
    PIPELINE_FINISH_GRACE_SECONDS: int = Field(default=24 * 3600, ge=60)
    #: Largest callback body accepted; larger ones get 413.
    CALLBACK_MAX_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)
