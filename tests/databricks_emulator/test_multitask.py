"""Jobs of several tasks through databricks-sdk: dependency order, run_if, the job run's result.

The test bundle's ``report`` job is the project's customer report in small
(notebook, SQL, notebook); ``conditions`` has a task for every ``run_if``
condition after two upstream steps; ``tolerant`` a cleanup that runs whatever
came before it. Failures come from task faults, so each test picks its own.
"""

from __future__ import annotations

import pytest
from databricks.sdk.errors import InvalidParameterValue
from databricks.sdk.service.jobs import (
    RunLifeCycleState,
    RunLifecycleStateV2State,
    RunResultState,
    TerminationCodeCode,
    TerminationTypeType,
)

from tests.support.emulator_runs import (
    latest_tasks,
    results,
    run_details,
    set_plan,
    start,
    wait_terminated,
    wait_until,
    watch,
)

#: The bundle's report job's output limit, as get-output applies it.
FIVE_MB = 5 * 1024 * 1024


def test_tasks_run_in_dependency_order_each_as_its_own_task_run(workspace, emulator, control, pipeline_id):
    run_id = start(workspace, emulator.jobs["report"], pipeline_id, customer="globex")

    run = wait_terminated(workspace, run_id)

    assert run.state.result_state == RunResultState.SUCCESS and run.run_name == "Customer report"
    tasks = latest_tasks(run)
    assert list(tasks) == ["extract", "aggregate", "publish"]
    assert len({task.run_id for task in run.tasks} | {run_id}) == 4, "each task run has its own id"
    extract, aggregate, publish = tasks.values()
    assert extract.end_time <= aggregate.start_time and aggregate.end_time <= publish.start_time
    assert aggregate.depends_on[0].task_key == "extract" and publish.run_if.value == "ALL_SUCCESS"
    assert aggregate.sql_task.file.path.endswith("/files/notebooks/aggregate.sql")
    assert aggregate.sql_task.warehouse_id == "test-warehouse", "${var.warehouse_id}"
    # A task run is a run of its own, which names its job run.
    task_run = workspace.jobs.get_run(aggregate.run_id)
    assert task_run.job_run_id == run_id and task_run.run_id == aggregate.run_id
    # Notebook tasks really ran, with the job parameters as widgets; the SQL task is a step.
    assert workspace.jobs.get_run_output(extract.run_id).notebook_output.result == '{"customer": "globex", "orders": 3}'
    assert workspace.jobs.get_run_output(aggregate.run_id).notebook_output is None
    details = run_details(control, run_id)
    assert [(task["task_key"], task["executed"], task["pid"] is not None) for task in details["tasks"]] == [
        ("extract", True, True),
        ("aggregate", True, False),
        ("publish", True, True),
    ]


def test_a_task_waiting_for_its_upstream_is_blocked(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"extract": {"hang": True}})
    run_id = start(workspace, emulator.jobs["report"], pipeline_id)

    run = wait_until(workspace, run_id, lambda r: latest_tasks(r)["extract"].state.life_cycle_state.value == "RUNNING")

    aggregate = latest_tasks(run)["aggregate"]
    assert aggregate.state.life_cycle_state == RunLifeCycleState.BLOCKED
    assert aggregate.status.state == RunLifecycleStateV2State.BLOCKED
    workspace.jobs.cancel_run(run_id)
    wait_terminated(workspace, run_id)


def test_independent_tasks_run_at_the_same_time(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"left": {"seconds": 1}, "right": {"seconds": 1}})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["conditions"], pipeline_id))

    left, right = latest_tasks(run)["left"], latest_tasks(run)["right"]
    started, ended = max(left.start_time, right.start_time), min(left.end_time, right.end_time)
    assert ended - started > 500, "the two ran side by side, not one after the other"


#: The conditions job's task keys, and each one's result when nothing fails.
ALL_SUCCEED = dict.fromkeys(["left", "right", "all_success", "one_success", "none_failed", "all_done"], "SUCCESS")


@pytest.mark.parametrize(
    ("failing", "expected", "run_result"),
    [
        # Nothing fails: the failure handlers are excluded, and so is their dependent; excluded
        # tasks count as successes, so the run succeeds.
        (
            (),
            {**ALL_SUCCEED, "one_failed": "EXCLUDED", "all_failed": "EXCLUDED", "after_one_failed": "EXCLUDED"},
            "SUCCESS",
        ),
        # One upstream fails: the conditions that want successes (all of them, or none failed)
        # are not met; leaves left UPSTREAM_FAILED fail the run.
        (
            ("left",),
            {
                **ALL_SUCCEED,
                "left": "FAILED",
                "all_success": "UPSTREAM_FAILED",
                "none_failed": "UPSTREAM_FAILED",
                "one_failed": "SUCCESS",
                "all_failed": "EXCLUDED",
                "after_one_failed": "SUCCESS",
            },
            "FAILED",
        ),
        # Both fail: only the failure handlers (and ALL_DONE) run.
        (
            ("left", "right"),
            {
                "left": "FAILED",
                "right": "FAILED",
                "all_success": "UPSTREAM_FAILED",
                "one_success": "UPSTREAM_FAILED",
                "none_failed": "UPSTREAM_FAILED",
                "all_done": "SUCCESS",
                "one_failed": "SUCCESS",
                "all_failed": "SUCCESS",
                "after_one_failed": "SUCCESS",
            },
            "FAILED",
        ),
    ],
    ids=["none-fails", "left-fails", "both-fail"],
)
def test_run_if_decides_each_task_after_its_upstreams(
    workspace, emulator, control, pipeline_id, failing, expected, run_result
):
    set_plan(control, pipeline_id, tasks={key: {"fail": True} for key in failing})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["conditions"], pipeline_id))

    assert results(run) == expected
    assert run.state.result_state.value == run_result


def test_a_task_that_does_not_run_says_why_and_the_run_names_the_failure(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"left": {"fail": True, "message": "left broke"}})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["conditions"], pipeline_id))

    skipped = latest_tasks(run)["all_success"]
    assert skipped.state.life_cycle_state == RunLifeCycleState.SKIPPED
    assert skipped.state.state_message == "An upstream task failed."
    assert skipped.status.state == RunLifecycleStateV2State.TERMINATED
    assert skipped.status.termination_details.code == TerminationCodeCode.SKIPPED
    assert skipped.start_time == 0 and skipped.end_time > 0
    excluded = latest_tasks(run)["all_failed"]
    assert excluded.state.life_cycle_state == RunLifeCycleState.SKIPPED
    assert excluded.status.termination_details.type == TerminationTypeType.SUCCESS
    # The run names the task that failed itself, not one left UPSTREAM_FAILED by it.
    assert run.state.state_message == "Task left failed with message: left broke"
    assert run.status.termination_details.code == TerminationCodeCode.RUN_EXECUTION_ERROR
    assert run.status.termination_details.type == TerminationTypeType.CLIENT_ERROR
    executed = {task["task_key"]: task["executed"] for task in run_details(control, run.run_id)["tasks"]}
    assert executed["all_success"] is False and executed["one_success"] is True


def test_a_failure_its_leaf_tasks_tolerate_is_success_with_failures(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"work": {"fail": True}})

    run = wait_terminated(workspace, start(workspace, emulator.jobs["tolerant"], pipeline_id))

    assert results(run) == {"work": "FAILED", "cleanup": "SUCCESS"}
    assert run.state.result_state == RunResultState.SUCCESS_WITH_FAILURES
    assert run.status.termination_details.code == TerminationCodeCode.SUCCESS_WITH_FAILURES
    assert run.status.termination_details.type == TerminationTypeType.SUCCESS


def test_cancelling_one_task_run_cancels_it_and_its_dependents_decide(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"extract": {"hang": True}, "work": {"hang": True}})
    report = start(workspace, emulator.jobs["report"], pipeline_id)
    tolerant = start(workspace, emulator.jobs["tolerant"], pipeline_id)
    for run_id, key in ((report, "extract"), (tolerant, "work")):
        running = wait_until(
            workspace, run_id, lambda r, key=key: latest_tasks(r)[key].state.life_cycle_state.value == "RUNNING"
        )
        workspace.jobs.cancel_run(latest_tasks(running)[key].run_id)

    report_run, tolerant_run = wait_terminated(workspace, report), wait_terminated(workspace, tolerant)

    # Cancellation propagates to the dependents, but not to one that handles failures.
    assert results(report_run) == {
        "extract": "CANCELED",
        "aggregate": "UPSTREAM_CANCELED",
        "publish": "UPSTREAM_CANCELED",
    }
    assert report_run.state.result_state == RunResultState.CANCELED
    assert report_run.state.state_message.startswith("Task extract was cancelled")
    assert results(tolerant_run) == {"work": "CANCELED", "cleanup": "SUCCESS"}
    assert tolerant_run.state.result_state == RunResultState.SUCCESS_WITH_FAILURES


def test_cancelling_the_job_run_stops_every_task(workspace, emulator, control, pipeline_id):
    set_plan(control, pipeline_id, tasks={"extract": {"hang": True}})
    run_id = start(workspace, emulator.jobs["report"], pipeline_id)
    wait_until(workspace, run_id, lambda r: r.state.life_cycle_state == RunLifeCycleState.RUNNING)

    workspace.jobs.cancel_run(run_id)
    run = wait_terminated(workspace, run_id)

    assert results(run) == {"extract": "CANCELED", "aggregate": "UPSTREAM_CANCELED", "publish": "UPSTREAM_CANCELED"}
    assert run.state.result_state == RunResultState.CANCELED and run.state.user_cancelled_or_timedout
    assert run.status.termination_details.code == TerminationCodeCode.USER_CANCELED
    assert latest_tasks(run)["aggregate"].state.state_message == "An upstream task was canceled."


def test_a_notebook_not_written_yet_fails_its_task_naming_it(workspace, emulator, control, pipeline_id):
    run = wait_terminated(workspace, start(workspace, emulator.jobs["unwritten"], pipeline_id))

    [task] = run.tasks
    assert task.state.result_state == RunResultState.FAILED
    assert task.status.termination_details.code == TerminationCodeCode.RESOURCE_NOT_FOUND
    assert task.status.termination_details.type == TerminationTypeType.CLIENT_ERROR
    assert "Notebook not found" in task.state.state_message and "not_written_yet" in task.state.state_message
    assert "not_written_yet.py" in workspace.jobs.get_run_output(task.run_id).error
    assert run.state.state_message.startswith("Task draft failed with message: Notebook not found")
    assert run_details(control, run.run_id)["tasks"][0]["executed"] is False
    assert "not_written_yet.py does not exist" in emulator.log.read_text(), "warned about at start"


def test_get_output_returns_the_first_5_mb_of_an_exit_value(workspace, emulator, pipeline_id):
    run_id = start(workspace, emulator.jobs["report"], pipeline_id, report_bytes=str(FIVE_MB + 1000))

    run = wait_terminated(workspace, run_id, timeout=60)

    output = workspace.jobs.get_run_output(latest_tasks(run)["publish"].run_id).notebook_output
    assert output.truncated is True and len(output.result) == FIVE_MB
    assert output.result.startswith("published...")
    small = workspace.jobs.get_run_output(latest_tasks(run)["extract"].run_id).notebook_output
    assert small.truncated is False
    with pytest.raises(InvalidParameterValue, match="output of each individual task run"):
        workspace.jobs.get_run_output(run_id)


def test_the_run_page_and_the_control_api_show_every_task(workspace, emulator, control, pipeline_id):
    run_id = start(workspace, emulator.jobs["tolerant"], pipeline_id)
    run, seen = watch(workspace, run_id)

    listed = control.get("/emulator/runs", params={"job_id": emulator.jobs["tolerant"]}).json()["runs"]
    [summary] = [entry for entry in listed if entry["run_id"] == run_id]
    assert summary["job_name"] == "Tolerant" and summary["result_state"] == "SUCCESS"
    assert [task["task_key"] for task in summary["tasks"]] == ["work", "cleanup"]
    by_task_run = run_details(control, latest_tasks(run)["cleanup"].run_id)
    assert by_task_run["job_run_id"] == run_id and by_task_run["life_cycle_state"] == "TERMINATED"
    assert f"run-{run_id}" in control.get("/").text
    assert {state.state.life_cycle_state for state in seen} >= {RunLifeCycleState.RUNNING, RunLifeCycleState.TERMINATED}
