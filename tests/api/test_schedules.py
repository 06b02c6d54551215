"""The catalogue's schedules against a real resonate-pg: reconciled by the gateway, fired by the server, started once.

The server is the stack's image in a container of this module's own (tests/support/resonate_pg.py).
A firing is made to come at once by running resonate-pg's own schedule driver
(``resonate.process_schedule_timeouts``, what pg_cron runs every second) as the operator, with
"now" at the schedule's next firing: the crons here fire on 1 January or later, which the server's
own timer does not reach during a test. The worker is a Resonate client in the worker's group
with the firing's function registered as the worker registers it, and a stand-in for the pipeline
function that returns at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from resonate.context import Context
from resonate.error import ServerError

from pipeline_api.schedules import reconcile_schedules
from pipeline_api.settings import GatewaySettings
from pipeline_shared import names
from pipeline_shared.cron import next_firing
from pipeline_shared.promise_tree import CREATED_BY_TAG, OWNER_TAG, PipelineTree
from pipeline_shared.resonate_client import ResonateLink, connect
from pipeline_shared.schedules import (
    FIRING_TIMEOUT_MS,
    LocalScheduleRegistry,
    Reconciled,
    register_firing_starter,
    scheduled_pipeline_id,
)
from tests.support.pipeline_harness import SECRET
from tests.support.resonate_pg import ResonatePg, running_resonate_pg

CATALOGUE = """
default = "yearly"
[jobs.one]
title = "One"
description = "The one job."
databricks_job_id = 7
completion = "poll"
standalone = false

[pipelines.yearly]
title = "Yearly"
description = "Once a year."
jobs = ["one"]
version = 3
[pipelines.yearly.parameters.table]
description = "The table."
required = true
"""

SCHEDULE = """
[pipelines.yearly.schedule]
cron = "{cron}"
email = "ops@example.com"
parameters = {{ table = "sales" }}
"""

#: Longest a firing may take to become a started pipeline.
START_SECONDS = 30


@pytest.fixture(scope="module")
def resonate_pg() -> Iterator[ResonatePg]:
    with running_resonate_pg() as server:
        yield server


def gateway_settings(server: ResonatePg, folder: Path, cron: str | None) -> GatewaySettings:
    """A gateway's settings on the server, with a catalogue whose pipeline has ``cron`` (None: no schedule)."""
    catalogue = folder / f"catalogue-{cron or 'none'}.toml".replace(" ", "_").replace("*", "x")
    catalogue.write_text(CATALOGUE + (SCHEDULE.format(cron=cron) if cron else ""))
    return GatewaySettings(
        RESONATE_DATABASE_URL=server.gateway_url,
        RESONATE_DATABASE_PASSWORD=SecretStr(server.gateway_password),
        CALLBACK_SIGNING_SECRET=SECRET,
        JOB_CATALOGUE_FILE=catalogue,
    )


@pytest.fixture
async def gateway(resonate_pg: ResonatePg, tmp_path: Path) -> AsyncIterator[ResonateLink]:
    link = connect(gateway_settings(resonate_pg, tmp_path, None), names.API_GROUP, listen=False)
    link.resonate.start()
    try:
        yield link
    finally:
        await link.resonate.stop()
        assert link.database is not None
        await link.database.close()


@pytest.fixture
async def worker(resonate_pg: ResonatePg, tmp_path: Path) -> AsyncIterator[ResonateLink]:
    """The worker's group: the firing's function as the worker registers it; the pipeline a stand-in."""
    link = connect(gateway_settings(resonate_pg, tmp_path, None), names.WORKER_GROUP)
    register_firing_starter(link.resonate)

    def run_pipeline(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
        return {"ran": spec["id"]}

    link.resonate.register(run_pipeline, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_VERSION)
    link.resonate.start()
    try:
        yield link
    finally:
        await link.resonate.stop()
        assert link.database is not None
        await link.database.close()


@pytest.fixture
async def operator(resonate_pg: ResonatePg) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(resonate_pg.superuser_dsn, autocommit=True) as conn:
        yield conn


async def reconciled(gateway: ResonateLink, server: ResonatePg, folder: Path, cron: str | None) -> Reconciled:
    """Reconcile as a gateway with that catalogue would at start; what changed (from the record it keeps)."""
    before = await schedule_rows(server)
    await reconcile_schedules(gateway, gateway_settings(server, folder, cron), LocalScheduleRegistry())
    after = await schedule_rows(server)
    return Reconciled(
        created=[name for name in after if name not in before],
        replaced=[name for name in after if name in before and after[name] != before[name]],
        deleted=[name for name in before if name not in after],
    )


async def schedule_rows(server: ResonatePg) -> dict[str, tuple[Any, ...]]:
    """Resonate's schedules of ours, by pipeline: (cron, created_at, next_run_at)."""
    async with await psycopg.AsyncConnection.connect(server.superuser_dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT substr(id, length('pipeline-schedule.') + 1), cron, created_at, next_run_at "
                "FROM resonate.schedules WHERE id LIKE 'pipeline-schedule.%'"
            )
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


async def fire(operator: psycopg.AsyncConnection, at: int) -> None:
    """Run resonate-pg's schedule driver as pg_cron does, with "now" at ``at``."""
    await operator.execute("SELECT resonate.process_schedule_timeouts(%s)", (at,))


async def started(gateway: ResonateLink, pipeline_id: str) -> Any:
    deadline = asyncio.get_running_loop().time() + START_SECONDS
    while True:
        try:
            return await gateway.resonate.promises.get(pipeline_id)
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_a_firing_starts_exactly_one_pipeline_named_by_its_time(
    resonate_pg: ResonatePg, gateway: ResonateLink, worker: ResonateLink, operator, tmp_path: Path
) -> None:
    assert await reconciled(gateway, resonate_pg, tmp_path, "0 3 1 1 *") == Reconciled(["yearly"], [], [])
    _, created_at, fires_at = (await schedule_rows(resonate_pg))["yearly"]
    assert fires_at == next_firing("0 3 1 1 *", created_at)  # resonate-pg's next firing is ours

    await fire(operator, fires_at)
    await fire(operator, fires_at)  # the driver again at the same time: nothing more fires
    firing_id = f"pipeline-schedule.yearly.{fires_at}"
    root = await started(gateway, scheduled_pipeline_id("yearly", fires_at))

    spec = PipelineTree(root, {}).spec  # as the gateway reads a root
    assert spec is not None
    assert spec.id == root.id
    assert (spec.job, spec.version, spec.scheduled_at, spec.parameters) == ("yearly", 3, fires_at, {"table": "sales"})
    assert root.param.data["func"] == names.RUN_PIPELINE
    assert root.param.data["version"] == names.RUN_PIPELINE_VERSION
    assert root.tags[OWNER_TAG] == "schedule:yearly"
    assert root.tags[CREATED_BY_TAG] == firing_id
    assert root.tags["pipeline:schedule"] == "yearly"
    rows = await (
        await operator.execute(
            "SELECT id, origin_id FROM resonate.promises WHERE tags->>'pipeline:schedule' = 'yearly' ORDER BY id"
        )
    ).fetchall()
    # The firing (no origin: no pipeline's) and one root, its own origin, as the pipeline index reads them.
    assert rows == [(firing_id, None), (root.id, root.id)]
    assert (await schedule_rows(resonate_pg))["yearly"][2] == next_firing("0 3 1 1 *", fires_at)


async def test_reconciling_twice_changes_nothing_and_a_changed_cron_replaces_the_schedule(
    resonate_pg: ResonatePg, gateway: ResonateLink, tmp_path: Path
) -> None:
    await reconciled(gateway, resonate_pg, tmp_path, "0 4 2 1 *")
    assert await reconciled(gateway, resonate_pg, tmp_path, "0 4 2 1 *") == Reconciled([], [], [])
    assert await reconciled(gateway, resonate_pg, tmp_path, "0 5 2 1 *") == Reconciled([], ["yearly"], [])
    cron, _, fires_at = (await schedule_rows(resonate_pg))["yearly"]
    assert cron == "0 5 2 1 *"
    assert fires_at == next_firing("0 5 2 1 *")


async def test_a_schedule_the_catalogue_no_longer_declares_is_deleted(
    resonate_pg: ResonatePg, gateway: ResonateLink, operator, tmp_path: Path
) -> None:
    await reconciled(gateway, resonate_pg, tmp_path, "0 6 3 1 *")
    assert await reconciled(gateway, resonate_pg, tmp_path, None) == Reconciled([], [], ["yearly"])
    assert await (await operator.execute("SELECT pipeline FROM pipelines.schedule")).fetchall() == []
    assert await reconciled(gateway, resonate_pg, tmp_path, None) == Reconciled([], [], [])


@pytest.mark.parametrize(
    "cron", ["* * * * *", "*/15 9-17 * * 1-5", "5/20 * * * *", "0 0 29 2 *", "0 0 1,15 * 0", "7 1-23/4 */3 2-11 *"]
)
async def test_the_next_firing_is_resonate_pgs(operator, cron: str) -> None:
    after = 1_796_500_123_456
    for _ in range(5):
        row = await (await operator.execute("SELECT resonate._next_cron(%s, %s)", (cron, after))).fetchone()
        assert row is not None
        assert next_firing(cron, after) == row[0]
        after = row[0]


async def test_after_an_outage_a_missed_firing_starts_unless_it_is_over_an_hour_late(
    resonate_pg: ResonatePg, gateway: ResonateLink, worker: ResonateLink, operator, tmp_path: Path
) -> None:
    await reconciled(gateway, resonate_pg, tmp_path, "0 7 4 1 *")
    now = int(time.time() * 1000) // 60_000 * 60_000
    missed = {"late": now - 5 * 60_000, "too_late": now - 2 * FIRING_TIMEOUT_MS}
    for fired_at in missed.values():
        # As if the database had been away since then: the driver finds the firing still due.
        await operator.execute(
            "UPDATE resonate.schedules SET next_run_at = %s WHERE id = 'pipeline-schedule.yearly'", (fired_at,)
        )
        await fire(operator, now)
    late = await started(gateway, scheduled_pipeline_id("yearly", missed["late"]))
    assert late.tags[OWNER_TAG] == "schedule:yearly"
    await asyncio.sleep(2)  # time enough for the worker to have been offered the firing
    firing = f"pipeline-schedule.yearly.{missed['too_late']}"
    assert await (await operator.execute("SELECT 1 FROM resonate.promises WHERE id = %s", (firing,))).fetchone()
    with pytest.raises(ServerError):
        await gateway.resonate.promises.get(scheduled_pipeline_id("yearly", missed["too_late"]))


async def test_a_cron_is_read_in_utc_whatever_the_sessions_time_zone(operator) -> None:
    after = 1_796_500_123_456
    await operator.execute("SET TimeZone = 'America/New_York'")
    row = await (await operator.execute("SELECT resonate._next_cron('0 3 * * *', %s)", (after,))).fetchone()
    assert row is not None
    assert row[0] == next_firing("0 3 * * *", after)
