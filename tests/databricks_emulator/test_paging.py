"""Paging: Jobs API 2.2 cuts a job's or run's long arrays at 100, jobs/list pages by token.

The test bundle's ``wide`` job has 105 cheap tasks. databricks-sdk's ``get``
and ``get_run`` follow ``next_page_token`` themselves and must come back with
all of them; raw calls check the pages one by one, and what 2.1 does instead.
"""

from __future__ import annotations

import pytest

from tests.support.emulator_runs import start, wait_terminated

WIDE_TASKS = 105


@pytest.fixture
def wide_run(workspace, emulator, pipeline_id) -> int:  # type: ignore[no-untyped-def]
    run_id = start(workspace, emulator.jobs["wide"], pipeline_id)
    wait_terminated(workspace, run_id)
    return run_id


def test_the_sdk_reads_a_run_of_105_tasks_whole(workspace, wide_run):
    run = workspace.jobs.get_run(wide_run)

    assert [task.task_key for task in run.tasks] == [f"step_{n:03d}" for n in range(1, WIDE_TASKS + 1)]
    assert run.next_page_token is None
    assert {task.state.result_state.value for task in run.tasks} == {"SUCCESS"}
    assert [p.name for p in run.job_parameters] == ["pipeline_id"], "one copy, not one per page"


def test_runs_get_under_2_2_pages_the_tasks_at_100(api, wide_run):
    first = api.get("/api/2.2/jobs/runs/get", params={"run_id": wide_run}).json()
    assert len(first["tasks"]) == 100 and first["job_parameters"][0]["name"] == "pipeline_id"
    token = first["next_page_token"]

    second = api.get("/api/2.2/jobs/runs/get", params={"run_id": wide_run, "page_token": token}).json()

    assert [task["task_key"] for task in second["tasks"]] == [f"step_{n}" for n in range(101, WIDE_TASKS + 1)]
    assert "next_page_token" not in second, "the last page has no token"
    assert "job_parameters" not in second, "an array with nothing left is left out"
    assert second["run_id"] == wide_run and second["state"] == first["state"], "other properties on every page"


def test_a_page_token_serves_only_the_run_it_came_from(api, workspace, emulator, wide_run, pipeline_id):
    token = api.get("/api/2.2/jobs/runs/get", params={"run_id": wide_run}).json()["next_page_token"]
    other = start(workspace, emulator.jobs["report"], pipeline_id)

    for run_id, page_token in ((other, token), (wide_run, "not-a-token")):
        refused = api.get("/api/2.2/jobs/runs/get", params={"run_id": run_id, "page_token": page_token})
        assert refused.status_code == 400 and "page_token" in refused.json()["message"]
    # An empty token, as some clients send on their first call, is the first page.
    assert len(api.get("/api/2.2/jobs/runs/get", params={"run_id": wide_run, "page_token": ""}).json()["tasks"]) == 100
    # 2.1 defines no page_token for runs/get: there it is an unknown field, ignored.
    wait_terminated(workspace, other)
    assert api.get("/api/2.1/jobs/runs/get", params={"run_id": other, "page_token": token}).status_code == 200


def test_the_sdk_reads_a_job_of_105_tasks_whole_and_2_2_pages_it(workspace, emulator, api):
    job = workspace.jobs.get(emulator.jobs["wide"])
    assert len(job.settings.tasks) == WIDE_TASKS and job.next_page_token is None

    first = api.get("/api/2.2/jobs/get", params={"job_id": emulator.jobs["wide"]}).json()
    second = api.get(
        "/api/2.2/jobs/get", params={"job_id": emulator.jobs["wide"], "page_token": first["next_page_token"]}
    ).json()
    assert (len(first["settings"]["tasks"]), len(second["settings"]["tasks"])) == (100, 5)
    assert "parameters" not in second["settings"] and second["settings"]["name"] == "Wide"


def test_under_2_1_more_than_100_tasks_are_refused_rather_than_guessed(api, emulator, wide_run):
    for path, params in (("jobs/runs/get", {"run_id": wide_run}), ("jobs/get", {"job_id": emulator.jobs["wide"]})):
        answer = api.get(f"/api/2.1/{path}", params=params)
        assert answer.status_code == 501 and "more than 100 tasks under /api/2.1" in answer.json()["message"]
    # jobs/list under 2.1 leaves such a job's tasks out, as a live workspace was measured to do.
    [listed] = api.get("/api/2.1/jobs/list", params={"name": "Wide", "expand_tasks": "true"}).json()["jobs"]
    assert "tasks" not in listed["settings"] and "has_more" not in listed


def test_jobs_list_under_2_2_shows_100_tasks_and_says_there_are_more(api, workspace):
    [listed] = api.get("/api/2.2/jobs/list", params={"name": "Wide", "expand_tasks": "true"}).json()["jobs"]
    assert len(listed["settings"]["tasks"]) == 100 and listed["has_more"] is True

    # databricks-sdk's list fetches such a job whole through jobs/get.
    [job] = workspace.jobs.list(name="Wide", expand_tasks=True)
    assert len(job.settings.tasks) == WIDE_TASKS


def test_jobs_list_pages_by_token_newest_job_first(api, workspace, emulator):
    everything = sorted(emulator.jobs.values(), reverse=True)
    seen, token, pages = [], None, []
    while True:
        answer = api.get("/api/2.2/jobs/list", params={"limit": 3, **({"page_token": token} if token else {})}).json()
        pages.append(answer)
        seen += [job["job_id"] for job in answer.get("jobs", [])]
        token = answer.get("next_page_token")
        if token is None:
            break

    assert seen == everything
    assert "prev_page_token" not in pages[0] and "prev_page_token" in pages[1]
    back = api.get("/api/2.2/jobs/list", params={"limit": 3, "page_token": pages[1]["prev_page_token"]}).json()
    assert back["jobs"] == pages[0]["jobs"]
    assert [job.job_id for job in workspace.jobs.list(limit=3)] == everything, "the SDK follows the tokens"
    # The deprecated offset still works, within its limit.
    assert [job["job_id"] for job in api.get("/api/2.1/jobs/list", params={"offset": 8}).json()["jobs"]] == everything[
        8:
    ]
