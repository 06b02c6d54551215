"""The projector: its batch (notes read, rows and events written, notes deleted), one at a time, and its loop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pipeline_api.index.queries import PROJECTOR_LOCK, PipelineIndex
from pipeline_shared.models import PipelineState
from tests.support.composed_promises import ComposedPromises
from tests.support.pipeline_promises import PipelinePromises, principal, project_everything


async def notes_of(superuser: psycopg.AsyncConnection, pipeline_id: str) -> int:
    """How many changes of the pipeline wait to be projected."""
    cursor = await superuser.execute("SELECT count(*) FROM pipelines.changes WHERE pipeline_id = %s", (pipeline_id,))
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def row_of(superuser: psycopg.AsyncConnection, pipeline_id: str) -> dict | None:
    cursor = superuser.cursor(row_factory=dict_row)
    await cursor.execute("SELECT * FROM pipelines.pipeline WHERE id = %s", (pipeline_id,))
    return await cursor.fetchone()


async def test_a_start_is_noted_with_its_promise_and_projected_into_a_row_and_an_event(
    index: PipelineIndex, promises: PipelinePromises, superuser: psycopg.AsyncConnection
) -> None:
    owner = principal()
    pipeline_id = await promises.start(owner)
    assert await notes_of(superuser, pipeline_id) >= 1
    assert await index.summary(pipeline_id) is None

    assert await project_everything(index) >= 1

    assert await notes_of(superuser, pipeline_id) == 0
    summary = await index.summary(pipeline_id)
    assert summary is not None
    assert (summary.state, summary.owner, summary.job, summary.email, summary.run_id) == (
        PipelineState.STARTING,
        owner.id,
        "csv-statistics",
        "index@example.com",
        None,
    )
    [started] = await index.timeline(pipeline_id)
    assert (started.kind, started.data["by"], started.data["job"]) == ("started", owner.id, "csv-statistics")


async def test_each_change_is_projected_again_and_events_are_written_once(
    index: PipelineIndex, promises: PipelinePromises, superuser: psycopg.AsyncConnection
) -> None:
    pipeline_id = await promises.start(principal())
    await project_everything(index)
    first = await row_of(superuser, pipeline_id)

    run = await promises.trigger(pipeline_id, run_id=7001)
    await project_everything(index)
    waiting = await row_of(superuser, pipeline_id)
    await promises.finish(pipeline_id, PipelineState.SUCCEEDED, run=run, result={"rows": 3})
    await project_everything(index)
    # Projecting a pipeline nothing has changed in rewrites nothing: its version stays.
    await project_everything(index)
    done = await row_of(superuser, pipeline_id)

    assert first is not None and waiting is not None and done is not None
    assert (waiting["state"], waiting["run_id"], waiting["run_page_url"]) == ("waiting", 7001, run.run_page_url)
    assert done["state"] == "succeeded"
    assert first["version"] < waiting["version"] < done["version"]
    assert done["version"] == (await row_of(superuser, pipeline_id) or {})["version"]
    events = await index.timeline(pipeline_id)
    assert [event.kind for event in events] == ["started", "run_triggered", "finished"]
    assert len({event.seq for event in events}) == 3
    assert await notes_of(superuser, pipeline_id) == 0


async def test_a_pipeline_that_cannot_be_projected_keeps_its_notes_and_its_last_row_while_the_others_go_on(
    index: PipelineIndex, promises: PipelinePromises, superuser: psycopg.AsyncConnection
) -> None:
    owner = principal()
    broken, healthy = await promises.start(owner), await promises.start(owner)
    await project_everything(index)
    # A workflow outcome the gateway's reading refuses (no such state): the projection raises.
    await promises.resolve_root_with(broken, {"state": "exploded"})
    await promises.finish(healthy, PipelineState.FAILED)

    await project_everything(index)

    assert await notes_of(superuser, broken) >= 1
    still = await index.summary(broken)
    assert still is not None and still.state == PipelineState.STARTING
    assert await notes_of(superuser, healthy) == 0
    done = await index.summary(healthy)
    assert done is not None and done.state == PipelineState.FAILED

    # Gone from Resonate (as collected after its retention period): its row and events go too, and so do its notes.
    await superuser.execute("DELETE FROM resonate.promises WHERE origin_id = %s", (broken,))
    await project_everything(index)
    assert await index.summary(broken) is None
    assert await index.timeline(broken) == []
    assert await notes_of(superuser, broken) == 0


async def test_while_another_projector_holds_the_lock_a_batch_projects_nothing_and_leaves_the_notes(
    index: PipelineIndex, promises: PipelinePromises, superuser: psycopg.AsyncConnection
) -> None:
    pipeline_id = await promises.start(principal())

    async with superuser.transaction():
        await superuser.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTOR_LOCK,))
        assert await index.project_pending() == 0
        assert await notes_of(superuser, pipeline_id) >= 1
        assert await index.summary(pipeline_id) is None

    assert await project_everything(index) >= 1
    assert await index.summary(pipeline_id) is not None
    assert await notes_of(superuser, pipeline_id) == 0


async def test_an_index_at_its_migration_has_no_problem(index: PipelineIndex) -> None:
    assert await index.problem() is None


async def test_the_running_projector_projects_each_change_within_moments(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    projector = asyncio.create_task(index.run())
    try:
        pipeline_id = await promises.start(principal())
        async with asyncio.timeout(5):
            while await index.summary(pipeline_id) is None:
                await asyncio.sleep(0.05)
        await promises.finish(pipeline_id, PipelineState.SUCCEEDED)
        async with asyncio.timeout(5):
            while (summary := await index.summary(pipeline_id)) is None or not summary.state.is_final:
                await asyncio.sleep(0.05)
    finally:
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
    assert summary.state == PipelineState.SUCCEEDED


async def brief_of(superuser: psycopg.AsyncConnection, pipeline_id: str) -> dict[str, Any]:
    """The row's state, steps and run: what a pipeline run by its code is listed with."""
    row = await row_of(superuser, pipeline_id)
    assert row is not None
    return {name: row[name] for name in ("state", "steps", "run_id")}


async def test_a_pipeline_run_by_its_code_is_projected_with_its_steps_and_the_wait_that_holds_it(
    index: PipelineIndex, composed: ComposedPromises, superuser: psycopg.AsyncConnection
) -> None:
    who = principal()
    pid = await composed.start(who)
    await project_everything(index)
    assert await brief_of(superuser, pid) == {"state": "starting", "steps": [], "run_id": None}

    await composed.job_step(pid, "1", "ingest-upload", 501, outcome="success", ended=PipelineState.SUCCEEDED)
    await composed.job_step(pid, "2", "risk-score", 502)
    await project_everything(index)
    assert await brief_of(superuser, pid) == {
        "state": "waiting",
        "steps": [
            {"id": "1", "kind": "job", "name": "ingest-upload", "state": "succeeded"},
            {"id": "2", "kind": "job", "name": "risk-score", "state": "running"},
        ],
        "run_id": None,  # two job steps: each run is on the pipeline's page
    }

    await composed.job_step(pid, "3", "report-build", 503, outcome="failure")
    await composed.awaiting_repair(pid, "3")
    await project_everything(index)
    assert (await brief_of(superuser, pid))["state"] == "awaiting_repair"

    # An open gate is what the pipeline waits for first, even beside a run awaiting repair.
    await composed.gate(pid, "4", "high-risk")
    await project_everything(index)
    row = await brief_of(superuser, pid)
    assert row["state"] == "awaiting_approval"
    assert [(s["name"], s["state"]) for s in row["steps"]][2:] == [
        ("report-build", "awaiting_repair"),
        ("high-risk", "awaiting_approval"),
    ]

    await composed.finish(pid, PipelineState.FAILED)
    await project_everything(index)
    assert (await brief_of(superuser, pid))["state"] == "failed"


async def test_a_pipeline_of_one_job_step_lists_its_run_as_a_one_job_pipeline_does(
    index: PipelineIndex, composed: ComposedPromises, superuser: psycopg.AsyncConnection
) -> None:
    pid = await composed.start(principal())
    await composed.job_step(pid, "1", "csv-statistics", 611, outcome="success", ended=PipelineState.SUCCEEDED)
    await composed.outcome_email(pid, "2")
    await project_everything(index)

    assert await brief_of(superuser, pid) == {
        "state": "notifying",
        "steps": [{"id": "1", "kind": "job", "name": "csv-statistics", "state": "succeeded"}],
        "run_id": 611,
    }


async def test_a_one_job_pipeline_started_before_pipelines_were_code_has_no_steps(
    index: PipelineIndex, promises: PipelinePromises, superuser: psycopg.AsyncConnection
) -> None:
    pid = await promises.start(principal())
    await promises.trigger(pid, 700)
    await project_everything(index)

    assert await brief_of(superuser, pid) == {"state": "waiting", "steps": [], "run_id": 700}
