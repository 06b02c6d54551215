"""What integration tests do to the stack: call the gateway, use its web page, steer the emulator, read the mail sink.

Each helper talks to a published port on 127.0.0.1 only, and waits with a
deadline rather than sleeping.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from typing import Any

import httpx

from pipeline_api.auth.keys import DEVELOPMENT_API_KEY
from pipeline_api.ui.sessions import SESSION_COOKIE
from pipeline_shared import ids, promise_tree
from pipeline_shared.settings import DEVELOPMENT_SIGNING_SECRET
from pipeline_shared.signing import derive_callback_key, sign_callback

FINAL_STATES = {"succeeded", "failed", "cancelled", "timed_out"}

#: compose.yaml's development secret: the tests sign as the notebook would.
SIGNING_SECRET = DEVELOPMENT_SIGNING_SECRET

#: The worker's idempotency namespace on the stack (compose leaves the default).
IDEMPOTENCY_NAMESPACE = "resonate-databricks"

#: The emulator's default notification destination, which compose points at the gateway (basic auth).
NOTIFICATION_CREDENTIALS = ("databricks", "dev-only-insecure-notification-password")

#: The development stack accepts the development API key (the test stack's keys file lists it too).
AUTHENTICATED = {"authorization": f"Bearer {DEVELOPMENT_API_KEY}"}
#: The development stack's Databricks emulator token (compose.yaml's DATABRICKS_EMULATOR_TOKEN
#: default): its Jobs API and its /emulator control routes need it.
EMULATOR_TOKEN = "dapi-emulator-dev-token"


def new_id(label: str = "it") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


class Gateway:
    def __init__(
        self, url: str, api_key: str = DEVELOPMENT_API_KEY, transport: httpx.BaseTransport | None = None
    ) -> None:
        """``transport``: how requests reach the gateway, e.g. a front over its replicas (tests/support/replicas.py)."""
        self.http = httpx.Client(
            base_url=url, timeout=30, headers={"authorization": f"Bearer {api_key}"}, transport=transport
        )

    def start(self, pipeline_id: str, **body: Any) -> httpx.Response:
        payload = {"id": pipeline_id, "email": f"{pipeline_id}@example.com", "parameters": {}} | body
        return self.http.post("/pipelines", json=payload)

    def status(self, pipeline_id: str) -> dict[str, Any]:
        response = self.http.get(f"/pipelines/{pipeline_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(self, pipeline_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        """The status document once it is in one of ``states``; fails early on another final state."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status(pipeline_id)
            if doc["state"] in states:
                return doc
            if doc["state"] in FINAL_STATES:
                raise AssertionError(f"{pipeline_id} ended {doc['state']}, expected {states}: {doc}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{pipeline_id} still {doc['state']} after {timeout}s: {doc}")
            time.sleep(0.1)

    def page(self, **params: Any) -> dict[str, Any]:
        """One page of ``GET /pipelines``."""
        response = self.http.get("/pipelines", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def timeline(self, pipeline_id: str) -> dict[str, Any]:
        response = self.http.get(f"/pipelines/{pipeline_id}/events")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_timeline(self, pipeline_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
        """The timeline once the index shows the pipeline ``state`` and finished (it trails Resonate a little)."""
        deadline = time.monotonic() + timeout
        while True:
            timeline = self.timeline(pipeline_id)
            if timeline["state"] == state and any(e["kind"] == "finished" for e in timeline["events"]):
                return timeline
            if time.monotonic() > deadline:
                raise AssertionError(f"after {timeout}s the index shows {pipeline_id} {timeline['state']}: {timeline}")
            time.sleep(0.1)

    def signed_callback(
        self, pipeline_id: str, document: dict[str, Any], *, at: datetime | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A callback body and headers signed as the pipeline's notebook would sign them."""
        # Every pipeline the stack's gateway starts is run by its code: a standalone job's run is its step 1.
        promise_id = promise_tree.callback_promise_id(promise_tree.step_base(pipeline_id, "1"))
        body = json.dumps({"promise_id": promise_id} | document).encode()
        headers = sign_callback(derive_callback_key(SIGNING_SECRET, promise_id), body, at=at)
        return body, headers | {"content-type": "application/json"}

    def post_callback(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post("/callbacks/databricks", content=body, headers=headers)


class UiBrowser:
    """One cookie jar on the stack's web page, and the CSRF token the page last showed."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.csrf = ""

    def sign_in(self, credential: str = DEVELOPMENT_API_KEY) -> None:
        """Sign in as the sign-in form does."""
        form = self.http.get("/ui/sign-in").text
        signed = self.http.post(
            "/ui/sign-in",
            data={
                "credential": credential,
                "sign_in_token": hidden(form, "sign_in_token"),
                "next": "/ui/",
            },
        )
        assert signed.status_code == 303, signed.text
        self.csrf = hidden(self.http.get("/ui/").text, "csrf_token")

    def use(self, cookie: str) -> None:
        """Hold this session cookie, and no other."""
        self.http.cookies.clear()
        self.http.cookies.set(SESSION_COOKIE, cookie)

    def cancel(self, pipeline_id: str, csrf: str | None = None) -> httpx.Response:
        return self.http.post(f"/ui/pipelines/{pipeline_id}/cancel", data={"csrf_token": csrf or self.csrf})


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the page"
    return match.group(1)


class Emulator:
    def __init__(self, url: str, token: str = EMULATOR_TOKEN) -> None:
        self.http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30)

    def plan(self, pipeline_id: str, **plan: Any) -> None:
        """Fault and timing plan for this pipeline's runs (see the emulator's README)."""
        response = self.http.put(f"/emulator/faults/pipelines/{pipeline_id}", json=plan)
        assert response.status_code == 200, response.text

    def release(self, pipeline_id: str) -> None:
        """Let the pipeline's held runs (a plan's ``held``) go on."""
        response = self.http.post(f"/emulator/pipelines/{pipeline_id}/release")
        assert response.status_code == 200, response.text

    def plan_run_of(self, pipeline_id: str, step: str = "1", **plan: Any) -> None:
        """Fault plan for the run of a job step whose job takes no ``pipeline_id``: keyed by its run-now token."""
        self.plan(ids.idempotency_token(IDEMPOTENCY_NAMESPACE, promise_tree.step_base(pipeline_id, step)), **plan)

    def notifications(self, *, enabled: bool) -> None:
        """Switch the emulator's webhook notifications on or off."""
        response = self.http.put("/emulator/notifications", json={"enabled": enabled})
        assert response.status_code == 200, response.text

    def run(self, run_id: int) -> dict[str, Any]:
        response = self.http.get(f"/emulator/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def counters(self, pipeline_id: str) -> dict[str, Any]:
        return self.http.get(f"/emulator/pipelines/{pipeline_id}").json()

    def ended_runs(self, pipeline_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The pipeline's runs, once each has a result (a run ends a little after its notebook calls back)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(pipeline_id)
            if all(run["result_state"] is not None for run in runs):
                return runs
            assert time.monotonic() < deadline, f"{pipeline_id}'s runs did not end within {timeout}s: {runs}"
            time.sleep(0.1)

    def runs(self, pipeline_id: str) -> list[dict[str, Any]]:
        return self.http.get("/emulator/runs", params={"pipeline_id": pipeline_id}).json()["runs"]


class MailSink:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=150)

    def wait_for(self, pipeline_id: str, timeout: float = 60) -> dict[str, Any]:
        """The one email about ``pipeline_id``, once it has arrived."""
        [message] = self.wait_for_count(pipeline_id, 1, timeout)
        return message

    def wait_for_count(self, pipeline_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The emails about ``pipeline_id``, once at least ``count`` have arrived."""
        params = {"pipeline_id": pipeline_id, "count": count, "timeout": timeout}
        response = self.http.get("/messages/wait", params=params)
        assert response.status_code == 200, f"not {count} emails for {pipeline_id} within {timeout}s: {response.text}"
        return response.json()["messages"]

    def messages(self, pipeline_id: str) -> list[dict[str, Any]]:
        return self.http.get("/messages", params={"pipeline_id": pipeline_id}).json()["messages"]


#: The timeline of a pipeline started before pipelines were code (the one-job workflow) whose run failed,
#: that a person repaired once, and that then succeeded.
REPAIRED_BY_A_PERSON = [
    "started",
    "run_triggered",
    "callback_received",
    "awaiting_repair",
    "email_delivered",
    "repair_requested",
    "repaired",
    "callback_received",
    "email_delivered",
    "finished",
]

#: The same for a pipeline started today, whose job runs as its step 1: the step starts and ends around its run.
STEP_REPAIRED_BY_A_PERSON = [
    "started",
    "step_started",
    *REPAIRED_BY_A_PERSON[1:-2],
    "step_ended",
    *REPAIRED_BY_A_PERSON[-2:],
]

#: The events that say how a run ended, one per attempt.
OUTCOME_EVENTS = {"callback_received", "outcome_read_from_run", "cancel_requested", "timed_out"}


def assert_timeline_tells(doc: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The timeline of a finished pipeline is complete and in order, and agrees with its status document."""
    kinds = [event["kind"] for event in events]
    where = f"{doc['id']}: {kinds}"
    assert kinds[0] == "started" and kinds[-1] == "finished", where
    assert kinds.count("started") == 1 and kinds.count("finished") == 1, where
    assert events[-1]["data"]["state"] == doc["state"], where
    times = [datetime.fromisoformat(event["at"]) for event in events]
    assert times == sorted(times), f"{where}: not in time order: {[event['at'] for event in events]}"
    assert len({event["seq"] for event in events}) == len(events), f"{where}: an event twice"
    triggered = [event["data"]["run_id"] for event in events if event["kind"] == "run_triggered"]
    jobs = [step for step in doc.get("steps") or [] if step["kind"] == "job"]
    if len(jobs) > 1:
        # Several jobs: each step's run triggered once; what the document says of one run is its steps'.
        runs = [step["run"]["run_id"] for step in jobs if step["run"]]
        assert sorted(triggered) == sorted(runs), f"{where}: runs {triggered}, steps' {runs}"
        assert_emails_told(doc, events, where)
        return
    run = doc["databricks"]
    assert triggered == ([run["run_id"]] if run else []), f"{where}: runs {triggered}, status {run}"
    if run is not None:
        outcomes = [kind for kind in kinds if kind in OUTCOME_EVENTS]
        assert len(outcomes) == max(1, len(doc["attempts"])), f"{where}: outcomes {outcomes}, {doc['attempts']}"
        assert kinds.index("run_triggered") < kinds.index(outcomes[0]), where
    # The status document's parameters are what the run last used: the last repair's, else the start's.
    started_with = events[0]["data"]["parameters"]
    asked = [event["data"]["parameters"] for event in events if event["kind"] == "repair_requested"]
    in_use = next((parameters for parameters in reversed(asked) if parameters), started_with)
    assert (doc["parameters"], doc["parameters_at_start"]) == (
        in_use,
        started_with if in_use != started_with else None,
    ), f"{where}: parameters"
    assert_emails_told(doc, events, where)


def assert_emails_told(doc: dict[str, Any], events: list[dict[str, Any]], where: str) -> None:
    """The timeline's last email event is the outcome's, as the status document's receipt says."""
    emails = [event for event in events if event["kind"] in {"email_delivered", "email_refused"}]
    note = doc["notification"]
    if note is not None:
        assert emails, f"{where}: no email event, status {note}"
        last = emails[-1]
        assert last["kind"] == ("email_delivered" if note["delivered"] else "email_refused"), f"{where}: {note}"
        if note["delivered"]:
            assert last["data"]["message_id"] == note["message_id"], f"{where}: {last} vs {note}"
