"""The worker's Databricks client against the emulator, through databricks-sdk.

Checks the decisions ``pipeline_worker.databricks`` owns: what is transient,
what is permanent, what is terminal, and where the notebook's result is read;
and that it works the same signed in with a token or as a service principal
over OAuth, whose token the SDK refreshes before it expires.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from pipeline_shared import ids
from pipeline_shared.catalogue import Completion, Job
from pipeline_shared.models import DatabricksRun
from pipeline_worker.databricks import (
    RUNS_PER_LIST_PAGE,
    DatabricksConfig,
    DatabricksCredentials,
    DatabricksJobs,
    PermanentDatabricksError,
    PersonalAccessToken,
    RunView,
    ServicePrincipal,
    TransientDatabricksError,
)
from pipeline_worker.watchdog import result_of
from tests.support.callback_receiver import CallbackReceiver
from tests.support.emulator_process import (
    JOB_ID,
    JOB_IDS,
    SDK_REFRESHES_AFTER_SECONDS,
    Emulator,
    free_port,
    start_emulator,
    stop_emulator,
)
from tests.support.emulator_runs import Pipeline

OUTPUT_BUDGET = 1024 * 1024


def catalogue_job(**by: object) -> Job:
    return Job(name="under-test", title="t", description="d", completion=Completion.CALLBACK, **by)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = start_emulator(tmp_path_factory.mktemp("worker-emulator"))
    yield running
    stop_emulator(running)


def jobs_for(url: str, credentials: DatabricksCredentials, retry_timeout: int = 10) -> DatabricksJobs:
    return DatabricksJobs(
        DatabricksConfig(
            host=url,
            credentials=credentials,
            http_timeout_seconds=5,
            retry_timeout_seconds=retry_timeout,
            max_concurrent_calls=4,
        )
    )


@pytest.fixture
async def jobs(emulator: Emulator) -> AsyncIterator[DatabricksJobs]:
    client = jobs_for(emulator.url, PersonalAccessToken(emulator.token))
    yield client
    client.close()


@pytest.fixture
async def oauth_jobs(emulator: Emulator) -> AsyncIterator[DatabricksJobs]:
    client = jobs_for(emulator.url, ServicePrincipal(emulator.client_id, emulator.client_secret))
    yield client
    client.close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as running:
        yield running


def new_pipeline(receiver: CallbackReceiver, **parameters: str) -> Pipeline:
    return Pipeline(f"w-{uuid.uuid4().hex[:12]}", receiver.url, **parameters)


async def start_run(
    jobs: DatabricksJobs, emulator: Emulator, receiver: CallbackReceiver, **plan: object
) -> tuple[Pipeline, DatabricksRun]:
    """A new pipeline under this fault plan, and the run the worker's client started for it."""
    pipeline = new_pipeline(receiver)
    if plan:
        httpx.put(
            f"{emulator.url}/emulator/faults/pipelines/{pipeline.pipeline_id}", json=plan, headers=emulator.bearer
        )
    run = await jobs.run_now(JOB_ID, pipeline.job_parameters, ids.idempotency_token("test", pipeline.pipeline_id))
    return pipeline, run


async def read(jobs: DatabricksJobs, run_id: int) -> RunView:
    return await jobs.read_run(run_id, output_budget=OUTPUT_BUDGET)


async def wait_terminal(jobs: DatabricksJobs, run_id: int, timeout: float = 30) -> RunView:
    async with asyncio.timeout(timeout):
        while not (view := await read(jobs, run_id)).verdict.terminal:
            await asyncio.sleep(0.05)
    return view


async def test_run_now_is_idempotent_and_reports_the_run_page(jobs: DatabricksJobs, receiver: CallbackReceiver) -> None:
    pipeline = new_pipeline(receiver)
    token = ids.idempotency_token("test", pipeline.pipeline_id)

    first, second = await asyncio.gather(
        jobs.run_now(JOB_ID, pipeline.job_parameters, token), jobs.run_now(JOB_ID, pipeline.job_parameters, token)
    )

    assert first == second
    assert first.run_page_url and str(first.run_id) in first.run_page_url
    view = await wait_terminal(jobs, first.run_id)
    assert view.verdict.status == "success" and first.job_id == JOB_ID
    [callback] = receiver.wait_for(1)
    assert json.loads(callback.body)["promise_id"] == pipeline.promise_id


async def test_notebook_result_is_the_exit_value(
    jobs: DatabricksJobs, receiver: CallbackReceiver, emulator: Emulator
) -> None:
    _, run = await start_run(jobs, emulator, receiver, notebook="drop_callback")

    view = await wait_terminal(jobs, run.run_id)
    [task] = view.report.tasks
    result = result_of(view.report, None)

    assert task.exit_value is not None and not task.truncated
    assert result["row_count"] > 0 and result["columns"]
    assert receiver.requests == []


async def test_failed_run_is_terminal_with_the_error_message(
    jobs: DatabricksJobs, receiver: CallbackReceiver, emulator: Emulator
) -> None:
    _, run = await start_run(jobs, emulator, receiver, notebook="fail")

    view = await wait_terminal(jobs, run.run_id)

    assert (view.verdict.status, view.report.result_state) == ("failure", "FAILED")
    assert "FileNotFoundError" in view.report.state_message


async def test_cancel_stops_a_hanging_run(jobs: DatabricksJobs, receiver: CallbackReceiver, emulator: Emulator) -> None:
    _, run = await start_run(jobs, emulator, receiver, notebook="hang")

    await jobs.cancel(run.run_id)
    view = await wait_terminal(jobs, run.run_id)

    assert (view.verdict.status, view.report.result_state) == ("cancelled", "CANCELED")
    await jobs.cancel(run.run_id)  # a finished run is left as it is


async def test_throttling_is_ridden_through_with_one_run(
    jobs: DatabricksJobs, receiver: CallbackReceiver, emulator: Emulator
) -> None:
    pipeline, run = await start_run(
        jobs, emulator, receiver, run_now_errors=2, run_now_error_status=503, retry_after_seconds=0
    )

    counters = httpx.get(f"{emulator.url}/emulator/pipelines/{pipeline.pipeline_id}", headers=emulator.bearer).json()
    assert counters["run_ids"] == [run.run_id] and counters["run_now_rejected"] == 2


async def test_unknown_job_and_bad_token_are_permanent(emulator: Emulator, receiver: CallbackReceiver) -> None:
    pipeline = new_pipeline(receiver)
    for client, job_id, needle in (
        (jobs_for(emulator.url, PersonalAccessToken(emulator.token)), 999_999, "does not exist"),
        (jobs_for(emulator.url, PersonalAccessToken("dapi-wrong")), JOB_ID, "Invalid access token"),
        (jobs_for(emulator.url, ServicePrincipal(emulator.client_id, "dose-wrong")), JOB_ID, "invalid_client"),
    ):
        try:
            with pytest.raises(PermanentDatabricksError) as caught:
                token = ids.idempotency_token("test", pipeline.pipeline_id)
                await client.run_now(job_id, pipeline.job_parameters, token)
            assert needle in caught.value.error.message
        finally:
            client.close()


@pytest.mark.parametrize("credentials", [PersonalAccessToken("dapi-x"), ServicePrincipal("sp-x", "dose-x")])
async def test_unreachable_databricks_is_transient(credentials: DatabricksCredentials) -> None:
    # Over OAuth the SDK cannot even discover the token endpoint; still only "try again later".
    client = jobs_for(f"http://127.0.0.1:{free_port()}", credentials, retry_timeout=1)
    try:
        with pytest.raises(TransientDatabricksError):
            await read(client, 1)
    finally:
        client.close()


async def test_run_now_and_get_run_work_signed_in_as_a_service_principal(
    oauth_jobs: DatabricksJobs, receiver: CallbackReceiver, emulator: Emulator
) -> None:
    _, run = await start_run(oauth_jobs, emulator, receiver)
    view = await wait_terminal(oauth_jobs, run.run_id)

    assert view.verdict.status == "success" and str(run.run_id) in run.run_page_url
    assert emulator.oauth_counters()["tokens_issued"] >= 1


async def test_an_expiring_oauth_token_is_refreshed_between_calls(
    oauth_jobs: DatabricksJobs, receiver: CallbackReceiver, emulator: Emulator
) -> None:
    _, run = await start_run(oauth_jobs, emulator, receiver, notebook="hang")
    issued = emulator.oauth_counters()["tokens_issued"]

    await asyncio.sleep(SDK_REFRESHES_AFTER_SECONDS + 0.5)  # the token is now too close to its end to use
    view = await read(oauth_jobs, run.run_id)

    assert not view.verdict.terminal
    assert emulator.oauth_counters()["tokens_issued"] == issued + 1
    await oauth_jobs.cancel(run.run_id)


async def test_a_job_named_in_the_catalogue_is_found_by_its_name_once(jobs: DatabricksJobs, emulator: Emulator) -> None:
    listed = next(iter(emulator.client().jobs.list()))
    job = catalogue_job(databricks_job_name=listed.settings.name)

    assert await jobs.job_id(job) == listed.job_id
    assert await jobs.job_id(job) == listed.job_id  # from the cache
    assert await jobs.job_id(catalogue_job(databricks_job_id=77)) == 77  # an id is taken as it is


async def test_a_job_name_that_matches_nothing_is_permanent_and_names_the_way_out(jobs: DatabricksJobs) -> None:
    with pytest.raises(PermanentDatabricksError) as caught:
        await jobs.job_id(catalogue_job(databricks_job_name="No such job"))

    assert caught.value.error.type == "DatabricksJobNotFound"
    assert "'No such job'" in caught.value.error.message and "databricks_job_id" in caught.value.error.message


async def test_a_run_of_more_tasks_than_a_page_is_read_whole(jobs: DatabricksJobs) -> None:
    token = ids.idempotency_token("test", f"wide-{uuid.uuid4().hex[:8]}")
    run = await jobs.run_now(JOB_IDS["wide"], {}, token)

    view = await wait_terminal(jobs, run.run_id, timeout=90)

    assert view.verdict.status == "success"
    assert len(view.report.tasks) == 105 > 100, "Jobs API 2.2 pages tasks at 100; the SDK follows the token"
    assert {t.result_state for t in view.report.tasks} == {"SUCCESS"}


async def test_a_multi_task_run_reports_each_task_and_its_exit_value_within_the_budget(jobs: DatabricksJobs) -> None:
    token = ids.idempotency_token("test", f"report-{uuid.uuid4().hex[:8]}")
    run = await jobs.run_now(JOB_IDS["report"], {"customer": "C-9"}, token)
    await wait_terminal(jobs, run.run_id)

    whole = await jobs.read_run(run.run_id, result_task="publish", output_budget=OUTPUT_BUDGET)
    tight = await jobs.read_run(run.run_id, result_task="publish", output_budget=10)

    assert [t.task_key for t in whole.report.tasks] == ["extract", "aggregate", "publish"]
    extract = whole.report.tasks[0]
    assert json.loads(extract.exit_value or "") == {"customer": "C-9", "orders": 3} and not extract.truncated
    assert whole.report.tasks[1].exit_value is None, "a SQL task has no notebook exit value"
    # The result task is served first; what does not fit the budget is marked truncated.
    assert tight.report.tasks[0].truncated and not (tight.report.tasks[0].exit_value or "").startswith('{"customer"')


def runs_list_calls(emulator: Emulator) -> int:
    return httpx.get(f"{emulator.url}/emulator/calls", headers=emulator.bearer).json()["runs_list_calls"]


def pages_of(active: set[int]) -> int:
    """runs/list calls a listing of these runs takes: one per RUNS_PER_LIST_PAGE, and one for none."""
    return max(1, math.ceil(len(active) / RUNS_PER_LIST_PAGE))


async def test_active_run_ids_pages_through_every_active_run_and_skips_the_ended(
    jobs: DatabricksJobs, emulator: Emulator
) -> None:
    report, held, done = JOB_IDS["report"], f"w-held-{uuid.uuid4().hex[:8]}", f"w-done-{uuid.uuid4().hex[:8]}"
    httpx.put(f"{emulator.url}/emulator/faults/pipelines/{held}", json={"start_delay_seconds": 3600},
              headers=emulator.bearer)  # fmt: skip
    ended = await jobs.run_now(report, {"pipeline_id": done}, ids.idempotency_token("test", done))
    await wait_terminal(jobs, ended.run_id)
    started = await asyncio.gather(
        *(jobs.run_now(report, {"pipeline_id": held}, ids.idempotency_token("test", f"{held}-{n}")) for n in range(30))
    )
    before = runs_list_calls(emulator)
    try:
        active = await jobs.active_run_ids(report)
        everywhere = await jobs.active_run_ids()
    finally:
        for run in started:
            await jobs.cancel(run.run_id)

    assert {run.run_id for run in started} <= active, "30 active runs: more than one page of 25"
    assert ended.run_id not in active and ended.run_id not in everywhere
    assert active <= everywhere
    assert runs_list_calls(emulator) - before == pages_of(active) + pages_of(everywhere) >= 3


async def test_a_listing_refused_is_permanent_and_an_unreachable_workspace_transient(jobs: DatabricksJobs) -> None:
    with pytest.raises(PermanentDatabricksError) as caught:
        await jobs.active_run_ids(999_999)
    assert "could not list active runs" in caught.value.error.message and "does not exist" in caught.value.error.message

    client = jobs_for(f"http://127.0.0.1:{free_port()}", PersonalAccessToken("dapi-x"), retry_timeout=1)
    try:
        with pytest.raises(TransientDatabricksError):
            await client.active_run_ids()
    finally:
        client.close()
