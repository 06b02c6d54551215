"""Repairing runs through databricks-sdk: failed tasks rerun in the same job run, attempt by attempt.

A repair reruns the chosen tasks (and, asked to, their dependents) as new task
runs of the same job run, one ``attempt_number`` higher, and leaves the others
as they were; the job run runs again and ends with a new result.
``runs/get`` lists every attempt (a client takes each task's latest) and, with
``include_history``, the ORIGINAL run and each REPAIR. ``fail_attempts: 1``
makes a task's first attempt fail and the repair's succeed.
"""

from __future__ import annotations

import json

import pytest
from databricks.sdk.errors import InvalidParameterValue
from databricks.sdk.service.jobs import (
    RepairHistoryItemType,
    RunLifeCycleState,
    RunResultState,
    TerminationCodeCode,
)

from tests.support.emulator_runs import (
    Pipeline,
    deliveries,
    latest_tasks,
    results,
    run_details,
    set_job_plan,
    set_plan,
    start,
    wait_terminated,
    wait_until,
)


def repair_to_end(workspace, run_id: int, **repair: object):  # type: ignore[no-untyped-def]
    """repair-run through databricks-sdk, then the run once it has ended again.

    Polled here rather than by the SDK's ``Wait.result()``, which sleeps 1 s, 2 s, ... between polls.
    """
    workspace.jobs.repair_run(run_id, **repair)
    return wait_terminated(workspace, run_id)


def failed_report(workspace, emulator, control, pipeline_id):  # type: ignore[no-untyped-def]
    """A report run whose first task failed on its first attempt (so a repair succeeds)."""
    set_plan(control, pipeline_id, tasks={"extract": {"fail": True, "fail_attempts": 1}})
    run = wait_terminated(workspace, start(workspace, emulator.jobs["report"], pipeline_id))
    assert results(run) == {"extract": "FAILED", "aggregate": "UPSTREAM_FAILED", "publish": "UPSTREAM_FAILED"}
    return run


def test_a_repair_reruns_the_failed_tasks_in_the_same_run(workspace, emulator, control, pipeline_id):
    original = failed_report(workspace, emulator, control, pipeline_id)

    waiter = workspace.jobs.repair_run(original.run_id, rerun_all_failed_tasks=True)
    repaired = waiter.result()

    assert repaired.run_id == original.run_id and repaired.state.result_state == RunResultState.SUCCESS
    # Every attempt is listed: a client takes each task's latest.
    assert [(task.task_key, task.attempt_number) for task in repaired.tasks] == [
        ("extract", 0),
        ("extract", 1),
        ("aggregate", 0),
        ("aggregate", 1),
        ("publish", 0),
        ("publish", 1),
    ]
    assert results(repaired) == {"extract": "SUCCESS", "aggregate": "SUCCESS", "publish": "SUCCESS"}
    new_ids = [task.run_id for task in latest_tasks(repaired).values()]
    assert not set(new_ids) & {task.run_id for task in original.tasks}, "new task runs, new ids"
    assert repaired.repair_history == [], "only with include_history"

    history = workspace.jobs.get_run(original.run_id, include_history=True).repair_history
    assert [item.type for item in history] == [RepairHistoryItemType.ORIGINAL, RepairHistoryItemType.REPAIR]
    first, repair = history
    assert first.id is None and repair.id == waiter.response.repair_id
    assert first.state.result_state == RunResultState.FAILED and repair.state.result_state == RunResultState.SUCCESS
    assert first.task_run_ids == [task.run_id for task in original.tasks] and repair.task_run_ids == new_ids
    assert first.start_time == original.start_time and first.end_time <= repair.start_time <= repair.end_time
    assert repaired.end_time == repair.end_time and repaired.run_duration >= repair.end_time - original.start_time
    summary = run_details(control, original.run_id)
    assert summary["repairs"] == [
        {"repair_id": repair.id, "rerun_tasks": ["extract", "aggregate", "publish"], "task_run_ids": new_ids}
    ]


def test_a_repair_leaves_the_other_tasks_as_they_were_unless_asked_for_their_dependents(
    workspace, emulator, control, pipeline_id
):
    set_plan(control, pipeline_id, tasks={"left": {"fail": True, "fail_attempts": 1}})
    run = wait_terminated(workspace, start(workspace, emulator.jobs["conditions"], pipeline_id))
    right = latest_tasks(run)["right"]

    first = repair_to_end(workspace, run.run_id, rerun_tasks=["left"])

    assert results(first)["left"] == "SUCCESS"
    assert results(first)["all_success"] == "UPSTREAM_FAILED", "its dependents keep their outcome"
    assert first.state.result_state == RunResultState.FAILED
    assert latest_tasks(first)["right"].run_id == right.run_id, "a task not rerun keeps its task run"

    latest = workspace.jobs.get_run(run.run_id, include_history=True).repair_history[-1].id
    second = repair_to_end(
        workspace, run.run_id, rerun_tasks=["left"], rerun_dependent_tasks=True, latest_repair_id=latest
    )

    assert results(second) == {
        "left": "SUCCESS",
        "right": "SUCCESS",
        "all_success": "SUCCESS",
        "one_success": "SUCCESS",
        "none_failed": "SUCCESS",
        "all_done": "SUCCESS",
        "one_failed": "EXCLUDED",
        "all_failed": "EXCLUDED",
        "after_one_failed": "EXCLUDED",
    }
    assert second.state.result_state == RunResultState.SUCCESS
    assert latest_tasks(second)["left"].attempt_number == 2 and latest_tasks(second)["right"].attempt_number == 0


def test_a_second_repair_must_name_the_latest_repair(workspace, emulator, control, api, pipeline_id):
    run = failed_report(workspace, emulator, control, pipeline_id)
    set_plan(control, pipeline_id, tasks={"extract": {"fail": True, "fail_attempts": 2}})  # plans are fixed per run
    first = workspace.jobs.repair_run(run.run_id, rerun_tasks=["extract"]).response.repair_id
    wait_terminated(workspace, run.run_id)

    with pytest.raises(InvalidParameterValue, match="The latest repair ID needs to be provided"):
        workspace.jobs.repair_run(run.run_id, rerun_tasks=["extract"])
    wrong = api.post(
        "/api/2.2/jobs/runs/repair", json={"run_id": run.run_id, "rerun_tasks": ["extract"], "latest_repair_id": 1}
    )
    assert wrong.status_code == 400 and f"the latest repair of run {run.run_id}: {first}" in wrong.json()["message"]
    second = repair_to_end(workspace, run.run_id, rerun_tasks=["extract"], latest_repair_id=first)
    assert latest_tasks(second)["extract"].attempt_number == 2


def test_a_repair_can_replace_the_runs_job_parameters(workspace, emulator, receiver, pipeline_id, tmp_path):
    missing = str(tmp_path / "missing.csv")
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb", source=missing)
    run = wait_terminated(workspace, start(workspace, emulator.job_id, **pipeline.job_parameters))
    assert "FileNotFoundError" in run.state.state_message

    repaired = repair_to_end(workspace, run.run_id, rerun_all_failed_tasks=True, job_parameters={"source": ""})

    assert repaired.state.result_state == RunResultState.SUCCESS
    assert {p.name: p.value for p in repaired.job_parameters}["source"] == ""
    failure, success = (json.loads(callback.body) for callback in receiver.wait_for(2))
    assert (failure["status"], success["status"]) == ("failure", "success")
    assert success["result"]["source"] == "built-in sample"


def test_a_platform_failure_then_a_repair(workspace, emulator, control, receiver, pipeline_id):
    set_plan(control, pipeline_id, tasks={"pipeline": {"code": "CLOUD_FAILURE", "fail_attempts": 1}})
    pipeline = Pipeline(pipeline_id, f"{receiver.url}/cb")
    run = wait_terminated(workspace, start(workspace, emulator.job_id, **pipeline.job_parameters))
    assert run.status.termination_details.code == TerminationCodeCode.CLOUD_FAILURE

    repaired = repair_to_end(workspace, run.run_id, rerun_tasks=["pipeline"])

    assert repaired.state.result_state == RunResultState.SUCCESS
    assert repaired.status.termination_details.code == TerminationCodeCode.SUCCESS
    [callback] = receiver.wait_for(1)
    assert json.loads(callback.body)["status"] == "success", "only the repaired attempt got to call back"


def test_a_skipped_run_can_be_repaired(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, life_cycle="SKIPPED")
    run = wait_terminated(workspace, start(workspace, emulator.jobs["tolerant"], pipeline_id))
    assert run.state.life_cycle_state == RunLifeCycleState.SKIPPED

    repaired = repair_to_end(workspace, run.run_id, rerun_all_failed_tasks=True)

    assert repaired.state.result_state == RunResultState.SUCCESS
    assert [task.state.result_state.value for task in repaired.tasks] == [
        "MAXIMUM_CONCURRENT_RUNS_REACHED",
        "SUCCESS",
        "MAXIMUM_CONCURRENT_RUNS_REACHED",
        "SUCCESS",
    ]


def test_a_repair_can_be_cancelled_and_repaired_again(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"work": {"hang": True, "fail_attempts": 2}})
    run_id = start(workspace, emulator.jobs["tolerant"], pipeline_id)
    wait_until(workspace, run_id, lambda run: run.state.life_cycle_state == RunLifeCycleState.RUNNING)
    workspace.jobs.cancel_run(run_id)
    assert wait_terminated(workspace, run_id).state.result_state == RunResultState.CANCELED

    first = workspace.jobs.repair_run(run_id, rerun_all_failed_tasks=True).response.repair_id
    wait_until(workspace, run_id, lambda run: run.state.life_cycle_state == RunLifeCycleState.RUNNING)
    workspace.jobs.cancel_run(run_id)
    assert wait_terminated(workspace, run_id).state.result_state == RunResultState.CANCELED
    again = repair_to_end(workspace, run_id, rerun_all_failed_tasks=True, latest_repair_id=first)

    assert again.state.result_state == RunResultState.SUCCESS
    assert [task.attempt_number for task in again.tasks if task.task_key == "work"] == [0, 1, 2]


def test_a_repaired_run_notifies_its_start_and_end_again(workspace, emulator, control):
    job_id = emulator.jobs["refresh"]
    set_job_plan(control, job_id, tasks={"refresh": {"fail": True, "fail_attempts": 1}})
    try:
        run = wait_terminated(workspace, start(workspace, job_id))
        repair_to_end(workspace, run.run_id, rerun_all_failed_tasks=True)
    finally:
        control.delete(f"/emulator/faults/jobs/{job_id}")

    sent = [d["event_type"] for d in deliveries(control, run.run_id, 6) if d["destination_id"] == "test-destination"]
    assert sent == ["jobs.on_start", "jobs.on_failure", "jobs.on_start", "jobs.on_success"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {"rerun_tasks": ["extract"], "rerun_all_failed_tasks": True},
            "Only one of rerun_tasks or rerun_all_failed_tasks",
        ),
        ({}, "Give rerun_tasks or rerun_all_failed_tasks"),
        ({"rerun_tasks": ["extract", "extract"]}, "rerun_tasks cannot contain duplicate task keys."),
        ({"rerun_tasks": ["nope"]}, "has no task for; its tasks are: extract, aggregate, publish"),
        ({"rerun_tasks": "extract"}, "rerun_tasks must be a list of strings"),
        (
            {"rerun_tasks": ["extract"], "job_parameters": {"source": "x"}},
            "does not define the job parameter(s) source",
        ),
        ({"rerun_tasks": ["extract"], "notebook_params": {"customer": "x"}}, "pass them as job_parameters"),
        ({"rerun_tasks": ["extract"], "latest_repair_id": 7}, "none (the run was never repaired)"),
    ],
)
def test_bad_repairs_are_refused_as_the_api_refuses_them(workspace, emulator, control, api, pipeline_id, body, words):
    run = wait_terminated(workspace, start(workspace, emulator.jobs["report"], pipeline_id))

    answer = api.post("/api/2.2/jobs/runs/repair", json={"run_id": run.run_id, **body})

    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert words in answer.json()["message"]


def test_what_cannot_be_repaired(workspace, emulator, control, api, pipeline_id):
    set_plan(control, pipeline_id, tasks={"extract": {"hang": True}})
    active = start(workspace, emulator.jobs["report"], pipeline_id)
    running = wait_until(workspace, active, lambda run: run.state.life_cycle_state == RunLifeCycleState.RUNNING)

    for run_id, words in (
        (active, "only a run that has ended can be repaired"),
        (running.tasks[0].run_id, f"is a task run; repair its job run, {active}"),
        (1, "Run 1 does not exist."),
    ):
        answer = api.post("/api/2.2/jobs/runs/repair", json={"run_id": run_id, "rerun_all_failed_tasks": True})
        assert answer.status_code == 400 and words in answer.json()["message"]
    workspace.jobs.cancel_run(active)
    succeeded = wait_terminated(workspace, start(workspace, emulator.jobs["tolerant"], pipeline_id))
    nothing = api.post("/api/2.2/jobs/runs/repair", json={"run_id": succeeded.run_id, "rerun_all_failed_tasks": True})
    assert "has no failed tasks to repair" in nothing.json()["message"]
    under_2_0 = api.post(
        "/api/2.0/jobs/runs/repair",
        json={"run_id": succeeded.run_id, "rerun_tasks": ["work"], "job_parameters": {"pipeline_id": "x"}},
    )
    assert under_2_0.status_code == 501
