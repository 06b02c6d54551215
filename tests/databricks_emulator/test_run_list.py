"""jobs/runs/list: the runs of a job (or all), newest start first, filtered, paged by token.

Thirty runs held in their start delay (PENDING: active, with no process) and
two that ended are this module's runs; every listing is narrowed to them by
``job_id`` and ``start_time_from``, so runs of other tests never enter it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from databricks.sdk.service.jobs import RunType

from tests.support.emulator_runs import set_plan, start, start_runs, wait_terminated, wait_until

HELD_RUNS = 30
LIST = "/api/2.2/jobs/runs/list"


@pytest.fixture(scope="module")
def runs(emulator):  # type: ignore[no-untyped-def]
    """(job id, start_time_from, held run ids newest first, ended run ids) of the module's own runs."""
    job_id, held_pipeline, ended_pipeline = emulator.jobs["report"], f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {emulator.token}"}
    workspace = emulator.client()
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as client:
        set_plan(client, held_pipeline, start_delay_seconds=3600)
        since = int(time.time() * 1000) - 1
        ended = [start(workspace, job_id, ended_pipeline) for _ in range(2)]
        for run_id in ended:
            wait_terminated(workspace, run_id)
        held = start_runs(client, job_id, [{"pipeline_id": held_pipeline}] * HELD_RUNS)
        newest_first = sorted(
            held, key=lambda run_id: (workspace.jobs.get_run(run_id).start_time, run_id), reverse=True
        )
        yield job_id, since, newest_first, ended
        for run_id in held:
            client.post("/api/2.2/jobs/runs/cancel", json={"run_id": run_id})


def listing(api: httpx.Client, runs, path: str = LIST, **params: object) -> httpx.Response:  # type: ignore[no-untyped-def]
    job_id, since, _, _ = runs
    return api.get(path, params={"job_id": job_id, "start_time_from": since, **params})


def ids(answer: dict) -> list[int]:
    return [run["run_id"] for run in answer.get("runs", [])]


def test_the_sdk_lists_the_active_runs_across_pages_and_completed_only_the_ended(workspace, runs):
    job_id, since, held, ended = runs

    active = workspace.jobs.list_runs(active_only=True, job_id=job_id, start_time_from=since, limit=25)
    completed = workspace.jobs.list_runs(completed_only=True, job_id=job_id, start_time_from=since)
    everything = workspace.jobs.list_runs(job_id=job_id, start_time_from=since)

    assert [run.run_id for run in active] == held, "30 runs over two pages, newest start first"
    assert sorted(run.run_id for run in completed) == sorted(ended)
    assert {run.run_id for run in everything} == {*held, *ended}


def test_pages_by_token_forward_and_back_with_no_has_more_under_2_2(api, runs):
    _, _, held, _ = runs

    first = listing(api, runs, active_only=True, limit=25).json()
    second = listing(api, runs, active_only=True, limit=25, page_token=first["next_page_token"]).json()
    back = listing(api, runs, active_only=True, limit=25, page_token=second["prev_page_token"]).json()

    assert (ids(first), ids(second)) == (held[:25], held[25:])
    assert "prev_page_token" not in first and "next_page_token" not in second
    assert ids(back) == held[:25]
    assert "has_more" not in first, "2.2 dropped the top-level has_more for the tokens"
    under_2_1 = listing(api, runs, "/api/2.1/jobs/runs/list", active_only=True, limit=25).json()
    assert ids(under_2_1) == held[:25] and under_2_1["has_more"] is True


def test_a_run_that_ends_between_two_pages_pushes_no_other_off_the_listing(api, workspace, emulator, pipeline_id):
    set_plan(api, pipeline_id, start_delay_seconds=3600)
    since = int(time.time() * 1000) - 1
    mine = start_runs(api, emulator.jobs["report"], [{"pipeline_id": pipeline_id}] * 6)
    params = {"job_id": emulator.jobs["report"], "start_time_from": since, "active_only": True, "limit": 3}
    first = api.get(LIST, params=params).json()
    listed = ids(first) + ids(api.get(LIST, params={**params, "page_token": first["next_page_token"]}).json())
    assert sorted(listed) == sorted(mine)
    workspace.jobs.cancel_run(listed[1])
    wait_terminated(workspace, listed[1])

    second = api.get(LIST, params={**params, "page_token": first["next_page_token"]}).json()

    assert ids(second) == listed[3:], "an offset would have skipped the first of these"
    for run_id in mine:
        workspace.jobs.cancel_run(run_id)


def test_runs_are_summaries_unless_tasks_are_asked_for(api, runs):
    [plain] = listing(api, runs, limit=1).json()["runs"]
    [expanded] = listing(api, runs, limit=1, expand_tasks="true").json()["runs"]

    assert "tasks" not in plain and plain["state"]["life_cycle_state"]
    assert [task["task_key"] for task in expanded["tasks"]] == ["extract", "aggregate", "publish"]


@pytest.mark.parametrize(("limit", "served"), [(1, 1), (25, 25), (0, 25), (None, 20)])
def test_limit_is_1_to_25_with_20_by_default_and_0_meaning_25(api, runs, limit, served):
    params = {} if limit is None else {"limit": limit}
    assert len(ids(listing(api, runs, **params).json())) == served


@pytest.mark.parametrize("limit", [26, -1, 1000, "many"])
def test_a_limit_out_of_bounds_is_refused_naming_it(api, runs, limit):
    refused = listing(api, runs, limit=limit)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "limit" in refused.json()["message"]


def test_active_only_and_completed_only_together_are_refused(api, runs):
    refused = listing(api, runs, active_only="true", completed_only="true")

    assert refused.status_code == 400
    assert "active_only" in refused.json()["message"] and "completed_only" in refused.json()["message"]
    # Either one false is no conflict.
    assert listing(api, runs, active_only="true", completed_only="false").status_code == 200


def forged(kind: str, owner: int, run_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, owner, run_id]).encode()).decode()


def test_a_bad_or_foreign_page_token_is_refused_naming_it(api, runs):
    _, _, held, _ = runs
    issued = listing(api, runs, active_only=True, limit=5).json()["next_page_token"]
    owner = json.loads(base64.urlsafe_b64decode(issued))[1]

    for params in (
        {"page_token": "not-a-token"},
        {"page_token": issued, "completed_only": True},  # issued for another filter
        {"page_token": issued, "active_only": True, "job_id": runs[0] + 1},
        {"page_token": forged("runs-after", owner, 12345), "active_only": True},  # names no run
        {"page_token": forged("jobs", owner, held[0]), "active_only": True},  # another listing's kind
    ):
        refused = listing(api, runs, **params)
        assert refused.status_code == 400 and "page_token" in refused.json()["message"], params
    # An empty token, as some clients send on their first call, is the first page.
    assert ids(listing(api, runs, active_only=True, limit=5, page_token="").json()) == held[:5]


def test_the_deprecated_offset_places_the_first_page_and_a_token_then_decides(api, runs):
    _, _, held, _ = runs

    page = listing(api, runs, active_only=True, limit=10, offset=25).json()
    after = listing(api, runs, active_only=True, limit=10, offset=25, page_token=page["prev_page_token"]).json()

    assert ids(page) == held[25:] and "next_page_token" not in page
    assert ids(after) == held[15:25], "the token, not the offset, decides once given (the SDK sends both)"
    assert listing(api, runs, offset=-1).status_code == 400


def test_filters_by_job_start_time_and_run_type(api, emulator, runs):
    _, since, held, ended = runs
    newest = listing(api, runs, limit=1).json()["runs"][0]["start_time"]

    assert ids(listing(api, runs, start_time_from=newest + 1).json()) == []
    assert set(ids(listing(api, runs, start_time_to=since, start_time_from=0).json())).isdisjoint({*held, *ended})
    assert ids(listing(api, runs, run_type=RunType.SUBMIT_RUN.value).json()) == []
    assert len(ids(listing(api, runs, run_type=RunType.JOB_RUN.value, limit=25).json())) == 25
    # An enum value the API does not know is dropped, as the real API drops one.
    assert len(ids(listing(api, runs, run_type="NO_SUCH_TYPE", limit=25).json())) == 25
    assert set(ids(listing(api, runs, job_id=emulator.jobs["serial"]).json())).isdisjoint(held)
    unknown = listing(api, runs, job_id=999_999)
    assert unknown.status_code == 400 and "does not exist" in unknown.json()["message"]
    assert listing(api, runs, start_time_from=-5).status_code == 400


def test_a_repaired_run_is_active_again_while_its_repair_runs(api, workspace, emulator, control, pipeline_id):
    serial = emulator.jobs["serial"]
    set_plan(control, pipeline_id, tasks={"step": {"fail": True, "fail_attempts": 1}})
    failed = start(workspace, serial, pipeline_id)
    wait_terminated(workspace, failed)
    holder = f"t-{uuid.uuid4().hex}"
    set_plan(control, holder, start_delay_seconds=3600)
    slot_taken = start(workspace, serial, holder)  # the job's one slot: the repair must queue
    wait_until(workspace, slot_taken, lambda run: run.state.life_cycle_state.value == "PENDING")

    workspace.jobs.repair_run(failed, rerun_all_failed_tasks=True)
    active = ids(api.get(LIST, params={"job_id": serial, "active_only": True, "limit": 25}).json())
    workspace.jobs.cancel_run(slot_taken)
    wait_terminated(workspace, failed)
    after = ids(api.get(LIST, params={"job_id": serial, "active_only": True, "limit": 25}).json())

    assert failed in active and slot_taken in active
    assert failed not in after and slot_taken not in after


def test_listings_and_reads_are_counted(api, control, runs):
    _, _, _, ended = runs
    before = control.get("/emulator/calls").json()
    pipeline_id = api.get("/emulator/runs/" + str(ended[0])).json()["pipeline_id"]
    reads_before = control.get(f"/emulator/pipelines/{pipeline_id}").json()["runs_get_calls"]

    listing(api, runs, limit=5)
    listing(api, runs, limit=26)  # refused: not a listing
    api.get("/api/2.2/jobs/runs/get", params={"run_id": ended[0]})

    after = control.get("/emulator/calls").json()
    assert after["runs_list_calls"] == before["runs_list_calls"] + 1
    assert after["runs_get_calls"] == before["runs_get_calls"] + 1
    assert control.get(f"/emulator/pipelines/{pipeline_id}").json()["runs_get_calls"] == reads_before + 1
