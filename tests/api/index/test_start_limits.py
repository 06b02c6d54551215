"""The start limits as the database decides them (``pipelines.admit_start``), shared by every gateway replica."""

from __future__ import annotations

import uuid

import pytest

from pipeline_api.domain.limits import DatabaseStartAdmission, PrincipalLimits, StartLimits
from pipeline_api.index.queries import PipelineIndex
from pipeline_shared.errors import StartRateLimited, TooManyWaiting
from pipeline_shared.models import PipelineState
from pipeline_shared.resonate_client import ResonateDatabase
from tests.support.pipeline_promises import PipelinePromises, principal, project_everything


def admission(database: ResonateDatabase, starts_per_minute: int, waiting: int) -> DatabaseStartAdmission:
    return DatabaseStartAdmission(database, StartLimits(PrincipalLimits(starts_per_minute, waiting), {}))


def new_id() -> str:
    return f"idx-{uuid.uuid4().hex[:16]}"


async def test_the_rate_admits_as_many_starts_a_minute_as_allowed_and_a_repeat_is_not_counted(
    database: ResonateDatabase,
) -> None:
    limited, who = admission(database, starts_per_minute=2, waiting=0), principal().id
    first, second = new_id(), new_id()
    await limited.admit(who, first)
    await limited.admit(who, second)

    with pytest.raises(StartRateLimited, match="at most 2 pipelines a minute") as refused:
        await limited.admit(who, new_id())
    # The same start again (a client retrying): admitted, and not counted twice.
    await limited.admit(who, first)
    # Another principal has a minute of its own.
    await limited.admit(principal().id, new_id())

    assert 1 <= refused.value.retry_after_seconds <= 60


async def test_the_waiting_quota_counts_starts_the_index_does_not_show_yet_and_frees_once_one_finishes(
    database: ResonateDatabase, index: PipelineIndex, promises: PipelinePromises
) -> None:
    limited, who = admission(database, starts_per_minute=0, waiting=1), principal()
    first = new_id()
    await limited.admit(who.id, first)
    await promises.start(who, pipeline_id=first)

    # Not projected yet: the logged start counts.
    with pytest.raises(TooManyWaiting, match="1 of yours are not finished"):
        await limited.admit(who.id, new_id())
    # Projected, still starting: the index's row counts.
    await project_everything(index)
    with pytest.raises(TooManyWaiting):
        await limited.admit(who.id, new_id())

    await promises.finish(first, PipelineState.SUCCEEDED)
    await project_everything(index)
    await limited.admit(who.id, new_id())


async def test_an_id_that_holds_a_pipeline_is_told_taken_and_counted_for_nothing(
    database: ResonateDatabase, promises: PipelinePromises
) -> None:
    limited, who = admission(database, starts_per_minute=1, waiting=0), principal()
    taken = new_id()
    assert await limited.admit(who.id, taken) is True
    await promises.start(who, pipeline_id=taken)

    # The minute's one start is used: a new id is refused, the taken one is not even counted.
    assert await limited.admit(who.id, taken) is False
    with pytest.raises(StartRateLimited):
        await limited.admit(who.id, new_id())
    # Someone else's pipeline under an id: taken for this principal too (the create then says 409).
    assert await limited.admit(principal().id, taken) is False
