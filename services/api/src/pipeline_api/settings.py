"""The gateway's configuration, read once from the environment."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from pipeline_shared.settings import DEVELOPMENT_SIGNING_SECRET, MIN_SECRET_LENGTH, SigningSettings

#: The longest a pipeline may wait for Databricks. Longer waits are possible
#: for Resonate; the bound keeps a typo from parking a pipeline for a century.
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600


def _comma_separated(value: Any) -> Any:
    """``"a, b"`` -> ``("a", "b")``: a list in one environment variable, blanks ignored."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class GatewaySettings(SigningSettings):
    PORT: int = 8000
    #: How long a pipeline waits for its notebook when the request names no timeout.
    PIPELINE_DEFAULT_TIMEOUT_SECONDS: int = Field(default=6 * 3600, ge=1, le=MAX_TIMEOUT_SECONDS)
    #: Time the workflow has after the wait to cancel the run and send the
    #: email, before Resonate times the whole pipeline out.
    PIPELINE_FINISH_GRACE_SECONDS: int = Field(default=24 * 3600, ge=60)
    #: Largest callback body accepted; larger ones get 413.
    CALLBACK_MAX_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)
    #: Signing secrets replaced by CALLBACK_SIGNING_SECRET, comma-separated:
    #: callbacks signed with a key derived from one of them are still
    #: accepted, so pipelines started before a rotation can finish. See
    #: pipeline_api.callbacks for the rotation procedure.
    CALLBACK_SIGNING_PREVIOUS_SECRETS: Annotated[tuple[str, ...], NoDecode] = ()

    _split_previous_secrets = field_validator("CALLBACK_SIGNING_PREVIOUS_SECRETS", mode="before")(_comma_separated)

    @property
    def callback_signing_secrets(self) -> tuple[str, ...]:
        """Every secret a callback key may be derived from, the current one first."""
        return (self.CALLBACK_SIGNING_SECRET, *self.CALLBACK_SIGNING_PREVIOUS_SECRETS)

    @model_validator(mode="after")
    def _previous_secrets_are_secrets(self) -> Self:
        if self.CALLBACK_SIGNING_SECRET in self.CALLBACK_SIGNING_PREVIOUS_SECRETS:
            raise ValueError("CALLBACK_SIGNING_PREVIOUS_SECRETS lists the current CALLBACK_SIGNING_SECRET")
        if self.ENVIRONMENT == "development":
            return self
        for position, secret in enumerate(self.CALLBACK_SIGNING_PREVIOUS_SECRETS, start=1):
            if secret == DEVELOPMENT_SIGNING_SECRET or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"CALLBACK_SIGNING_PREVIOUS_SECRETS: secret {position} is the development default or shorter "
                    f"than {MIN_SECRET_LENGTH} characters; refused for ENVIRONMENT={self.ENVIRONMENT}"
                )
        return self
