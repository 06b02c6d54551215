"""A job's webhook notifications: POSTs to notification destinations when its runs start and end.

A workspace's job names destinations by id (``webhook_notifications:
on_start: [{id: ...}]``); an admin configures each destination, here through
``DATABRICKS_EMULATOR_NOTIFICATION_DESTINATIONS`` (a URL, and the user name
and password of the HTTP Basic authentication Databricks' generic webhook
destinations offer). The body is Databricks' HTTP webhook payload and nothing
more::

    {"event_type": "jobs.on_start", "workspace_id": 1234567890123456,
     "run": {"run_id": 52}, "job": {"job_id": 1003, "name": "Nightly refresh"}}

When they are sent (Databricks' job notifications documentation):

- ``on_start`` when the run starts RUNNING;
- ``on_success`` when it ends SUCCESS, or SUCCESS_WITH_FAILURES, which counts
  as a success;
- ``on_failure`` when it ends otherwise: FAILED, TIMEDOUT, INTERNAL_ERROR,
  CANCELED (unless ``notification_settings.no_alert_for_canceled_runs``),
  SKIPPED (unless ``no_alert_for_skipped_runs``).

A repaired run starts and ends again, so it notifies again.
``on_duration_warning_threshold_exceeded`` and
``on_streaming_backlog_exceeded`` need health rules and streams the emulator
does not have: they are accepted in the bundle and never sent.

Delivery never holds a run up: each one is a background task of a few
attempts with short timeouts, on connection errors, 5xx and 429. Every
delivery is recorded for the control API, including those to a destination
id the emulator does not know (logged, and recorded as failed) and those held
back while sending is switched off (``suppressed``), so a test can show what
a service does without them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from databricks_emulator.runs import JobRun, LifeCycle, ResultState, now_ms

log = logging.getLogger("databricks_emulator.notifications")

#: Attempts per delivery, the wait before each retry, and one attempt's timeout.
ATTEMPTS: Final = 3
RETRY_WAITS_SECONDS: Final = (0.5, 1.0)
ATTEMPT_TIMEOUT_SECONDS: Final = 2.0


class NotificationDestination(BaseModel):
    """A generic webhook destination, as an admin configures one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://\S+$")
    username: str | None = None
    password: str | None = None


@dataclass
class Delivery:
    """One notification to one destination, and how sending it went."""

    id: int
    event_type: str
    run_id: int
    job_id: int
    destination_id: str
    payload: dict[str, Any]
    url: str | None = None
    #: pending, delivered, failed or suppressed.
    status: str = "pending"
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    created_time: int = field(default_factory=now_ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "run_id": self.run_id,
            "job_id": self.job_id,
            "destination_id": self.destination_id,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "http_status": self.http_status,
            "error": self.error,
            "payload": self.payload,
            "created_time": self.created_time,
        }


def ending_event(run: JobRun) -> str | None:
    """``on_success`` or ``on_failure`` for a run that just ended, or None when it sends neither."""
    if run.life_cycle is LifeCycle.SKIPPED:
        return None if run.job.no_alert_for_skipped_runs else "on_failure"
    if run.result_state in (ResultState.SUCCESS, ResultState.SUCCESS_WITH_FAILURES):
        return "on_success"
    if run.result_state is ResultState.CANCELED and run.job.no_alert_for_canceled_runs:
        return None
    return "on_failure"


class Notifier:
    """Sends and records every job's webhook notifications."""

    def __init__(self, destinations: dict[str, NotificationDestination], workspace_id: str) -> None:
        self.destinations = destinations
        self.workspace_id = int(workspace_id) if workspace_id.isdigit() else workspace_id
        self.enabled = True
        self.deliveries: list[Delivery] = []
        self._sending: set[asyncio.Task[None]] = set()

    def payload(self, event: str, run: JobRun) -> dict[str, Any]:
        return {
            "event_type": f"jobs.{event}",
            "workspace_id": self.workspace_id,
            "run": {"run_id": run.run_id},
            "job": {"job_id": run.job.job_id, "name": run.job.name},
        }

    def notify(self, event: str, run: JobRun) -> None:
        """Send ``event`` about ``run`` to every destination its job names for it. Never awaits."""
        for destination_id in run.job.webhooks.get(event, ()):
            delivery = Delivery(
                id=len(self.deliveries) + 1,
                event_type=f"jobs.{event}",
                run_id=run.run_id,
                job_id=run.job.job_id,
                destination_id=destination_id,
                payload=self.payload(event, run),
            )
            self.deliveries.append(delivery)
            destination = self.destinations.get(destination_id)
            if destination is None:
                delivery.status = "failed"
                delivery.error = "no notification destination has this id"
                log.warning(
                    "job %s (%s) notifies %s of %s, but no destination has that id "
                    "(see DATABRICKS_EMULATOR_NOTIFICATION_DESTINATIONS)",
                    run.job.job_id, run.job.name, destination_id, delivery.event_type,
                )  # fmt: skip
                continue
            delivery.url = destination.url
            if not self.enabled:
                delivery.status = "suppressed"
                continue
            sending = asyncio.create_task(self._deliver(delivery, destination), name=f"notify-{delivery.id}")
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _deliver(self, delivery: Delivery, destination: NotificationDestination) -> None:
        body = json.dumps(delivery.payload).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "databricks-emulator"}
        if destination.username is not None or destination.password is not None:
            credentials = f"{destination.username or ''}:{destination.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        for attempt in range(ATTEMPTS):
            delivery.attempts = attempt + 1
            status, error = await asyncio.to_thread(_post, destination.url, body, headers)
            delivery.http_status, delivery.error = status, error
            if status is not None and 200 <= status < 300:
                delivery.status = "delivered"
                return
            if status is not None and status < 500 and status != 429:
                break
            if attempt < len(RETRY_WAITS_SECONDS):
                await asyncio.sleep(RETRY_WAITS_SECONDS[attempt])
        delivery.status = "failed"
        log.warning(
            "notification %s of run %s to %s failed after %d attempt(s): %s",
            delivery.event_type, delivery.run_id, destination.url, delivery.attempts, error or status,
        )  # fmt: skip

    async def shutdown(self) -> None:
        for sending in list(self._sending):
            sending.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
    """One POST: its HTTP status, or None and why the destination could not be reached."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=ATTEMPT_TIMEOUT_SECONDS) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, str(getattr(exc, "reason", exc))
