"""The watchdog's sweep, in process: what it lists, what it reads, what it settles, and what it leaves alone.

Each test drives one sweep by hand (``sweep``) over pipelines run by the real
runner on the in-process server, against the fake workspace; the harness's
own sweep stays off (its interval is an hour), so nothing else reads a run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client import REGISTRY

from pipeline_shared import names, promise_tree
from pipeline_shared.callbacks import create_callback_promise, stored_settlement
from pipeline_shared.invocations import dispatch
from pipeline_shared.models import CheckOutcome, PipelineOutcome, PipelineState, WatchRequest
from pipeline_worker.databricks import TransientDatabricksError
from pipeline_worker.steps import now_ms
from pipeline_worker.sweep import sweep, sweep_every_interval
from tests.support.pipeline_harness import CATALOGUE, Harness, run_state


async def outcome_of(handle: Any) -> PipelineOutcome:
    return PipelineOutcome.model_validate(await asyncio.wait_for(handle.result(), 10))


async def waiting(harness: Harness, count: int, job: str = "nightly-refresh") -> list[tuple[Any, Any, int]]:
    """``count`` one-job pipelines of ``job``, each waiting on its run with its watch record written."""
    started = [harness.start_code(job, parameters={"table": "sales"}) for _ in range(count)]
    found = []
    for spec, handle in started:
        run = await harness.wait_for_step_run(spec.id, "1")
        await harness.wait_for_promise(promise_tree.watch_record_id(promise_tree.step_base(spec.id, "1")))
        found.append((spec, handle, run.run_id))
    return found


async def test_a_sweep_lists_once_and_reads_only_the_runs_no_longer_active() -> None:
    harness = Harness()
    try:
        pipelines = await waiting(harness, 6)
        (ended_spec, ended_handle, ended_run), *others = pipelines
        harness.jobs.states[ended_run] = run_state("TERMINATED", "SUCCESS")
        harness.jobs.outputs[ended_run] = json.dumps({"rows": 3})

        report = await sweep(harness.deps, harness.watched)

        assert (report.watched, report.read, report.settled, report.closed) == (6, 1, 1, 1)
        assert harness.jobs.list_calls == 1, "one job watched: one listing"
        assert harness.jobs.reads == [ended_run], "the five still active are not read"
        outcome = await outcome_of(ended_handle)
        assert (outcome.state, outcome.result) == (PipelineState.SUCCEEDED, {"rows": 3})
        callback = promise_tree.callback_promise_id(promise_tree.step_base(ended_spec.id, "1"))
        assert stored_settlement(await harness.resonate.promises.get(callback)).stored.source == "watchdog"
        record = await harness.resonate.promises.get(
            promise_tree.watch_record_id(promise_tree.step_base(ended_spec.id, "1"))
        )
        assert CheckOutcome.model_validate(record.value.data).note == "settled from the run: success"

        again = await sweep(harness.deps, harness.watched)

        assert (again.watched, again.read, again.closed) == (5, 0, 0), "a settled record leaves the list"
        assert harness.jobs.reads == [ended_run]
        assert len(others) == 5
    finally:
        await harness.stop()


async def test_a_record_whose_callback_came_is_closed_without_reading_its_run() -> None:
    harness = Harness()
    try:
        [(spec, handle, run_id)] = await waiting(harness, 1)
        await harness.settle_step(spec.id, "1", status="success", result={"n": 1})
        harness.jobs.states[run_id] = run_state("TERMINATED", "SUCCESS")
        await outcome_of(handle)

        report = await sweep(harness.deps, harness.watched)

        assert (report.watched, report.read, report.closed) == (1, 0, 1)
        assert harness.jobs.reads == [] and harness.jobs.list_calls == 0, "nothing waits: Databricks is not asked"
        assert (await sweep(harness.deps, harness.watched)).watched == 0
    finally:
        await harness.stop()


async def test_a_run_listed_as_active_but_overdue_is_read_and_never_decided_on_while_going() -> None:
    job = CATALOGUE.job("nightly-refresh").model_copy(update={"expected_duration_seconds": 1})
    harness = Harness(catalogue=CATALOGUE.model_copy(update={"jobs": {**CATALOGUE.jobs, job.name: job}}))
    try:
        [(spec, _, run_id)] = await waiting(harness, 1)
        record_id = promise_tree.watch_record_id(promise_tree.step_base(spec.id, "1"))
        record = await harness.resonate.promises.get(record_id)
        assert WatchRequest.model_validate(record.param.data).started_at is not None
        await asyncio.sleep(1.1)

        report = await sweep(harness.deps, harness.watched)

        assert (report.read, report.settled, report.closed) == (1, 0, 0)
        assert harness.jobs.reads == [run_id]
        assert (await harness.resonate.promises.get(record_id)).state == "pending", "still watched"
    finally:
        await harness.stop()


async def test_when_the_active_runs_cannot_be_listed_nothing_is_read_or_decided() -> None:
    harness = Harness()
    try:
        [(spec, _, run_id)] = await waiting(harness, 1)
        harness.jobs.states[run_id] = run_state("TERMINATED", "FAILED", "boom")

        harness.jobs.fail_next_list.append(TransientDatabricksError("workspace unreachable"))
        report = await sweep(harness.deps, harness.watched)

        assert (report.watched, report.read, report.closed) == (1, 0, 0)
        assert REGISTRY.get_sample_value("watchdog_watched_runs") == 1, "still waited on, though not read"
        assert harness.jobs.reads == []
        callback = promise_tree.callback_promise_id(promise_tree.step_base(spec.id, "1"))
        assert (await harness.resonate.promises.get(callback)).state == "pending"
    finally:
        await harness.stop()


async def test_a_check_scheduled_before_the_sweep_hands_its_run_to_the_sweep() -> None:
    # A pipeline waiting since before the sweep: a chain of checks, each scheduling the next, and no record.
    harness = Harness()
    try:
        pipeline_id, run_id = "p-before-the-sweep", 555
        callback = await create_callback_promise(harness.resonate.promises, pipeline_id, now_ms() + 600_000)
        harness.jobs.states[run_id] = run_state("RUNNING")
        watch = WatchRequest(
            pipeline_id=pipeline_id,
            promise_id=callback.id,
            run_id=run_id,
            interval_seconds=60,
            check=3,
            job="csv-statistics",
        )
        check_id = promise_tree.check_id(pipeline_id, 3)
        await dispatch(
            harness.resonate.promises,
            check_id,
            names.WATCH_DATABRICKS_RUN,
            watch.model_dump(mode="json"),
            group=names.WORKER_GROUP,
            origin=pipeline_id,
            timeout_at=callback.timeout_at,
        )

        check = await harness.wait_for_promise(check_id, settled=True)

        assert CheckOutcome.model_validate(check.value.data).note == "run still going; watched by the sweep from now on"
        assert [p for p in harness.promise_ids(pipeline_id) if promise_tree.check_of(pipeline_id, p)] == [check_id]
        [listed] = await harness.watched.after("", 10)
        assert (listed.record.id, listed.watch.run_id, listed.callback_state) == (
            promise_tree.watch_record_id(pipeline_id),
            run_id,
            "pending",
        )
        harness.jobs.states[run_id] = run_state("TERMINATED", "CANCELED", "cancelled in the UI")
        assert (await sweep(harness.deps, harness.watched)).settled == 1
        settled = stored_settlement(await harness.resonate.promises.get(callback.id)).stored
        assert settled is not None and (settled.status, settled.source) == ("cancelled", "watchdog")
    finally:
        await harness.stop()


async def test_the_workers_of_a_group_sweep_each_interval_once() -> None:
    harness = Harness()
    try:
        deps = harness.deps.__class__(**{**harness.deps.__dict__, "watchdog_interval_seconds": 0.05})
        stop = asyncio.Event()
        workers = [asyncio.create_task(sweep_every_interval(deps, harness.watched, stop)) for _ in range(3)]
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)

        assert 6 <= harness.watched.claims <= 11, "about one sweep per 50 ms interval, not three"
    finally:
        await harness.stop()
