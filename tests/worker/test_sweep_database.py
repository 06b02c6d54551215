"""The watchdog's sweep on a real resonate-pg server: its two functions, as the worker's own role calls them.

Only the real schema can tell whether ``pipelines.watched_runs`` lists exactly
the pending watch records with their callbacks' states, page by page, whether
``pipelines.claim_sweep`` lets one worker of a group sweep an interval, and
whether the worker's role may call them and the gateway's may not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from resonate.types import Value

from pipeline_shared import names, promise_tree
from pipeline_shared.callbacks import create_callback_promise, stored_settlement
from pipeline_shared.models import Settlement, WatchRequest
from pipeline_shared.resonate_client import ResonateLink
from pipeline_worker.steps import WorkerDeps, now_ms
from pipeline_worker.sweep import DatabaseWatchedRuns, sweep
from pipeline_worker.watchdog import write_watch_record
from tests.support.pipeline_harness import CATALOGUE, SECRET, FakeJobs, run_state
from tests.support.resonate_pg import ResonatePg, client_settings, running_resonate_pg, send_only_link

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def resonate_pg() -> Iterator[ResonatePg]:
    with running_resonate_pg() as server:
        yield server


@pytest.fixture
async def link(resonate_pg: ResonatePg) -> AsyncIterator[ResonateLink]:
    """A send-only client on the worker's role (only the login matters)."""
    settings = client_settings(resonate_pg.worker_url, resonate_pg.worker_password)
    async with send_only_link(settings, names.WORKER_GROUP) as link:
        yield link


def deps_of(link: ResonateLink, jobs: FakeJobs) -> WorkerDeps:
    return WorkerDeps(
        databricks=jobs,  # type: ignore[arg-type]
        promises=link.resonate.promises,
        catalogue=CATALOGUE,
        signing_secret=SECRET,
        callback_url="http://api.test/callbacks/databricks",
        idempotency_namespace="unit",
        watchdog_interval_seconds=60,
    )


async def watching(deps: WorkerDeps, pipeline_id: str, run_id: int, *, deadline: int | None = None) -> str:
    """A pipeline's callback promise and its run's watch record, as a job step leaves them; the callback's id."""
    deadline = deadline or now_ms() + HOUR_MS
    callback = await create_callback_promise(deps.promises, pipeline_id, deadline)
    watch = WatchRequest(
        pipeline_id=pipeline_id, promise_id=callback.id, run_id=run_id, interval_seconds=60, job="nightly-refresh"
    )
    await write_watch_record(deps, watch, deadline)
    return callback.id


def unique(prefix: str) -> str:
    return f"{prefix}-{now_ms()}"


async def test_the_pending_records_are_listed_by_id_with_their_callbacks_state_page_by_page(link: ResonateLink) -> None:
    assert link.database is not None
    deps = deps_of(link, FakeJobs())
    prefix = unique("list")
    ids = [f"{prefix}-{n}" for n in range(5)]
    callbacks = [await watching(deps, pipeline_id, 100 + n) for n, pipeline_id in enumerate(ids)]
    settled = Settlement(status="success", source="callback", received_at=now_ms())
    await deps.promises.resolve(callbacks[1], Value(data=settled.model_dump(mode="json")))
    # A record settled by a sweep is listed no more; a promise that is no record is never listed.
    await deps.promises.resolve(promise_tree.watch_record_id(ids[2]), Value(data={"note": "closed"}))
    await deps.promises.create(
        f"{ids[3]}:1.unrelated", timeout_at=now_ms() + HOUR_MS, param=Value(data={}), tags={"resonate:origin": ids[3]}
    )
    runs = DatabaseWatchedRuns(link.database, names.WORKER_GROUP)

    first = await runs.after(prefix, 2)
    rest = await runs.after(first[-1].record.id, 10)

    listed = [w for w in first + rest if w.watch.pipeline_id.startswith(prefix)]
    assert [(w.watch.pipeline_id, w.callback_state) for w in listed] == [
        (ids[0], "pending"),
        (ids[1], "resolved"),
        (ids[3], "pending"),
        (ids[4], "pending"),
    ]
    assert len(first) == 2 and listed[0].watch.run_id == 100


async def test_a_callback_past_its_timeout_reads_as_timed_out_and_a_record_past_its_own_is_not_listed(
    link: ResonateLink,
) -> None:
    assert link.database is not None
    deps = deps_of(link, FakeJobs())
    soon, gone = unique("soon"), unique("gone")
    await watching(deps, soon, 7, deadline=now_ms() + 400)
    # A record whose callback promise is not there (gc'd, or never made): listed as such, for the sweep to close.
    watch = WatchRequest(pipeline_id=gone, promise_id=f"{gone}:nothing", run_id=8, interval_seconds=60)
    await write_watch_record(deps, watch, now_ms() + HOUR_MS)
    runs = DatabaseWatchedRuns(link.database, names.WORKER_GROUP)
    listed = {w.watch.pipeline_id: w.callback_state for w in await runs.after("", 1000)}
    assert listed[soon] == "pending" and listed[gone] == "missing"

    await asyncio.sleep(0.5)

    assert soon not in {w.watch.pipeline_id for w in await runs.after("", 1000)}, "the record timed out with it"


async def test_one_worker_of_a_group_sweeps_an_interval(link: ResonateLink) -> None:
    assert link.database is not None
    interval = now_ms()
    worker_a = DatabaseWatchedRuns(link.database, names.WORKER_GROUP)
    worker_b = DatabaseWatchedRuns(link.database, names.WORKER_GROUP)
    other_group = DatabaseWatchedRuns(link.database, "another-group")

    assert [await worker_a.claim(interval), await worker_b.claim(interval), await worker_a.claim(interval)] == [
        True,
        False,
        False,
    ]
    assert await other_group.claim(interval) and await worker_b.claim(interval + 60_000)


async def test_a_sweep_settles_a_run_that_ended_and_closes_what_a_callback_ended(link: ResonateLink) -> None:
    assert link.database is not None
    jobs = FakeJobs()
    deps = deps_of(link, jobs)
    ended, going, called = unique("ended"), unique("going"), unique("called")
    for pipeline_id, run_id in ((ended, 501), (going, 502), (called, 503)):
        await watching(deps, pipeline_id, run_id)
        jobs.states[run_id] = run_state("RUNNING")
    jobs.states[501] = run_state("TERMINATED", "FAILED", "the driver was lost")
    runs = DatabaseWatchedRuns(link.database, names.WORKER_GROUP)
    for other in await runs.after("", 1000):  # the other tests' records, in the same database: still going
        jobs.states.setdefault(other.watch.run_id, run_state("RUNNING"))
    done = Settlement(status="success", source="callback", received_at=now_ms())
    await deps.promises.resolve(promise_tree.callback_promise_id(called), Value(data=done.model_dump(mode="json")))
    jobs.states[503] = run_state("TERMINATED", "SUCCESS")

    report = await sweep(deps, runs)

    assert jobs.reads.count(501) == 1 and 502 not in jobs.reads and 503 not in jobs.reads
    stored = stored_settlement(await deps.promises.get(promise_tree.callback_promise_id(ended))).stored
    assert stored is not None and (stored.status, stored.source) == ("failure", "watchdog")
    for pipeline_id, state in ((ended, "resolved"), (going, "pending"), (called, "resolved")):
        assert (await deps.promises.get(promise_tree.watch_record_id(pipeline_id))).state == state, pipeline_id
    assert report.settled >= 1


async def test_the_gateways_role_may_not_list_the_watched_runs(resonate_pg: ResonatePg) -> None:
    conninfo: dict[str, Any] = {"password": resonate_pg.gateway_password}
    async with await psycopg.AsyncConnection.connect(resonate_pg.gateway_url, **conninfo) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT * FROM pipelines.watched_runs('', 10, 0)")
    async with await psycopg.AsyncConnection.connect(resonate_pg.gateway_url, **conninfo) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT pipelines.claim_sweep('worker', 0)")
