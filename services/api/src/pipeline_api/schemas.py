"""The gateway's HTTP documents: what clients send and what they get back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from pipeline_shared import names
from pipeline_shared.models import PipelineId, PipelineState, RunError

from .settings import MAX_TIMEOUT_SECONDS

#: A parameter name must survive as a JSON key and a log field; the notebook
#: reads them from one JSON widget, so Databricks' own naming rules do not apply.
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
ParameterName = Annotated[str, StringConstraints(pattern=PARAMETER_NAME_PATTERN)]

#: Databricks caps a run's parameters at 10,000 bytes of JSON; the user's share
#: leaves room for the inputs the worker adds.
MAX_PARAMETERS_BYTES = 8_000

#: Our own job parameters; a user parameter of the same name would be
#: confusing in the Databricks UI even though it travels separately.
RESERVED_PARAMETERS = frozenset(
    {
        names.JOB_PARAM_PIPELINE_ID,
        names.JOB_PARAM_CALLBACK_PROMISE_ID,
        names.JOB_PARAM_CALLBACK_URL,
        names.JOB_PARAM_CALLBACK_SIGNING_KEY,
    }
)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineRequest(_Document):
    """Start a pipeline."""

    id: PipelineId | None = Field(
        default=None,
        description="Your id for the pipeline (1-64 of A-Z a-z 0-9 . _ -). Starting the same id again with "
        "the same request returns the existing pipeline; with a different request, 409. Omit it to get a "
        "generated id.",
    )
    email: EmailStr = Field(description="Who is told how the pipeline ended.")
    parameters: dict[ParameterName, str] = Field(
        default_factory=dict,
        description="Your notebook's inputs, as strings; e.g. {\"source\": \"https://...\"}. At most "
        f"{MAX_PARAMETERS_BYTES} bytes as JSON.",
        # Say in the document what the validator below enforces: names other
        # than the pattern's, and the pipeline's own, are refused.
        json_schema_extra={
            "propertyNames": {"pattern": PARAMETER_NAME_PATTERN, "not": {"enum": sorted(RESERVED_PARAMETERS)}},
        },
    )
    timeout_seconds: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="How long to wait for Databricks before giving up and cancelling the run, in whole seconds.",
    )

    @field_validator("id")
    @classmethod
    def _not_only_dots(cls, value: str | None) -> str | None:
        # "." and ".." are path segments a URL resolves away: /pipelines/.. is
        # not this pipeline's address.
        if value is not None and set(value) == {"."}:
            raise ValueError("an id made only of dots cannot be addressed in a URL")
        return value

    @field_validator("parameters")
    @classmethod
    def _within_databricks_limits(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(RESERVED_PARAMETERS.intersection(value))
        if reserved:
            raise ValueError(f"parameter names reserved for the pipeline itself: {', '.join(reserved)}")
        try:
            size = len(json.dumps(value, ensure_ascii=False).encode())
        except UnicodeEncodeError as exc:
            raise ValueError(f"parameters must be valid Unicode text: {exc.reason} at {exc.start}") from exc
        if size > MAX_PARAMETERS_BYTES:
            raise ValueError(f"parameters take {size} bytes as JSON; the limit is {MAX_PARAMETERS_BYTES}")
        return value


class DatabricksRunView(BaseModel):
    run_id: int
    run_page_url: str | None


class NotificationView(BaseModel):
    delivered: bool
    message_id: str | None
    error: str | None
    smtp_code: int | None


class PipelineStatus(BaseModel):
    """Where a pipeline stands, read from Resonate's durable state."""

    id: str
    state: PipelineState
    email: str
    parameters: dict[str, str]
    timeout_seconds: int
    databricks: DatabricksRunView | None = Field(description="The Databricks run, once triggered.")
    result: dict[str, Any] | None = None
    error: RunError | None = Field(default=None, description="Why the pipeline failed, timed out or was cancelled.")
    notification: NotificationView | None = None
    created_at: datetime
    updated_at: datetime


class CallbackRequest(_Document):
    """The notebook's report, signed with its pipeline's callback key."""

    promise_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    status: Literal["success", "failure"]
    result: dict[str, Any] | None = None
    error: RunError | None = None

    @model_validator(mode="after")
    def _error_goes_with_failure(self) -> CallbackRequest:
        if self.status == "failure" and self.error is None:
            raise ValueError("a failure callback needs an error: {\"type\": ..., \"message\": ...}")
        if self.status == "success" and self.error is not None:
            raise ValueError("a success callback carries a result, not an error")
        return self


class CallbackReceipt(BaseModel):
    promise_id: str
    pipeline_id: str
    outcome: Literal["accepted", "duplicate"] = Field(
        description="accepted: this callback settled the pipeline; duplicate: it repeated the outcome already recorded."
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable.")
    message: str = Field(description="What was wrong, for a person.")
    details: list[dict[str, Any]] | None = None


class LegacyRunStatus(BaseModel):
    """``GET /run``: the original example's answer, with the state beside it."""

    id: str
    state: PipelineState
    message: Literal["I am done", "working on it"]
