"""Faults of single tasks and whole runs, and per-job queueing, as databricks-sdk sees them.

Every life cycle and result state the SDK's enums hold (but DISABLED: disabled
tasks are not modelled) is produced here through a fault plan or a job's
settings, each where it belongs; the last test runs one of each at once and
checks that together they show the SDK every state it can read.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from databricks.sdk.errors import OperationFailed
from databricks.sdk.service.jobs import (
    QueueDetailsCodeCode,
    RunLifeCycleState,
    RunLifecycleStateV2State,
    RunResultState,
    TerminationCodeCode,
    TerminationTypeType,
)

from tests.support.emulator_runs import (
    TERMINAL_STATES,
    Pipeline,
    latest_tasks,
    results,
    run_details,
    set_job_plan,
    set_plan,
    start,
    wait_terminated,
    wait_until,
    watch,
)


@pytest.mark.parametrize(
    ("fault", "code", "kind"),
    [
        ({"code": "CLOUD_FAILURE"}, TerminationCodeCode.CLOUD_FAILURE, TerminationTypeType.CLOUD_FAILURE),
        (
            {"code": "DRIVER_ERROR", "kill_after_seconds": 0.3},
            TerminationCodeCode.DRIVER_ERROR,
            TerminationTypeType.INTERNAL_ERROR,
        ),
        (
            {"code": "LIBRARY_INSTALLATION_ERROR", "type": "CLIENT_ERROR", "message": "no such wheel"},
            TerminationCodeCode.LIBRARY_INSTALLATION_ERROR,
            TerminationTypeType.CLIENT_ERROR,
        ),
    ],
)
def test_a_platform_failure_kills_the_notebook_before_it_can_call_back(
    workspace, emulator, control, receiver, pipeline_id, fault, code, kind
):
    set_plan(control, pipeline_id, tasks={"pipeline": fault})
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")

    run = wait_terminated(workspace, start(workspace, emulator.job_id, **pipeline.job_parameters))

    [task] = run.tasks
    assert task.state.result_state == RunResultState.FAILED
    assert (task.status.termination_details.code, task.status.termination_details.type) == (code, kind)
    assert (run.status.termination_details.code, run.status.termination_details.type) == (code, kind)
    if "message" in fault:
        assert task.state.state_message == fault["message"]
    assert run.state.state_message.startswith("Task pipeline failed with message: ")
    details = run_details(control, run.run_id)["tasks"][0]
    assert details["executed"] is True and details["returncode"] == -signal.SIGKILL
    assert receiver.requests == [], "the notebook never got to call back"


def test_a_failure_raised_in_the_notebook_run_reports_nothing_itself(
    workspace, emulator, control, receiver, pipeline_id
):
    set_plan(control, pipeline_id, tasks={"pipeline": {"fail": True, "message": "boom"}})
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")

    run = wait_terminated(workspace, start(workspace, emulator.job_id, **pipeline.job_parameters))

    [task] = run.tasks
    assert task.state.state_message == "InjectedFailure: boom"
    assert task.status.termination_details.code == TerminationCodeCode.RUN_EXECUTION_ERROR
    output = workspace.jobs.get_run_output(task.run_id)
    assert output.error == "InjectedFailure: boom" and "Traceback" in output.error_trace
    assert receiver.requests == []


def test_widgets_of_a_task_fault_make_the_notebook_fail_and_say_so(
    workspace, emulator, control, receiver, pipeline_id, tmp_path
):
    missing = str(tmp_path / "nowhere.csv")
    set_plan(control, pipeline_id, tasks={"pipeline": {"widgets": {"source": missing}}})
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb", source="")

    run = wait_terminated(workspace, start(workspace, emulator.job_id, **pipeline.job_parameters))

    assert run.state.result_state == RunResultState.FAILED and "FileNotFoundError" in run.state.state_message
    [callback] = receiver.wait_for(1)
    assert b'"status":"failure"' in callback.body and missing.encode() in callback.body


def test_fail_attempts_fails_the_first_attempts_and_the_retries_wait_for_retry(
    workspace, emulator, control, pipeline_id
):
    set_plan(control, pipeline_id, tasks={"flaky": {"fail": True, "fail_attempts": 2}})

    run, seen = watch(workspace, start(workspace, emulator.jobs["retrying"], pipeline_id))

    # Every attempt is listed, oldest first, each its own task run.
    assert [(task.task_key, task.attempt_number, task.state.result_state.value) for task in run.tasks] == [
        ("flaky", 0, "FAILED"),
        ("flaky", 1, "FAILED"),
        ("flaky", 2, "SUCCESS"),
    ]
    assert len({task.run_id for task in run.tasks}) == 3
    assert run.state.result_state == RunResultState.SUCCESS, "the latest attempt decides"
    retry = workspace.jobs.get_run(run.tasks[2].run_id)
    assert retry.original_attempt_run_id == run.tasks[0].run_id and retry.attempt_number == 2
    waiting = [
        task
        for state in seen
        for task in state.tasks
        if task.state.life_cycle_state == RunLifeCycleState.WAITING_FOR_RETRY
    ]
    assert waiting and all(task.status.state == RunLifecycleStateV2State.WAITING for task in waiting)


def test_fail_attempts_0_fails_every_attempt(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"flaky": {"code": "CLUSTER_ERROR"}})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["retrying"], pipeline_id))

    assert [task.state.result_state for task in run.tasks] == [RunResultState.FAILED] * 3
    assert run.state.result_state == RunResultState.FAILED
    assert run.status.termination_details.code == TerminationCodeCode.CLUSTER_ERROR


def test_a_task_can_end_internal_error(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"aggregate": {"life_cycle": "INTERNAL_ERROR"}})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["report"], pipeline_id))

    aggregate = latest_tasks(run)["aggregate"]
    assert aggregate.state.life_cycle_state == RunLifeCycleState.INTERNAL_ERROR
    assert aggregate.state.result_state == RunResultState.FAILED
    assert aggregate.status.state == RunLifecycleStateV2State.TERMINATED
    assert aggregate.status.termination_details.code == TerminationCodeCode.INTERNAL_ERROR
    assert results(run)["publish"] == "UPSTREAM_FAILED"
    assert run.state.result_state == RunResultState.FAILED


def test_a_run_can_end_internal_error_which_the_sdk_reports_as_a_failed_operation(
    workspace, emulator, control, pipeline_id
):
    set_plan(control, pipeline_id, life_cycle="INTERNAL_ERROR")

    with pytest.raises(OperationFailed, match=r"got RunLifeCycleState\.INTERNAL_ERROR"):
        workspace.jobs.run_now(emulator.jobs["report"], job_parameters={"pipeline_id": pipeline_id}).result()

    [summary] = control.get("/emulator/runs", params={"pipeline_id": pipeline_id}).json()["runs"]
    run = workspace.jobs.get_run(summary["run_id"])
    assert run.state.life_cycle_state == RunLifeCycleState.INTERNAL_ERROR
    assert run.status.termination_details.type == TerminationTypeType.INTERNAL_ERROR
    assert {task.state.life_cycle_state for task in run.tasks} == {RunLifeCycleState.INTERNAL_ERROR}
    assert not any(task["executed"] for task in summary["tasks"])


def test_a_held_run_waits_in_pending_with_no_process_until_its_pipeline_is_released(
    workspace, emulator, control, pipeline_id
):
    set_plan(control, pipeline_id, held=True)
    held = start(workspace, emulator.job_id, pipeline_id)
    cancelled = start(workspace, emulator.job_id, pipeline_id)

    time.sleep(1.0)
    still = workspace.jobs.get_run(held)
    assert still.state.life_cycle_state == RunLifeCycleState.PENDING
    assert not any(task["executed"] for task in run_details(control, held)["tasks"])
    workspace.jobs.cancel_run(cancelled)
    assert wait_terminated(workspace, cancelled).state.result_state == RunResultState.CANCELED

    released = control.post(f"/emulator/pipelines/{pipeline_id}/release")

    assert released.status_code == 200, released.text
    assert wait_terminated(workspace, held).state.result_state == RunResultState.SUCCESS
    # Released for good: a later run of the pipeline is not held.
    later = wait_terminated(workspace, start(workspace, emulator.job_id, pipeline_id))
    assert later.state.result_state == RunResultState.SUCCESS


def test_a_run_can_be_skipped_which_the_sdk_waits_for(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, life_cycle="SKIPPED")

    run = workspace.jobs.run_now(emulator.jobs["report"], job_parameters={"pipeline_id": pipeline_id}).result()

    assert run.state.life_cycle_state == RunLifeCycleState.SKIPPED
    assert run.state.result_state == RunResultState.MAXIMUM_CONCURRENT_RUNS_REACHED
    assert run.status.state == RunLifecycleStateV2State.TERMINATED
    assert run.status.termination_details.code == TerminationCodeCode.MAX_CONCURRENT_RUNS_EXCEEDED
    assert {task.state.life_cycle_state for task in run.tasks} == {RunLifeCycleState.SKIPPED}


def test_a_skipped_task_is_passed_over_like_an_excluded_one(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"work": {"life_cycle": "SKIPPED"}})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["tolerant"], pipeline_id))

    work = latest_tasks(run)["work"]
    assert work.state.life_cycle_state == RunLifeCycleState.SKIPPED and work.state.result_state is None
    assert work.status.termination_details.code == TerminationCodeCode.SKIPPED
    # Its one dependent has nothing but passed-over upstreams, so it is excluded too; the run succeeds.
    assert results(run)["cleanup"] == "EXCLUDED" and run.state.result_state == RunResultState.SUCCESS


def test_a_task_can_wait_blocked_and_for_retry_before_it_goes_on(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"pipeline": {"blocked_seconds": 0.6, "waiting_for_retry_seconds": 0.6}})

    run, seen = watch(workspace, start(workspace, emulator.job_id, pipeline_id))

    order = []
    for state in seen:
        current = state.tasks[0].state.life_cycle_state
        if not order or order[-1] != current:
            order.append(current)
    assert order[order.index(RunLifeCycleState.BLOCKED) :][:4] == [
        RunLifeCycleState.BLOCKED,
        RunLifeCycleState.WAITING_FOR_RETRY,
        RunLifeCycleState.PENDING,
        RunLifeCycleState.RUNNING,
    ]
    assert run.state.result_state == RunResultState.SUCCESS


def test_runs_beyond_a_jobs_limit_wait_in_its_queue(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"step": {"seconds": 1.5}})
    first = start(workspace, emulator.jobs["serial"], pipeline_id)
    wait_until(workspace, first, lambda r: r.state.life_cycle_state == RunLifeCycleState.RUNNING)

    second = start(workspace, emulator.jobs["serial"], pipeline_id)
    queued = workspace.jobs.get_run(second)

    assert queued.state.life_cycle_state == RunLifeCycleState.QUEUED
    assert queued.state.queue_reason == "Queued due to reaching maximum concurrent runs of 1."
    assert queued.status.queue_details.code == QueueDetailsCodeCode.MAX_CONCURRENT_RUNS_REACHED
    assert workspace.jobs.get(emulator.jobs["serial"]).settings.max_concurrent_runs == 1, "each job its own limit"
    done = wait_terminated(workspace, second)
    assert done.state.result_state == RunResultState.SUCCESS and done.queue_duration >= 1000


def test_a_job_without_a_queue_skips_runs_beyond_its_limit(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"step": {"seconds": 1.5}})
    first = start(workspace, emulator.jobs["exclusive"], pipeline_id)
    wait_until(workspace, first, lambda r: r.state.life_cycle_state == RunLifeCycleState.RUNNING)

    skipped = wait_terminated(workspace, start(workspace, emulator.jobs["exclusive"], pipeline_id))

    assert skipped.state.life_cycle_state == RunLifeCycleState.SKIPPED
    assert skipped.state.result_state == RunResultState.MAXIMUM_CONCURRENT_RUNS_REACHED
    assert "limit of 1 maximum concurrent runs" in skipped.state.state_message
    assert wait_terminated(workspace, first).state.result_state == RunResultState.SUCCESS


def test_a_job_plan_acts_on_runs_whose_pipeline_has_none(workspace, emulator, control):
    job_id = emulator.jobs["refresh"]  # no pipeline_id parameter, like the project's nightly refresh
    set_job_plan(control, job_id, tasks={"refresh": {"fail": True}})
    try:
        failed = wait_terminated(workspace, start(workspace, job_id))
        assert failed.state.result_state == RunResultState.FAILED
        assert control.get("/emulator/faults").json()["jobs"][str(job_id)]["tasks"]["refresh"]["fail"] is True
    finally:
        assert control.delete(f"/emulator/faults/jobs/{job_id}").status_code == 200
    assert wait_terminated(workspace, start(workspace, job_id)).state.result_state == RunResultState.SUCCESS

    refused = control.put(f"/emulator/faults/jobs/{job_id}", json={"tasks": {"pipeline": {"fail": True}}})
    assert refused.status_code == 422 and "the task keys are: refresh" in refused.json()["message"]
    unknown = control.put("/emulator/faults/jobs/999999", json={})
    assert (unknown.status_code, unknown.json()["message"]) == (400, "Job 999999 does not exist.")


def test_every_state_the_sdk_can_show_appears(workspace, emulator, control):
    """One run of each kind at once; between them they show every state the SDK's enums hold."""
    plans = {
        "retry": ("retrying", {"tasks": {"flaky": {"fail": True, "fail_attempts": 1}}}),
        "block": ("pipeline", {"tasks": {"pipeline": {"blocked_seconds": 0.5}}}),
        "internal": ("report", {"life_cycle": "INTERNAL_ERROR"}),
        "skip": ("report", {"life_cycle": "SKIPPED"}),
        "fail": ("conditions", {"tasks": {"left": {"fail": True}}}),
        "cancel": ("tolerant", {"tasks": {"work": {"hang": True}}}),
        "timeout": ("pipeline", {"notebook": "hang", "timeout_seconds": 1}),
        "queue": ("serial", {"tasks": {"step": {"seconds": 1}}}),
        "tolerated": ("tolerant", {"tasks": {"work": {"fail": True}}}),
        "upstream_canceled": ("report", {"tasks": {"extract": {"hang": True}}}),
    }
    run_ids = {}
    for name, (job, plan) in plans.items():
        pipeline_id = f"states-{name}-{os.getpid()}"
        set_plan(control, pipeline_id, **plan)
        run_ids[name] = start(workspace, emulator.jobs[job], pipeline_id)
    run_ids["queued"] = start(workspace, emulator.jobs["serial"], f"states-queue-{os.getpid()}")
    canceled: set[str] = set()
    seen = []
    while True:
        runs = {name: workspace.jobs.get_run(run_id) for name, run_id in run_ids.items()}
        seen += list(runs.values())
        for name in ("cancel", "upstream_canceled"):
            hanging = [task for task in runs[name].tasks if task.state.life_cycle_state == RunLifeCycleState.RUNNING]
            if hanging and name not in canceled:
                workspace.jobs.cancel_run(hanging[0].run_id if name == "cancel" else run_ids[name])
                canceled.add(name)
        if all(run.state.life_cycle_state in TERMINAL_STATES for run in runs.values()):
            break

    items = [item for run in seen for item in (run, *run.tasks)]
    assert {item.state.life_cycle_state for item in items} == set(RunLifeCycleState)
    assert {item.status.state for item in items} == set(RunLifecycleStateV2State)
    results_seen = {item.state.result_state for item in items} - {None}
    assert results_seen == set(RunResultState) - {RunResultState.DISABLED}
