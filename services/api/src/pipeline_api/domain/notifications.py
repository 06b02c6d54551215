"""Databricks' job notifications: a hint that a run started or ended, never its outcome.

A job that cannot call back (a SQL, dbt or JAR task, a notebook nobody may
edit) is configured with a webhook notification destination pointing here
(``POST /notifications/databricks``). Databricks' generic webhook destinations
authenticate with HTTP basic auth only, and the payload names only the event,
the workspace, the job and the run, e.g.::

    {"event_type": "jobs.on_success", "workspace_id": "123",
     "run": {"run_id": 456}, "job": {"job_id": 789, "name": "Nightly refresh"}}

So a notification is treated as a hint and nothing more. It finds the
pipeline waiting on that run (the run's index promise, written by the worker
when it starts watching a run of a job that notifies) and dispatches one
check of the run at once, the same check the watchdog makes on its interval:
the worker reads the run from the Jobs API, and only what the Jobs API says
settles the pipeline. A forged notification, even with the right
credentials, can therefore cause at most an extra read of a run, and no more
than one per pipeline and event within ``NOTIFICATION_CHECK_WINDOW_SECONDS``:
the check's promise id carries the window, and Resonate creates an id once.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StrictInt, StringConstraints, ValidationError

from pipeline_shared.errors import InvalidNotification, NotificationsDisabled, NotificationUnauthorized

from ..settings import GatewaySettings

NOTIFICATION_PATH = "/notifications/databricks"

#: The events a job's webhook notifications send; any other is checked under "other".
KNOWN_EVENTS = frozenset(
    {
        "jobs.on_start",
        "jobs.on_success",
        "jobs.on_failure",
        "jobs.on_duration_warning_threshold_exceeded",
        "jobs.on_streaming_backlog_exceeded",
    }
)

#: A run id as Databricks sends it: a number, or a string of digits.
_DIGITS = re.compile(r"^[0-9]{1,19}$")


class _Lenient(BaseModel):
    # Databricks may add fields; only the ones read here are checked.
    model_config = ConfigDict(extra="ignore")


class RunRef(_Lenient):
    run_id: StrictInt | Annotated[str, StringConstraints(pattern=_DIGITS.pattern)]


class DatabricksNotification(_Lenient):
    """The webhook payload of a job notification."""

    event_type: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    run: RunRef

    @property
    def run_id(self) -> int:
        return int(self.run.run_id)

    @property
    def event(self) -> str:
        """The event as it goes into a check's id: one of :data:`KNOWN_EVENTS`, else ``other``."""
        return self.event_type.removeprefix("jobs.") if self.event_type in KNOWN_EVENTS else "other"


def authenticate_notification(authorization: str | None, settings: GatewaySettings) -> None:
    """Accept the destination's basic-auth credentials, compared in constant time."""
    password = settings.DATABRICKS_NOTIFICATION_PASSWORD
    if password is None:
        raise NotificationsDisabled(
            "this gateway takes no Databricks notifications: set DATABRICKS_NOTIFICATION_PASSWORD "
            "(and the destination's basic-auth credentials to match)"
        )
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        user, _, given = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user, given = "", None
    if scheme.lower() != "basic" or given is None:
        raise NotificationUnauthorized("send the notification destination's credentials with HTTP basic auth")
    # Both compared, always, so the time taken says nothing about which was wrong.
    user_ok = hmac.compare_digest(user.encode(), settings.DATABRICKS_NOTIFICATION_USERNAME.encode())
    password_ok = hmac.compare_digest(given.encode(), password.get_secret_value().encode())
    if not (user_ok and password_ok):
        raise NotificationUnauthorized("wrong user name or password for Databricks notifications")


def parse_notification(body: bytes) -> DatabricksNotification:
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidNotification(f"the notification body is not JSON: {exc}") from None
    try:
        return DatabricksNotification.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidNotification(f"not a Databricks job notification: {where}: {first['msg']}") from None
