"""Reading every promise of a pipeline run by its code at once, from a real resonate-pg server.

The status document of such a pipeline is made from all its promises, read in
one statement through ``pipelines.promises_of`` as the gateway's own database
role (the projector's statement). Only the real schema can tell whether that
role may, and whether every promise, and nothing of another pipeline, comes back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pipeline_api.domain.documents import status_of
from pipeline_api.domain.snapshots import DatabaseSnapshots
from pipeline_shared import names, promise_tree
from pipeline_shared.models import PipelineState
from pipeline_shared.promise_tree import PipelineTree
from pipeline_shared.resonate_client import ResonateLink
from tests.support.resonate_pg import ResonatePg, client_settings, running_resonate_pg, send_only_link
from tests.support.step_promises import ComposedPipeline


@pytest.fixture(scope="module")
def resonate_pg() -> Iterator[ResonatePg]:
    with running_resonate_pg() as server:
        yield server


@pytest.fixture
async def link(resonate_pg: ResonatePg) -> AsyncIterator[ResonateLink]:
    settings = client_settings(resonate_pg.gateway_url, resonate_pg.gateway_password)
    async with send_only_link(settings, names.API_GROUP) as link:
        yield link


async def test_every_promise_of_the_pipeline_and_none_of_another_is_read_at_once(link: ResonateLink) -> None:
    assert link.database is not None
    pipeline, neighbour = (ComposedPipeline(link.resonate.promises, "key:owner") for _ in range(2))
    for each in (pipeline, neighbour):
        await each.root()
    await pipeline.job_step_ended("1", "stats", {"rows": 3})
    decision = await pipeline.gate("2", "go-live")
    await neighbour.job_step("1", "other")

    promises = await DatabaseSnapshots(link.database).promises_of(pipeline.id)

    assert decision in promises and promise_tree.job_step_record_id(f"{pipeline.id}:1") in promises
    assert all(promise_tree.pipeline_id_of(promise_id) == pipeline.id for promise_id in promises)
    status = status_of(PipelineTree(promises[pipeline.id], promises), pipeline.spec, "csv-statistics")
    assert status.state is PipelineState.AWAITING_APPROVAL
    assert [(step.name, step.state.value) for step in status.steps] == [
        ("stats", "succeeded"),
        ("go-live", "awaiting_approval"),
    ]


async def test_a_pipeline_with_no_promises_reads_as_none(link: ResonateLink) -> None:
    assert link.database is not None
    assert await DatabaseSnapshots(link.database).promises_of("no-such-pipeline") == {}
