"""What the sync and async clients share: requests as data, and the rules for retrying and waiting.

Both clients do the same HTTP, one blocking and one awaiting; everything
that is not the I/O itself lives here once, so the two cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from .errors import ConnectionFailed, PipelineError, RateLimited, Unavailable, connection_failed, error_from_response
from .keys import DEVELOPMENT_API_KEY
from .models import PipelineState, PipelineStatus

#: A request that took longer than this is given up on (a stream's reads have their own limit).
DEFAULT_TIMEOUT = 15.0
#: The longest a call waits in all for the gateway to take it again after 503 or 429.
DEFAULT_MAX_RETRY_WAIT = 60.0
#: The wait after a 503 or 429 that says no Retry-After.
DEFAULT_RETRY_DELAY = 1.0
#: The gateway sends a keepalive every 15 s on a stream: three missed mean the connection is dead.
STREAM_READ_TIMEOUT = 45.0
#: Between reconnections of a dropped stream, unless its ``retry:`` field says otherwise.
RECONNECT_DELAY = 1.0
#: Failed connections in a row, with no event between, after which ``wait`` stops trying the
#: stream and reads the status document instead.
STREAM_FAILURES_BEFORE_POLLING = 3
#: Between two reads of the status document when ``wait`` polls.
DEFAULT_POLL_INTERVAL = 2.0
#: A stream's failures worth reconnecting on: the connection dropped, or the gateway or its
#: database is momentarily away.
RECONNECTABLE = (Unavailable, RateLimited, ConnectionFailed)


def api_key_or_default(api_key: str | None) -> tuple[str, bool]:
    """The key to send, and whether it is the development key (for the hint a 401 then gets)."""
    key = api_key or os.environ.get("PIPELINES_API_KEY") or None
    return (key, False) if key else (DEVELOPMENT_API_KEY, True)


def headers(api_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}", "accept": "application/json"}


def development_key_hint(response: httpx.Response, using_development_key: bool) -> str:
    if response.status_code == 401 and using_development_key:
        return " (PIPELINES_API_KEY is not set, so the development key was sent)"
    return ""


@dataclass
class RetryBudget:
    """How long one call may still wait for a gateway that answered 503 or 429."""

    max_wait: float
    waited: float = 0.0

    def delay_for(self, error: PipelineError) -> float | None:
        """Seconds to wait before trying again, or None to raise ``error`` now."""
        if not isinstance(error, Unavailable | RateLimited) or error.status not in (429, 503):
            return None
        delay = DEFAULT_RETRY_DELAY if error.retry_after is None else error.retry_after
        if self.waited + delay > self.max_wait:
            return None
        self.waited += delay
        return delay


def raise_for(response: httpx.Response, using_development_key: bool) -> None:
    if response.is_error:
        raise error_from_response(response, development_key_hint(response, using_development_key))


def unreachable(base_url: object, exc: Exception) -> PipelineError:
    return connection_failed(base_url, exc)


def start_body(
    job: str | None,
    email: str,
    parameters: Mapping[str, str] | None,
    pipeline_id: str | None,
    timeout_seconds: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email, "parameters": dict(parameters or {})}
    if pipeline_id is not None:
        body["id"] = pipeline_id
    if job is not None:
        body["job"] = job
    if timeout_seconds is not None:
        body["timeout_seconds"] = timeout_seconds
    return body


def approval_body(gate: str | None, comment: str) -> dict[str, Any]:
    """The body of approve and reject: the gate (its name or step id) when one is named, and the comment."""
    body: dict[str, Any] = {"comment": comment}
    if gate is not None:
        body["gate"] = gate
    return body


def repair_body(parameters: Mapping[str, str] | None, step: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"parameters": dict(parameters or {})}
    if step is not None:
        body["step"] = step
    return body


def abandon_body(step: str | None) -> dict[str, Any] | None:
    """None when no step is named: today's bodiless abandon, which every gateway takes."""
    return None if step is None else {"step": step}


def _instant(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def list_params(
    state: str | Iterable[str] | None,
    job: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if state is not None:
        params["state"] = [state] if isinstance(state, str) else [str(s) for s in state]
    if job is not None:
        params["job"] = job
    if created_after is not None:
        params["created_after"] = _instant(created_after)
    if created_before is not None:
        params["created_before"] = _instant(created_before)
    if cursor is not None:
        params["cursor"] = cursor
    return params


@dataclass
class CursorGuard:
    """Stops a listing whose gateway hands back a cursor it gave before (it would never end)."""

    seen: set[str | None] = field(default_factory=lambda: {None})

    def check(self, cursor: str) -> None:
        if cursor in self.seen:
            raise PipelineError(f"the gateway sent cursor {cursor!r} twice", code="cursor_loop")
        self.seen.add(cursor)


def wait_is_over(status: PipelineStatus, stop_at_awaiting_repair: bool, stop_at_awaiting_approval: bool = True) -> bool:
    """A final state always ends a wait; so does waiting for a person (a repair, an approval) unless the
    caller waits through it."""
    return (
        status.state.final
        or (stop_at_awaiting_repair and status.state is PipelineState.AWAITING_REPAIR)
        or (stop_at_awaiting_approval and status.state is PipelineState.AWAITING_APPROVAL)
    )


#: The timeline's events that say a pipeline now waits for a person, and the state each means
#: (the gateway's index: a job step's repair window; an approval gate opening).
WAITING_EVENT_STATES = {"awaiting_repair": "awaiting_repair", "gate_opened": "awaiting_approval"}
#: Timeline events after which the status document may have reached where a wait stops.
OUTCOME_EVENT_KINDS = frozenset({*WAITING_EVENT_STATES, "finished"})


def stream_timeout(connect: float | None, remaining: float) -> httpx.Timeout:
    read = max(min(STREAM_READ_TIMEOUT, remaining), 0.1)
    return httpx.Timeout(connect, read=read)
