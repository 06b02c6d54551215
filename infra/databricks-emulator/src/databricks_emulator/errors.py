"""Errors in the Databricks REST API's shape: ``{"error_code": ..., "message": ...}``.

Status codes and error codes follow what the real API answers, not what
would be tidiest: an unknown job or run is a 400 INVALID_PARAMETER_VALUE whose
message says it "does not exist" (databricks-sdk turns exactly that into
``ResourceDoesNotExist``), and authentication failures carry a numeric
``error_code`` as the real gateway's do.

What the emulator knowingly does not model answers 501 ``NOT_IMPLEMENTED``
(databricks-sdk raises ``NotImplemented``) with a message naming the endpoint
or field: a test that strays outside the model fails loudly instead of
passing on a silent default a workspace would not give.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An API call the emulator refuses; rendered as the real API would."""

    def __init__(
        self,
        status: int,
        error_code: str | int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}


def invalid_parameter(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def malformed_request(message: str) -> ApiError:
    return ApiError(400, "MALFORMED_REQUEST", message)


def missing_field(name: str) -> ApiError:
    return invalid_parameter(f"Missing required field: {name}")


def not_modelled(what: str, why: str) -> ApiError:
    """A call the real API would serve, outside what the emulator models."""
    return ApiError(
        501,
        "NOT_IMPLEMENTED",
        f"The Databricks emulator does not model {what}: {why} "
        "(see 'Knowingly not modelled' in infra/databricks-emulator/README.md).",
    )


def job_not_found(job_id: object) -> ApiError:
    return invalid_parameter(f"Job {job_id} does not exist.")


def run_not_found(run_id: object) -> ApiError:
    return invalid_parameter(f"Run {run_id} does not exist.")
