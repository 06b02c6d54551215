"""The emulator through databricks-sdk: what the worker will see of a pipeline run, end to end.

Every test starts real runs of the test bundle's pipeline job (its notebook,
``bundle/notebooks/csv_shape.py``, imports the module next to it to sign its
callback) and, where the notebook calls back, checks the callback that
reaches a receiver on 127.0.0.1 with the gateway's own verification code.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import (
    InvalidParameterValue,
    PermissionDenied,
    ResourceDoesNotExist,
)
from databricks.sdk.service.jobs import (
    RunLifeCycleState,
    RunLifecycleStateV2State,
    RunResultState,
    TerminationCodeCode,
    TerminationTypeType,
)

from pipeline_shared.signing import verify_callback
from tests.support.emulator_runs import (
    Pipeline,
    counters,
    run_details,
    run_to_end,
    set_plan,
    wait_terminated,
    wait_until,
)


def process_gone(pid: int, timeout: float = 10) -> bool:
    """Whether ``pid`` no longer exists (polling: the kill is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_run_succeeds_and_its_signed_callback_verifies(workspace, emulator, receiver, pipeline_id):
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/callbacks")

    waiter = workspace.jobs.run_now(
        emulator.job_id,
        job_parameters=pipeline.job_parameters,
        idempotency_token=f"tok-{pipeline_id}",
    )
    run = wait_terminated(workspace, waiter.run_id)

    assert run.state.result_state == RunResultState.SUCCESS
    assert run.status.state == RunLifecycleStateV2State.TERMINATED
    assert run.status.termination_details.code == TerminationCodeCode.SUCCESS
    assert run.status.termination_details.type == TerminationTypeType.SUCCESS
    assert run.job_id == emulator.job_id and run.run_name == "Resonate pipeline"
    assert run.run_page_url.startswith(emulator.url) and str(run.run_id) in run.run_page_url
    assert run.start_time > 0 and run.end_time >= run.start_time
    assert {p.name: p.value for p in run.job_parameters} == {**pipeline.job_parameters, "source": ""}
    [task] = run.tasks
    assert task.run_id != run.run_id and task.state.result_state == RunResultState.SUCCESS
    assert task.execution_duration > 0

    [callback] = receiver.wait_for(1)
    assert callback.path == "/callbacks"
    verify_callback(pipeline.key, callback.body, callback.headers)
    payload = json.loads(callback.body)
    assert payload["promise_id"] == pipeline.promise_id and payload["status"] == "success"
    assert payload["result"]["source"] == "built-in sample"
    assert payload["result"]["row_count"] == 6 and payload["result"]["column_count"] == 5
    assert {p.name: p.value for p in run.job_parameters}["source"] == "", "defaults are filled in"

    output = workspace.jobs.get_run_output(task.run_id)
    assert json.loads(output.notebook_output.result) == payload["result"]
    assert output.metadata.run_id == task.run_id


def test_job_parameters_reach_the_notebook_as_widgets(workspace, emulator, receiver, pipeline_id):
    receiver.files["/data/sales.csv"] = b"region,units,price\nnorth,3,2.5\nsouth,,4\nnorth,5,1.5\n"
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb", source=f"{receiver.url}/data/sales.csv")

    run = run_to_end(workspace, emulator.job_id, pipeline)

    assert run.state.result_state == RunResultState.SUCCESS
    result = json.loads(receiver.wait_for(1)[0].body)["result"]
    assert result == {
        "source": f"{receiver.url}/data/sales.csv",
        "row_count": 3,
        "column_count": 3,
        "columns": ["region", "units", "price"],
    }


def test_run_passes_through_its_states_and_waits_without_a_process(workspace, emulator, control, receiver, pipeline_id):
    set_plan(control, pipeline_id, start_delay_seconds=1.0)
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")
    run_id = workspace.jobs.run_now(emulator.job_id, job_parameters=pipeline.job_parameters).run_id

    pending = wait_until(workspace, run_id, lambda r: r.state.life_cycle_state == RunLifeCycleState.PENDING)
    assert pending.status.state == RunLifecycleStateV2State.PENDING
    assert run_details(control, run_id)["tasks"][0]["pid"] is None, "a delayed run must not hold a process"

    seen = set()
    run = wait_until(
        workspace,
        run_id,
        lambda r: seen.add(r.state.life_cycle_state) or r.state.life_cycle_state == RunLifeCycleState.TERMINATED,
    )
    assert RunLifeCycleState.RUNNING in seen
    assert run.state.result_state == RunResultState.SUCCESS
    assert run.tasks[0].setup_duration >= 1000


def test_same_idempotency_token_gives_one_run_also_concurrently(workspace, emulator, control, receiver, pipeline_id):
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")
    token = f"tok-{pipeline_id}"
    run_ids: list[int] = []

    def trigger() -> None:
        waiter = workspace.jobs.run_now(
            emulator.job_id, job_parameters=pipeline.job_parameters, idempotency_token=token
        )
        run_ids.append(waiter.run_id)

    threads = [threading.Thread(target=trigger) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trigger()  # and once more, after the run exists

    assert len(run_ids) == 21 and len(set(run_ids)) == 1
    seen = counters(control, pipeline_id)
    assert seen["run_now_calls"] == 21 and seen["runs"] == 1 and seen["run_ids"] == run_ids[:1]
    wait_terminated(workspace, run_ids[0])
    assert len(receiver.wait_for(1)) == 1


def test_failing_notebook_fails_the_run_and_calls_back_with_the_error(
    workspace, emulator, control, receiver, pipeline_id
):
    set_plan(control, pipeline_id, notebook="fail")
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")

    run = run_to_end(workspace, emulator.job_id, pipeline)

    assert run.state.result_state == RunResultState.FAILED
    assert "FileNotFoundError" in run.state.state_message
    assert run.status.termination_details.code == TerminationCodeCode.RUN_EXECUTION_ERROR
    assert run.status.termination_details.type == TerminationTypeType.CLIENT_ERROR
    [callback] = receiver.wait_for(1)
    verify_callback(pipeline.key, callback.body, callback.headers)
    payload = json.loads(callback.body)
    assert payload["status"] == "failure" and payload["error"]["type"] == "FileNotFoundError"
    assert "missing.csv" in payload["error"]["message"], "the fault named a missing source"
    output = workspace.jobs.get_run_output(run.tasks[0].run_id)
    assert output.error.startswith("FileNotFoundError:")
    assert "Traceback" in output.error_trace


def test_cancel_kills_the_notebook_process(workspace, emulator, control, receiver, pipeline_id):
    set_plan(control, pipeline_id, notebook="hang")
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")
    run_id = workspace.jobs.run_now(emulator.job_id, job_parameters=pipeline.job_parameters).run_id
    wait_until(workspace, run_id, lambda r: r.state.life_cycle_state == RunLifeCycleState.RUNNING)
    pid = run_details(control, run_id)["tasks"][0]["pid"]
    os.kill(pid, 0)  # alive while RUNNING

    started = time.monotonic()
    workspace.jobs.cancel_run(run_id)
    assert time.monotonic() - started < 1, "cancel must answer at once, as the real API does"
    run = wait_terminated(workspace, run_id)

    assert run.state.result_state == RunResultState.CANCELED
    assert run.state.user_cancelled_or_timedout is True
    assert run.status.termination_details.code == TerminationCodeCode.USER_CANCELED
    assert process_gone(pid)
    assert run_details(control, run_id)["tasks"][0]["returncode"] == -signal.SIGTERM
    assert run.tasks[0].state.result_state == RunResultState.CANCELED
    assert receiver.requests == []

    workspace.jobs.cancel_run(run_id)  # a no-op on a terminated run
    assert workspace.jobs.get_run(run_id).state.result_state == RunResultState.CANCELED


def test_cancel_while_waiting_to_start(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, start_delay_seconds=60)
    run_id = workspace.jobs.run_now(emulator.job_id, job_parameters={"pipeline_id": pipeline_id}).run_id
    wait_until(workspace, run_id, lambda r: r.state.life_cycle_state == RunLifeCycleState.PENDING)

    workspace.jobs.cancel_run(run_id)
    run = wait_terminated(workspace, run_id, timeout=5)

    assert run.state.result_state == RunResultState.CANCELED
    assert run.tasks[0].state.result_state == RunResultState.CANCELED
    assert run_details(control, run_id)["tasks"][0]["pid"] is None


def test_run_over_its_timeout_is_timed_out_and_killed(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, notebook="hang", timeout_seconds=1)
    run_id = workspace.jobs.run_now(emulator.job_id, job_parameters={"pipeline_id": pipeline_id}).run_id
    wait_until(workspace, run_id, lambda r: r.state.life_cycle_state == RunLifeCycleState.RUNNING)
    pid = run_details(control, run_id)["tasks"][0]["pid"]

    run = wait_terminated(workspace, run_id, timeout=10)

    assert run.state.result_state == RunResultState.TIMEDOUT
    assert run.state.user_cancelled_or_timedout is True
    assert "timed out" in run.state.state_message
    assert run.tasks[0].state.result_state == RunResultState.TIMEDOUT
    assert process_gone(pid)
    assert run_details(control, run_id)["tasks"][0]["returncode"] == -signal.SIGTERM


@pytest.mark.parametrize("status", [429, 503])
def test_sdk_rides_through_throttling_without_a_second_run(workspace, emulator, control, receiver, pipeline_id, status):
    set_plan(control, pipeline_id, run_now_errors=2, run_now_error_status=status, retry_after_seconds=0)
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")

    waiter = workspace.jobs.run_now(
        emulator.job_id,
        job_parameters=pipeline.job_parameters,
        idempotency_token=f"tok-{pipeline_id}",
    )

    seen = counters(control, pipeline_id)
    assert seen["run_now_calls"] == 3 and seen["run_now_rejected"] == 2
    assert seen["runs"] == 1 and seen["run_ids"] == [waiter.run_id]
    assert wait_terminated(workspace, waiter.run_id).state.result_state == RunResultState.SUCCESS


def test_a_client_timing_out_on_a_slow_answer_finds_the_same_run(emulator, control, receiver, pipeline_id):
    # The first answer comes after the client gave up; the run exists already,
    # so the SDK's retry with the same token must get it back, not a new one.
    set_plan(control, pipeline_id, slow_run_now_responses=1, slow_response_seconds=3)
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")
    impatient = WorkspaceClient(
        config=Config(host=emulator.url, token=emulator.token, http_timeout_seconds=1, retry_timeout_seconds=20)
    )

    waiter = impatient.jobs.run_now(
        emulator.job_id, job_parameters=pipeline.job_parameters, idempotency_token=f"tok-{pipeline_id}"
    )

    seen = counters(control, pipeline_id)
    assert seen["run_now_calls"] == 2 and seen["runs"] == 1 and seen["run_ids"] == [waiter.run_id]


def test_throttle_answers_on_the_wire(control, emulator, pipeline_id):
    set_plan(control, pipeline_id, run_now_errors=1, run_now_error_status=429, retry_after_seconds=7)
    response = control.post(
        "/api/2.2/jobs/run-now",
        json={"job_id": emulator.job_id, "job_parameters": {"pipeline_id": pipeline_id}},
        headers={"Authorization": f"Bearer {emulator.token}"},
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_lost_callback_run_still_succeeds_with_its_output(workspace, emulator, control, receiver, pipeline_id):
    set_plan(control, pipeline_id, notebook="drop_callback")
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")

    run = run_to_end(workspace, emulator.job_id, pipeline)

    assert run.state.result_state == RunResultState.SUCCESS
    assert receiver.requests == []  # the notebook process has ended: nothing more can come
    assert counters(control, pipeline_id)["dropped_callbacks"] == 1
    result = json.loads(workspace.jobs.get_run_output(run.tasks[0].run_id).notebook_output.result)
    assert result["row_count"] == 6


def test_get_output_of_the_job_run_is_refused_as_on_a_real_workspace(workspace, emulator, control, pipeline_id):
    run_id = workspace.jobs.run_now(emulator.job_id, job_parameters={"pipeline_id": pipeline_id}).run_id
    with pytest.raises(InvalidParameterValue, match="output of each individual task run"):
        workspace.jobs.get_run_output(run_id)
    task_run = workspace.jobs.get_run(workspace.jobs.get_run(run_id).tasks[0].run_id)
    assert task_run.job_run_id == run_id


def test_unknown_run_and_job(workspace, emulator, control):
    with pytest.raises(ResourceDoesNotExist):
        workspace.jobs.get_run(1)
    with pytest.raises(ResourceDoesNotExist):
        workspace.jobs.get_run_output(1)
    with pytest.raises(ResourceDoesNotExist):
        workspace.jobs.get(999_999)
    with pytest.raises(InvalidParameterValue, match="does not exist"):
        workspace.jobs.run_now(999_999)
    # On the wire it is the real API's 400, which the SDK maps to ResourceDoesNotExist.
    response = control.get("/api/2.2/jobs/runs/get?run_id=1", headers={"Authorization": f"Bearer {emulator.token}"})
    assert response.status_code == 400
    assert response.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Run 1 does not exist.",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/emulator/runs"),
        ("GET", "/emulator/runs/1"),
        ("GET", "/emulator/faults"),
        ("PUT", "/emulator/faults"),
        ("DELETE", "/emulator/faults"),
        ("PUT", "/emulator/faults/pipelines/x"),
        ("GET", "/emulator/pipelines/x"),
        ("GET", "/emulator/notifications"),
        ("PUT", "/emulator/notifications"),
        ("GET", "/emulator/oauth"),
        ("POST", "/emulator/oauth/expire"),
    ],
)
def test_the_control_routes_need_the_token(emulator, control, method, path):
    before = control.get("/emulator/faults").json()
    for headers, status in [({}, 401), ({"Authorization": "Bearer dapi-wrong"}, 403)]:
        refused = httpx.request(method, f"{emulator.url}{path}", headers=headers, json={"enabled": False})
        assert refused.status_code == status and set(refused.json()) == {"error_code", "message"}, refused.text
    assert control.get("/emulator/faults").json() == before, "nothing changed"
    assert control.get("/emulator/notifications").json()["enabled"] is True


def test_no_listing_hands_out_a_runs_signing_key(emulator, workspace, control, receiver, pipeline_id):
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")
    run = run_to_end(workspace, emulator.job_id, pipeline)

    [listed] = control.get("/emulator/runs", params={"pipeline_id": pipeline_id}).json()["runs"]
    assert listed["job_parameters"]["callback_signing_key"] == "(redacted)"
    assert listed["job_parameters"]["callback_promise_id"] == pipeline.promise_id, "the rest is shown"
    for shown in (control.get("/emulator/runs"), control.get(f"/emulator/runs/{run.run_id}"), httpx.get(emulator.url)):
        assert shown.status_code == 200 and pipeline.key not in shown.text


def test_authentication(emulator, control):
    with pytest.raises(PermissionDenied, match="Invalid access token"):
        emulator.client(token="dapi-wrong").jobs.get(emulator.job_id)
    response = httpx.get(f"{emulator.url}/api/2.2/jobs/get?job_id={emulator.job_id}")
    assert response.status_code == 401
    assert response.json() == {
        "error_code": 401,
        "message": "Credential was not sent or was of an unsupported type for this API.",
    }


def test_undeclared_job_parameters_are_refused(workspace, emulator):
    # Each job is checked against its own declared parameters: `source` is the pipeline job's only.
    with pytest.raises(InvalidParameterValue, match="source; it defines: pipeline_id, customer, report_bytes"):
        workspace.jobs.run_now(emulator.jobs["report"], job_parameters={"source": "/tmp/x.csv"})
    with pytest.raises(InvalidParameterValue, match="parameters"):
        workspace.jobs.run_now(emulator.job_id, job_parameters={"parameters": "{}"})
    with pytest.raises(InvalidParameterValue, match="job_parameters"):
        workspace.jobs.run_now(emulator.job_id, notebook_params={"pipeline_id": "x"})


def test_job_settings_come_from_the_bundle(workspace, emulator):
    job = workspace.jobs.get(emulator.job_id)
    assert [p.name for p in job.settings.parameters] == [
        "pipeline_id",
        "callback_promise_id",
        "callback_url",
        "callback_signing_key",
        "source",
    ]
    assert job.settings.max_concurrent_runs == 1000, "${var.max_concurrent_runs}'s default"
    assert job.settings.timeout_seconds == 120, "from DATABRICKS_EMULATOR_BUNDLE_VARIABLES"
    assert job.settings.queue.enabled is True
    assert job.settings.tags == {"bundle": "emulator-tests-test"}, "${bundle.name}-${bundle.target}"
    [task] = job.settings.tasks
    assert task.notebook_task.notebook_path.endswith("/files/notebooks/csv_shape")


def test_client_starts_at_once(emulator):
    started = time.monotonic()
    emulator.client().jobs.get(emulator.job_id)
    assert time.monotonic() - started < 2, "the SDK's discovery probe must be answered at once"
