"""The customer-onboarding jobs of the project's bundle, run by the emulator as the worker runs them.

An emulator of this module's own serves infra/databricks/databricks.yml (the
session's serves the tests' bundle), with a source rule for a folder of the
test's and its volumes in another (``DATABRICKS_EMULATOR_VOLUMES_DIR``): ingest
writes its table there, and the next two jobs read it. Each job is started by
run-now with the callback inputs the worker sets, and calls back, signed, with
its documented result.

The middle job is made to fail once through the emulator's control API, the
way the stack's tests make a person repair it: a task fault for the ``score``
task, on its first attempt only. A repair of the run reruns that task, which
then succeeds, in the same run; ingest is not run again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import RunResultState

from pipeline_shared.signing import verify_callback
from tests.support.emulator_process import REPO_ROOT, Emulator, start_emulator, stop_emulator
from tests.support.emulator_runs import (
    Pipeline,
    counters,
    import_notebook_module,
    latest_tasks,
    results,
    set_plan,
    wait_terminated,
)

BUNDLE = REPO_ROOT / "infra" / "databricks" / "databricks.yml"
SAMPLE = (
    REPO_ROOT / "infra" / "databricks-emulator" / "workspace" / "Shared" / "pipelines" / "samples" / "customers.csv"
)
tables = import_notebook_module("onboarding_tables")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uploads/ (the source rule's one folder, holding the sample) and volumes/ (the drivers' /Volumes/)."""
    root = tmp_path_factory.mktemp("onboarding")
    (root / "uploads").mkdir()
    shutil.copy(SAMPLE, root / "uploads" / "customers.csv")
    (root / "rule.json").write_text(json.dumps({"path_prefixes": [f"{root}/uploads/"]}))
    return root


@pytest.fixture(scope="module")
def project_emulator(tmp_path_factory: pytest.TempPathFactory, folders: Path) -> Iterator[Emulator]:
    running = start_emulator(
        tmp_path_factory.mktemp("project-emulator"),
        bundle=BUNDLE,
        PIPELINE_SOURCES_FILE=str(folders / "rule.json"),
        DATABRICKS_EMULATOR_VOLUMES_DIR=str(folders / "volumes"),
    )
    yield running
    stop_emulator(running)


@pytest.fixture(scope="module")
def jobs(project_emulator: Emulator) -> WorkspaceClient:
    return project_emulator.client().jobs


@pytest.fixture
def control(project_emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=project_emulator.url, headers=project_emulator.bearer, timeout=30) as client:
        yield client


def job_id(jobs, name: str) -> int:  # type: ignore[no-untyped-def]
    [job] = jobs.list(name=name)
    return job.job_id


def run_now(jobs, name: str, pipeline: Pipeline, **parameters: str) -> int:  # type: ignore[no-untyped-def]
    return jobs.run_now(job_id(jobs, name), job_parameters={**pipeline.inputs, **parameters}).run_id


def ended(project_emulator: Emulator, run_id: int):  # type: ignore[no-untyped-def]
    return wait_terminated(project_emulator.client(), run_id, timeout=60)


def exit_value(jobs, run) -> dict:  # type: ignore[no-untyped-def]
    [task] = latest_tasks(run).values()
    return json.loads(jobs.get_run_output(task.run_id).notebook_output.result)


def callbacks_of(receiver, pipeline: Pipeline) -> list[dict]:  # type: ignore[no-untyped-def]
    """The pipeline's callbacks so far, each verified under its key."""
    mine = [request for request in receiver.requests if json.loads(request.body)["promise_id"] == pipeline.promise_id]
    for request in mine:
        verify_callback(pipeline.key, request.body, request.headers)
    return [json.loads(request.body) for request in mine]


@pytest.fixture
def steps(receiver, pipeline_id) -> dict[str, Pipeline]:  # type: ignore[no-untyped-def]
    """One callback promise per job, as the worker gives each job step its own."""
    url = f"{receiver.url}/callbacks/databricks"
    return {step: Pipeline(f"{pipeline_id}-{step}", url) for step in ("ingest", "score", "report")}


def ingest(project_emulator, jobs, receiver, steps, folders) -> str:  # type: ignore[no-untyped-def]
    """Run ingest on the uploaded sample; the table it called back."""
    run = ended(
        project_emulator, run_now(jobs, "Onboarding ingest", steps["ingest"], upload=f"{folders}/uploads/customers.csv")
    )
    assert run.state.result_state is RunResultState.SUCCESS, run.state
    receiver.wait_for(1)
    [payload] = callbacks_of(receiver, steps["ingest"])
    assert payload["status"] == "success" and payload["result"] == exit_value(jobs, run)
    return payload["result"]["table"]


def test_the_three_jobs_run_each_passing_on_what_the_next_reads(project_emulator, jobs, receiver, steps, folders):
    table = ingest(project_emulator, jobs, receiver, steps, folders)

    assert (folders / "volumes" / table.removeprefix("/Volumes/")).is_file(), "written to the emulator's volumes"
    # The pair starts together, as the pipeline starts them, and both read the same table.
    score_run = run_now(jobs, "Onboarding risk score", steps["score"], table=table)
    report_run = run_now(jobs, "Onboarding report", steps["report"], table=table)
    score, report = ended(project_emulator, score_run), ended(project_emulator, report_run)

    receiver.wait_for(3)
    [scored] = callbacks_of(receiver, steps["score"])
    [reported] = callbacks_of(receiver, steps["report"])
    assert scored == {"promise_id": steps["score"].promise_id, "status": "success",
                      "result": {"score": 13, "rows": 8, "incomplete_rows": 1}}  # fmt: skip
    assert exit_value(jobs, score) == scored["result"]
    assert reported["status"] == "success" and reported["result"]["rows"] == 8
    assert reported["result"]["report"]["table"] == table and len(reported["result"]["report"]["columns"]) == 6
    assert exit_value(jobs, report) == reported["result"]
    assert [results(score), results(report)] == [{"score": "SUCCESS"}, {"report": "SUCCESS"}]


def test_an_empty_upload_reads_the_sample_path(project_emulator, jobs, receiver, steps):
    # The host has no /Workspace (the image has the sample there): the run fails on the sample's path.
    run = ended(project_emulator, run_now(jobs, "Onboarding ingest", steps["ingest"]))

    assert run.state.result_state is RunResultState.FAILED
    receiver.wait_for(1)
    [payload] = callbacks_of(receiver, steps["ingest"])
    assert "/Workspace/Shared/pipelines/samples/customers.csv" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("job", "parameters", "refusal"),
    [
        ("Onboarding ingest", {"upload": "/etc/passwd"}, "SourceRefused"),
        (
            "Onboarding risk score",
            {"table": "/Volumes/main/onboarding/ingested/../../../../etc/passwd"},
            "TableRefused",
        ),
        ("Onboarding report", {"table": "/etc/passwd"}, "TableRefused"),
    ],
)
def test_a_hostile_value_that_bypassed_the_gateway_fails_the_run_naming_it(
    project_emulator, jobs, receiver, steps, job, parameters, refusal
):
    run = ended(project_emulator, run_now(jobs, job, steps["ingest"], **parameters))

    assert run.state.result_state is RunResultState.FAILED
    receiver.wait_for(1)
    [payload] = callbacks_of(receiver, steps["ingest"])
    assert payload["status"] == "failure" and payload["error"]["type"] == refusal
    assert "root:" not in payload["error"]["message"]


@pytest.mark.parametrize(
    "fault",
    [
        # The notebook is given a table that is not there: it fails on its own and calls back the failure.
        {"widgets": {"table": tables.content_name(b"never ingested")}, "fail_attempts": 1},
        # The notebook fails before its first cell: no callback; the worker learns it by polling.
        {"fail": True, "fail_attempts": 1},
    ],
    ids=["failure-called-back", "failure-polled"],
)
def test_the_middle_job_fails_once_and_its_repair_succeeds(
    project_emulator, jobs, control, receiver, steps, folders, fault
):
    table = ingest(project_emulator, jobs, receiver, steps, folders)
    ingest_runs = counters(control, steps["ingest"].pipeline_id)["run_ids"]
    set_plan(control, steps["score"].pipeline_id, tasks={"score": fault})

    run_id = run_now(jobs, "Onboarding risk score", steps["score"], table=table)
    failed = ended(project_emulator, run_id)

    assert failed.state.result_state is RunResultState.FAILED and results(failed) == {"score": "FAILED"}
    called_back = "widgets" in fault
    if called_back:
        receiver.wait_for(2)
        [failure] = callbacks_of(receiver, steps["score"])
        assert failure["status"] == "failure" and failure["error"]["type"] == "FileNotFoundError"

    jobs.repair_run(run_id, rerun_all_failed_tasks=True)
    repaired = ended(project_emulator, run_id)

    assert repaired.state.result_state is RunResultState.SUCCESS and results(repaired) == {"score": "SUCCESS"}
    assert latest_tasks(repaired)["score"].attempt_number == 1, "the repair's attempt, in the same run"
    receiver.wait_for(3 if called_back else 2)
    success = callbacks_of(receiver, steps["score"])[-1]
    assert success == {"promise_id": steps["score"].promise_id, "status": "success",
                       "result": {"score": 13, "rows": 8, "incomplete_rows": 1}}  # fmt: skip
    assert counters(control, steps["score"].pipeline_id)["run_ids"] == [run_id], "repaired, not run again"
    assert counters(control, steps["ingest"].pipeline_id)["run_ids"] == ingest_runs, "ingest is not run again"
