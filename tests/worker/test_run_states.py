"""Every run state Databricks documents has a meaning for the pipeline, held to the SDK's own enums."""

from __future__ import annotations

import pytest
from databricks.sdk.service.jobs import (
    RunLifeCycleState,
    RunLifecycleStateV2State,
    RunResultState,
    TerminationCodeCode,
)

from pipeline_shared.models import RunReport, TaskOutcome
from pipeline_worker import run_states
from pipeline_worker.run_states import verdict
from pipeline_worker.watchdog import result_of


def test_every_state_the_sdk_knows_is_mapped() -> None:
    assert set(run_states.LIFE_CYCLE) == {s.value for s in RunLifeCycleState}
    assert set(run_states.RESULT) == {s.value for s in RunResultState}
    assert set(run_states.STATUS) == {s.value for s in RunLifecycleStateV2State}
    codes = {c.value for c in TerminationCodeCode}
    assert set(run_states.TERMINATION_SUCCESS) | run_states.TERMINATION_CANCELLED <= codes


@pytest.mark.parametrize(
    ("life_cycle", "result", "terminal", "status"),
    [
        ("QUEUED", None, False, None),
        ("PENDING", None, False, None),
        ("BLOCKED", None, False, None),
        ("WAITING_FOR_RETRY", None, False, None),
        ("RUNNING", None, False, None),
        ("TERMINATING", None, False, None),
        ("TERMINATED", "SUCCESS", True, "success"),
        ("TERMINATED", "SUCCESS_WITH_FAILURES", True, "success"),
        ("TERMINATED", "FAILED", True, "failure"),
        ("TERMINATED", "TIMEDOUT", True, "failure"),
        ("TERMINATED", "CANCELED", True, "cancelled"),
        ("TERMINATED", "MAXIMUM_CONCURRENT_RUNS_REACHED", True, "failure"),
        ("TERMINATED", "UPSTREAM_FAILED", True, "failure"),
        ("TERMINATED", "UPSTREAM_CANCELED", True, "cancelled"),
        ("TERMINATED", "EXCLUDED", True, "success"),
        ("TERMINATED", "DISABLED", True, "failure"),
        ("TERMINATED", None, True, "failure"),
        ("SKIPPED", None, True, "failure"),
        ("INTERNAL_ERROR", None, True, "failure"),
    ],
)
def test_the_older_state_decides(life_cycle: str, result: str | None, terminal: bool, status: str | None) -> None:
    meaning = verdict(life_cycle, result)
    assert (meaning.terminal, meaning.status) == (terminal, status)
    assert meaning.meaning


@pytest.mark.parametrize(
    ("state", "code", "terminal", "status"),
    [
        ("QUEUED", None, False, None),
        ("WAITING", None, False, None),
        ("BLOCKED", None, False, None),
        ("TERMINATED", "SUCCESS", True, "success"),
        ("TERMINATED", "SUCCESS_WITH_FAILURES", True, "success"),
        ("TERMINATED", "USER_CANCELED", True, "cancelled"),
        ("TERMINATED", "CLOUD_FAILURE", True, "failure"),
        ("TERMINATED", "RUN_EXECUTION_ERROR", True, "failure"),
    ],
)
def test_a_run_showing_only_the_newer_status_is_read_from_it(
    state: str, code: str | None, terminal: bool, status: str | None
) -> None:
    meaning = verdict(None, None, state, code)
    assert (meaning.terminal, meaning.status) == (terminal, status)


def test_a_state_databricks_adds_later_reads_as_still_going() -> None:
    assert not verdict("SOMETHING_NEW", None).terminal
    assert not verdict(None, None).terminal


def _task(key: str, exit_value: str | None, **fields: object) -> TaskOutcome:
    return TaskOutcome(
        task_key=key, life_cycle_state="TERMINATED", result_state="SUCCESS", exit_value=exit_value, **fields
    )


def test_the_result_is_the_result_tasks_exit_value() -> None:
    report = RunReport(
        life_cycle_state="TERMINATED",
        result_state="SUCCESS",
        tasks=[_task("extract", '{"orders": 3}'), _task("publish", '{"published": true}')],
    )
    assert result_of(report, "publish") == {"published": True}
    assert result_of(report, None) == {}, "of several tasks, none is the result unless the catalogue says"
    single = RunReport(life_cycle_state="TERMINATED", tasks=[_task("only", "[1, 2]")])
    assert result_of(single, None) == {"notebook_exit_value": [1, 2]}
    assert result_of(RunReport(life_cycle_state="TERMINATED", tasks=[_task("t", "plain text")]), None) == {
        "notebook_exit_value": "plain text"
    }
    cut = RunReport(life_cycle_state="TERMINATED", tasks=[_task("t", '{"a": 1, "b', truncated=True)])
    assert result_of(cut, None) == {"notebook_exit_value": '{"a": 1, "b', "truncated": True}
