"""The watchdog's sweep: once an interval, one worker looks at every run being waited on.

A job step waiting on a run leaves a watch record (a pending promise of its
pipeline, tagged :data:`~pipeline_shared.promise_tree.WATCH_TAG`; see
:func:`.watchdog.start_watching`). Each worker wakes at every interval's
start and asks to sweep it; the first to ask does (``pipelines.claim_sweep``).
A sweep

1. lists the watch records, each with its callback promise's state
   (``pipelines.watched_runs``: resonate-pg cannot search promises);
2. lists the workspace's active runs (Jobs API ``runs/list`` with
   ``active_only``, once per job watched, paged);
3. reads, from Databricks, only the watched runs that are not listed as
   active, and those whose pipeline is overdue (:func:`.watchdog.check_run`):
   a run that is over settles its callback promise from the run itself;
4. settles each watch record whose callback is settled (by the notebook, by
   a cancel, or by step 3) with what became of it, so that it leaves the list.

The records are listed before the runs, and a record is written only once
its run exists: a watched run that is still active is in the listing. A run
missing from the listing is only read, never decided on: only a read that
says the run is over settles anything, as a check always did.

Its cost is two listings and one read per run that ended since the last
sweep, whatever the number waiting. A sweep whose worker dies is not
retried; the next interval's reads everything again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import psycopg
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from resonate.promises import Promises
from resonate.types import PromiseRecord, Value

from pipeline_shared.models import CheckOutcome, WatchRequest
from pipeline_shared.promise_rows import COLUMNS, record_of_row

from . import metrics
from .databricks import PermanentDatabricksError, TransientDatabricksError
from .steps import WorkerDeps, job_of, now_ms
from .watchdog import check_run, overdue

if TYPE_CHECKING:
    from pipeline_shared.resonate_client import ResonateDatabase

logger = logging.getLogger(__name__)

#: Watch records read per statement.
PAGE = 500
#: Runs read from Databricks at once by one sweep (the SDK's calls share the worker's pool besides).
READS_AT_ONCE = 8


@dataclass(frozen=True)
class Watched:
    """A watch record as listed: the run it watches, and the state of the callback promise it waits for."""

    record: PromiseRecord
    watch: WatchRequest
    #: ``pending``, ``resolved``, ``rejected_timedout``, ...; ``missing`` when there is no such promise.
    callback_state: str


class WatchedRuns(Protocol):
    """Where the watch records are, and who sweeps each interval."""

    async def claim(self, interval_start_ms: int) -> bool:
        """Whether this worker sweeps the interval starting at ``interval_start_ms`` (the first to ask does)."""
        ...

    async def after(self, record_id: str, page: int) -> list[Watched]:
        """The pending watch records after ``record_id`` by id, at most ``page`` of them."""
        ...


class DatabaseWatchedRuns:
    """The watch records in the resonate-pg database, through the watchdog role's two functions."""

    def __init__(self, database: ResonateDatabase, group: str) -> None:
        self._db = database
        self._group = group

    async def claim(self, interval_start_ms: int) -> bool:
        async with self._db.session() as conn:
            cursor = await conn.execute("SELECT pipelines.claim_sweep(%s, %s)", (self._group, interval_start_ms))
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def after(self, record_id: str, page: int) -> list[Watched]:
        async with self._db.session() as conn:
            cursor = await conn.execute(
                f"SELECT {COLUMNS}, callback_state FROM pipelines.watched_runs(%s, %s, %s)",
                (record_id, page, now_ms()),
            )
            rows = await cursor.fetchall()
        return [watched for *columns, state in rows if (watched := watched_of(record_of_row(tuple(columns)), state))]


def watched_of(record: PromiseRecord, callback_state: str) -> Watched | None:
    """The watch a record holds; None (logged) when its param is not one, which no sweep can act on."""
    try:
        return Watched(record, WatchRequest.model_validate(record.param.data), callback_state)
    except ValidationError as exc:
        logger.error("watch record %s holds no watch, left to time out: %s", record.id, exc)
        return None


@dataclass
class SweepReport:
    """What one sweep saw and did, for its log line and the tests."""

    watched: int = 0
    listed_active: int = 0
    read: int = 0
    settled: int = 0
    closed: int = 0


async def sweep(deps: WorkerDeps, runs: WatchedRuns) -> SweepReport:
    """One sweep of every watched run (the module's steps 1 to 4). Databricks' errors postpone the reads."""
    report = SweepReport()
    listed = await _all(runs)
    report.watched = len(listed)
    waiting = [w for w in listed if w.callback_state == "pending"]
    over = [w for w in listed if w.callback_state != "pending"]
    metrics.WATCHDOG_WATCHED.set(len(waiting))
    try:
        active = await _active_runs(deps, waiting)
    except (TransientDatabricksError, PermanentDatabricksError) as exc:
        logger.warning("watchdog sweep could not list the active runs, reads nothing this time: %s", exc)
        active, waiting = set(), []
    report.listed_active = len(active)
    suspects = [w for w in waiting if w.watch.run_id not in active or overdue(job_of(deps, w.watch.job), w.watch)]
    report.read = len(suspects)
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def read(watched: Watched) -> None:
        async with gate:
            check = await check_run(deps, watched.watch)
        if check.over:
            report.settled += check.settled
            await _close(deps.promises, watched.record, check.outcome)
            report.closed += 1

    async def close(watched: Watched) -> None:
        async with gate:
            await _close(deps.promises, watched.record, CheckOutcome(note="callback promise settled"))
        report.closed += 1

    await asyncio.gather(*(read(w) for w in suspects), *(close(w) for w in over))
    metrics.WATCHDOG_SWEEPS.inc()
    return report


async def _all(runs: WatchedRuns) -> list[Watched]:
    listed: list[Watched] = []
    after = ""
    while True:
        page = await runs.after(after, PAGE)
        listed += page
        if len(page) < PAGE:
            return listed
        after = page[-1].record.id


async def _active_runs(deps: WorkerDeps, waiting: Sequence[Watched]) -> set[int]:
    """The active runs of every job a watched run is of; all the workspace's when one's job is unknown."""
    if not waiting:
        return set()
    jobs = {w.watch.job_id for w in waiting}
    if None in jobs:
        return await deps.databricks.active_run_ids()
    found: set[int] = set()
    for job_id in sorted(j for j in jobs if j is not None):
        found |= await deps.databricks.active_run_ids(job_id)
    return found


async def _close(promises: Promises, record: PromiseRecord, outcome: CheckOutcome) -> None:
    """Settle a watch record with what became of its run (a record settled or timed out meanwhile stays so)."""
    await promises.resolve(record.id, Value(data=outcome.model_dump(mode="json")))


async def sweep_every_interval(deps: WorkerDeps, runs: WatchedRuns, stop: asyncio.Event | None = None) -> None:
    """Ask to sweep at each interval's start, and sweep when this worker is the first to ask; until ``stop``.

    Intervals are aligned to the epoch, so the workers of a group ask about the same ones.
    """
    interval = deps.watchdog_interval_seconds
    stop = stop or asyncio.Event()
    while not stop.is_set():
        now = time.time()
        start = (int(now / interval) + 1) * interval
        try:
            await asyncio.wait_for(stop.wait(), timeout=start - now)
            return
        except TimeoutError:
            pass
        try:
            if not await runs.claim(int(start * 1000)):
                # Another worker sweeps this interval and reports what it saw: the group's figure is the max.
                metrics.WATCHDOG_WATCHED.set(0)
                continue
            began = time.perf_counter()
            report = await sweep(deps, runs)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The database is away (restarting, say): said in one line, and the next interval tries again.
            logger.warning("watchdog sweep failed, the database is away; the next interval sweeps again: %s", exc)
            metrics.WATCHDOG_SWEEP_FAILURES.inc()
            continue
        except Exception:
            logger.exception("watchdog sweep failed; the next interval sweeps again")
            metrics.WATCHDOG_SWEEP_FAILURES.inc()
            continue
        if report.watched:
            logger.info(
                "watchdog sweep: %d watched, %d active listed, %d read, %d settled from the run, %d closed, %.0f ms",
                report.watched,
                report.listed_active,
                report.read,
                report.settled,
                report.closed,
                (time.perf_counter() - began) * 1000,
            )
