"""What the client raises: one tree, rooted at :class:`PipelineError`.

Every refusal of the gateway carries a JSON body with a stable ``code`` and a
human ``message``; the exception keeps both, and the HTTP ``status``, so a
caller branches on ``code`` (stable) rather than on the wording::

    PipelineError               .status (None when no answer came), .code, .message
    ├── InvalidRequest          400, 413, 422: the request was wrong; .details says where
    ├── Unauthorized            401: no key, or one the gateway does not know
    ├── Forbidden               403: the key may not do this, or not to this pipeline
    ├── NotFound                404: no such pipeline (or job)
    ├── Conflict                409: the id is taken by another request, or the state forbids it
    ├── RateLimited             429: too many starts; .retry_after in seconds
    ├── Unavailable             502, 503, 504: the gateway or what it depends on is away
    ├── ConnectionFailed        no answer at all: refused, reset, timed out
    └── WaitTimedOut            wait() gave up before the pipeline got where it was asked to
"""

from __future__ import annotations

from typing import Any

import httpx


class PipelineError(Exception):
    """The gateway refused, could not be reached, or a wait ran out of time."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details
        #: Seconds the gateway asked to wait (``Retry-After``), when it said.
        self.retry_after = retry_after


class InvalidRequest(PipelineError):
    """400, 413 or 422: fix the request (``details`` names the fields) before sending it again."""


class Unauthorized(PipelineError):
    """401: send an API key this gateway knows (``PIPELINES_API_KEY``)."""


class Forbidden(PipelineError):
    """403: the key's principal may not do this, or not to this pipeline."""


class NotFound(PipelineError):
    """404: no such pipeline, or not one this key may see."""


class Conflict(PipelineError):
    """409: the id was started with another request, or the pipeline's state forbids the action."""


class RateLimited(PipelineError):
    """429: too many requests; still so after the client's own retries."""


class Unavailable(PipelineError):
    """502, 503 or 504: the gateway or its database is away; still so after the client's own retries."""


class ConnectionFailed(PipelineError):
    """No HTTP answer: the gateway is not listening, or the connection broke."""


class WaitTimedOut(PipelineError, TimeoutError):
    """``wait`` reached its timeout; the pipeline goes on, and ``last`` is where it stood."""

    def __init__(self, message: str, last: Any) -> None:
        super().__init__(message, code="wait_timed_out")
        self.last = last


#: The exception for each refusal; any other status is a plain PipelineError.
ERROR_BY_STATUS: dict[int, type[PipelineError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, when it is a number (the gateway never sends an HTTP date)."""
    value = response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def error_from_response(response: httpx.Response, hint: str = "") -> PipelineError:
    """The exception for a refusal, from its status and its ``{"code", "message", "details"}`` body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": response.text or response.reason_phrase}
    kind = ERROR_BY_STATUS.get(response.status_code, PipelineError)
    details = body.get("details")
    return kind(
        f"{body.get('message', response.text)}{hint}",
        status=response.status_code,
        code=str(body.get("code", "")),
        details=details if isinstance(details, list) else None,
        retry_after=retry_after_seconds(response),
    )


def connection_failed(base_url: object, exc: Exception) -> ConnectionFailed:
    return ConnectionFailed(f"cannot reach the gateway at {base_url}: {exc}", code="unreachable")
