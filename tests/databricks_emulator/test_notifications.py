"""Webhook notifications: the refresh job tells a destination when its runs start and end.

The session's emulator has one notification destination, the session's
``webhook_sink`` with Basic credentials; the test bundle's refresh job names it
for on_start, on_success and on_failure, and names a second id for on_start
that no destination has. The sink is shared, so each test reads only what
concerns its own run.
"""

from __future__ import annotations

import base64
import json

import pytest
from databricks.sdk.service.jobs import RunLifeCycleState, RunResultState

from tests.support.emulator_process import DESTINATION_CREDENTIALS, DESTINATION_ID
from tests.support.emulator_runs import deliveries, set_job_plan, start, wait_terminated, wait_until


def received(sink, run_id: int) -> list[tuple[dict, dict]]:  # type: ignore[no-untyped-def]
    """What reached the sink about this run: (headers, payload) pairs."""
    found = []
    for request in list(sink.requests):
        payload = json.loads(request.body)
        if payload["run"]["run_id"] == run_id:
            found.append((request.headers, payload))
    return found


@pytest.fixture
def refresh(emulator, control):  # type: ignore[no-untyped-def]
    """The refresh job's id; its job plan (it has no pipeline_id) is cleared afterwards."""
    yield emulator.jobs["refresh"]
    control.delete(f"/emulator/faults/jobs/{emulator.jobs['refresh']}")


def test_a_run_notifies_its_start_and_its_success(workspace, emulator, control, webhook_sink, refresh):
    run = wait_terminated(workspace, start(workspace, refresh))
    assert run.state.result_state == RunResultState.SUCCESS

    start_ok, start_unknown, success = deliveries(control, run.run_id, 3)
    assert (start_ok["event_type"], start_ok["destination_id"], start_ok["status"]) == (
        "jobs.on_start",
        DESTINATION_ID,
        "delivered",
    )
    assert (start_unknown["destination_id"], start_unknown["status"]) == ("nobody-configured-this", "failed")
    assert start_unknown["error"] == "no notification destination has this id" and start_unknown["attempts"] == 0
    assert (success["event_type"], success["status"], success["attempts"]) == ("jobs.on_success", "delivered", 1)
    assert "nobody-configured-this" in emulator.log.read_text(), "the unknown id is logged"

    (start_headers, start_payload), (_, success_payload) = received(webhook_sink, run.run_id)
    assert start_payload == {
        "event_type": "jobs.on_start",
        "workspace_id": 1234567890123456,
        "run": {"run_id": run.run_id},
        "job": {"job_id": refresh, "name": "Nightly refresh"},
    }
    assert success_payload == {**start_payload, "event_type": "jobs.on_success"}
    username, password = DESTINATION_CREDENTIALS
    assert start_headers["authorization"] == "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    assert start_headers["content-type"] == "application/json"


def test_a_failed_run_notifies_failure(workspace, control, webhook_sink, refresh):
    set_job_plan(control, refresh, tasks={"refresh": {"fail": True}})

    run = wait_terminated(workspace, start(workspace, refresh))

    assert run.state.result_state == RunResultState.FAILED
    assert [delivery["event_type"] for delivery in deliveries(control, run.run_id, 3)] == [
        "jobs.on_start",
        "jobs.on_start",
        "jobs.on_failure",
    ]
    assert [payload["event_type"] for _, payload in received(webhook_sink, run.run_id)] == [
        "jobs.on_start",
        "jobs.on_failure",
    ]


def test_a_cancelled_run_notifies_failure(workspace, control, refresh):
    set_job_plan(control, refresh, tasks={"refresh": {"hang": True}})
    run_id = start(workspace, refresh)
    wait_until(workspace, run_id, lambda run: run.state.life_cycle_state == RunLifeCycleState.RUNNING)

    workspace.jobs.cancel_run(run_id)

    assert wait_terminated(workspace, run_id).state.result_state == RunResultState.CANCELED
    assert deliveries(control, run_id, 3)[-1]["event_type"] == "jobs.on_failure"


def test_sending_switched_off_records_what_would_have_gone_and_sends_nothing(workspace, control, webhook_sink, refresh):
    assert control.put("/emulator/notifications", json={"enabled": False}).json() == {"enabled": False}
    try:
        run = wait_terminated(workspace, start(workspace, refresh))
        held = deliveries(control, run.run_id, 3)
    finally:
        assert control.put("/emulator/notifications", json={"enabled": True}).json() == {"enabled": True}

    assert [(d["event_type"], d["status"]) for d in held if d["destination_id"] == DESTINATION_ID] == [
        ("jobs.on_start", "suppressed"),
        ("jobs.on_success", "suppressed"),
    ]
    assert received(webhook_sink, run.run_id) == []
    bad = control.put("/emulator/notifications", json={"enabled": "sometimes"})
    assert bad.status_code == 422 and "enabled" in bad.json()["message"]


def test_a_failing_destination_is_retried_a_few_times_without_holding_the_run_up(
    workspace, control, webhook_sink, refresh
):
    # The run lasts longer than the retries of its on_start, so the sink sees them in order.
    set_job_plan(control, refresh, tasks={"refresh": {"code": "CLOUD_FAILURE", "kill_after_seconds": 2.5}})
    webhook_sink.answer_with(503, 503, 503)

    run_id = start(workspace, refresh)
    wait_until(workspace, run_id, lambda run: run.state.life_cycle_state == RunLifeCycleState.RUNNING)
    assert (
        control.get("/emulator/notifications", params={"run_id": run_id}).json()["deliveries"][0]["status"] == "pending"
    )
    run = wait_terminated(workspace, run_id)

    assert run.state.result_state == RunResultState.FAILED
    start_delivery, _, failure = deliveries(control, run_id, 3)
    assert (start_delivery["status"], start_delivery["attempts"], start_delivery["http_status"]) == ("failed", 3, 503)
    assert (failure["event_type"], failure["status"]) == ("jobs.on_failure", "delivered")
    assert [payload["event_type"] for _, payload in received(webhook_sink, run_id)] == [
        "jobs.on_start",
        "jobs.on_start",
        "jobs.on_start",
        "jobs.on_failure",
    ]
