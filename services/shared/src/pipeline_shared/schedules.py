"""Pipelines that start by themselves: a catalogue schedule kept as a Resonate schedule, and each firing's start.

A catalogue pipeline may declare ``[pipelines.NAME.schedule]`` (a cron in UTC, who is emailed, its
parameters). It becomes the Resonate schedule ``pipeline-schedule.NAME``, which resonate-pg fires by
itself: at each cron time its timer driver (pg_cron) creates the promise
``pipeline-schedule.NAME.<epoch ms>`` (the schedule's id template, the one thing resonate-pg
expands per firing) and a task for it on the worker's group.

That firing is not the pipeline's root but a small function, :data:`~.names.START_SCHEDULED_PIPELINE`,
which creates the root ``NAME-<yyyymmddThhmm>`` exactly as the gateway's start does. resonate-pg
fires a schedule's promise with the schedule's param and tags unchanged, so a root fired directly
could carry neither its own id in its spec nor the ``resonate:origin`` tag every promise of a
pipeline needs (the pipeline index finds a pipeline's promises by that tag, and the gateway and the
worker read the spec's id). Starting the root from the firing keeps one kind of root.

A firing is never doubled: the firing's id derives from its cron time, the root's id from the
same time, and both creates are idempotent by id. A firing retried after a crash finds the root it
made (its ``pipeline:created-by`` tag is the firing's id); one whose id a client took first starts
nothing and says so.

Reconciling (:func:`reconcile`) creates or replaces each declared schedule and deletes those the
catalogue no longer declares. resonate-pg has no schedule search, so which schedules are ours is
kept by a :class:`ScheduleRegistry` (the gateway's is a table of the pipeline index).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from resonate.connections.sse import resolve_target
from resonate.error import ServerError
from resonate.types import TaskData, Value

from . import names, tracing
from .cron import next_firing
from .invocations import create_pipeline_root
from .models import PipelineSpec
from .promise_tree import CREATED_BY_TAG

if TYPE_CHECKING:
    from resonate.context import Context
    from resonate.promises import Promises
    from resonate.resonate import Resonate
    from resonate.schedules import Schedules
    from resonate.types import PromiseRecord, ScheduleRecord

    from .catalogue import Catalogue, PipelineEntry

logger = logging.getLogger("pipeline_shared.schedules")

#: Every schedule of ours is ``pipeline-schedule.<pipeline name>``.
SCHEDULE_ID_PREFIX = "pipeline-schedule."
#: resonate-pg expands ``{{.id}}`` (the schedule's id) and ``{{.timestamp}}`` (the firing's cron
#: time, epoch ms) in a schedule's promise id, and nothing else anywhere.
FIRING_ID_TEMPLATE = "{{.id}}.{{.timestamp}}"
#: On a scheduled pipeline's root (and each firing): the pipeline whose schedule started it.
SCHEDULE_TAG = "pipeline:schedule"
#: On a schedule's firings: what the schedule was declared as, to tell a changed declaration.
DIGEST_TAG = "pipeline:schedule-digest"
#: A scheduled pipeline's owner (``pipeline:owner``): no principal, the schedule.
OWNER_PREFIX = "schedule:"
#: The firing's time in a scheduled pipeline's id: minutes are the cron's precision.
_ID_TIME_FORMAT = "%Y%m%dT%H%M"
#: How late a firing may still start its pipeline. After an outage resonate-pg creates every firing
#: missed meanwhile; those older than this time out instead of starting a burst of stale pipelines.
FIRING_TIMEOUT_MS = 3600 * 1000

# ── ids ─────────────────────────────────────────────────────────────────────────────────────────


def schedule_id(pipeline: str) -> str:
    return SCHEDULE_ID_PREFIX + pipeline


def scheduled_pipeline_id(pipeline: str, fired_at_ms: int) -> str:
    """The id of the pipeline a schedule's firing at ``fired_at_ms`` starts: ``NAME-yyyymmddThhmm`` (UTC)."""
    return f"{pipeline}-{datetime.fromtimestamp(fired_at_ms / 1000, UTC).strftime(_ID_TIME_FORMAT)}"


_SCHEDULED_ID = re.compile(r"(?P<name>.+)-(?P<time>[0-9]{8}T[0-9]{4})")


def scheduled_name(pipeline_id: str, catalogue: Catalogue) -> str | None:
    """The scheduled pipeline whose firings take ids of ``pipeline_id``'s form, or None.

    For the gateway's start: a client that took such an id first would make that firing start
    nothing, so a start may not choose one.
    """
    match = _SCHEDULED_ID.fullmatch(pipeline_id)
    if match is None:
        return None
    entry = catalogue.pipelines.get(match["name"])
    return entry.name if entry is not None and entry.schedule is not None else None


def next_firing_at(entry: PipelineEntry, after_ms: int | None = None) -> datetime | None:
    """When the pipeline's schedule next fires (UTC), or None when it has none: what GET /jobs and the page show.

    Computed from the cron as resonate-pg computes its ``next_run_at`` (tested against it), which
    the SDK's schedule record does not carry; no request to Resonate per listing.
    """
    if entry.schedule is None:
        return None
    at = next_firing(entry.schedule.cron, after_ms)
    return None if at is None else datetime.fromtimestamp(at / 1000, UTC)


def firing_time(firing_id: str) -> int:
    """The cron time (epoch ms) of the firing ``pipeline-schedule.NAME.<ms>``."""
    head, _, stamp = firing_id.rpartition(".")
    if not head.startswith(SCHEDULE_ID_PREFIX) or not stamp.isdigit():
        raise ValueError(f"{firing_id!r} is not a schedule's firing ({SCHEDULE_ID_PREFIX}NAME.<epoch ms>)")
    return int(stamp)


# ── a firing ────────────────────────────────────────────────────────────────────────────────────


class ScheduledStart(BaseModel):
    """A firing's one argument: its pipeline's spec but the id and time, fixed when the schedule was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str
    email: str
    parameters: dict[str, str]
    timeout_seconds: int = Field(ge=1)
    version: int = Field(ge=1)
    #: The gateway's PIPELINE_FINISH_GRACE_SECONDS: the root's deadline is its timeout and this.
    finish_grace_seconds: int = Field(ge=0)

    def spec(self, fired_at_ms: int) -> PipelineSpec:
        return PipelineSpec(
            id=scheduled_pipeline_id(self.pipeline, fired_at_ms),
            email=self.email,
            parameters=self.parameters,
            timeout_seconds=self.timeout_seconds,
            job=self.pipeline,
            version=self.version,
            scheduled_at=fired_at_ms,
        )


async def start_firing(promises: Promises, firing_id: str, start: ScheduledStart) -> PromiseRecord:
    """Create the root of the pipeline the firing ``firing_id`` starts (idempotent); the root's record.

    The root is what the gateway's start makes (``run_pipeline`` at version 3 on the worker's
    group, its own origin), owned by ``schedule:NAME`` and created by the firing, in a
    ``pipeline.start`` span whose context it records: the pipeline's trace (see :mod:`.tracing`).
    """
    fired_at = firing_time(firing_id)
    spec = start.spec(fired_at)
    with tracing.span("pipeline_schedules", "pipeline.start") as span:
        record = await create_pipeline_root(
            promises,
            spec,
            finish_grace_seconds=start.finish_grace_seconds,
            created_by=firing_id,
            owner=OWNER_PREFIX + start.pipeline,
            extra_tags={SCHEDULE_TAG: start.pipeline},
        )
        created = record.tags.get(CREATED_BY_TAG) == firing_id
        tracing.set_attributes(span, {"pipeline.id": spec.id, "pipeline.job": spec.job, "pipeline.created": created})
    if record.tags.get(CREATED_BY_TAG) != firing_id:
        logger.warning(
            "schedule %r: the firing at %s starts nothing: pipeline id %r was already taken",
            start.pipeline,
            datetime.fromtimestamp(fired_at / 1000, UTC).isoformat(),
            spec.id,
        )
    return record


def register_firing_starter(resonate: Resonate) -> None:
    """Register :data:`~.names.START_SCHEDULED_PIPELINE` on the worker's Resonate, whose group the firings target."""
    promises = resonate.promises

    async def start_scheduled_pipeline(ctx: Context, start: dict[str, Any]) -> str:
        # One leaf: a retry (after a crash) repeats an idempotent create.
        record = await start_firing(promises, ctx.info.id, ScheduledStart.model_validate(start))
        return record.id

    resonate.register(start_scheduled_pipeline, name=names.START_SCHEDULED_PIPELINE, version=1)


# ── reconciling ─────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class DeclaredSchedule:
    """One catalogue schedule as the Resonate schedule it becomes."""

    pipeline: str
    cron: str
    start: ScheduledStart

    @property
    def id(self) -> str:
        return schedule_id(self.pipeline)

    @property
    def digest(self) -> str:
        """What the schedule was declared as, short: a changed declaration has another."""
        document = json.dumps({"cron": self.cron, "start": self.start.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(document.encode()).hexdigest()[:32]

    def tags(self) -> dict[str, str]:
        return {
            "resonate:target": resolve_target(names.WORKER_GROUP),
            "resonate:scope": "global",
            SCHEDULE_TAG: self.pipeline,
            DIGEST_TAG: self.digest,
        }


def declared_schedules(catalogue: Catalogue, finish_grace_seconds: int) -> list[DeclaredSchedule]:
    """Every schedule the catalogue declares, its parameters resolved."""
    return [_declared(entry, finish_grace_seconds) for entry in catalogue.pipelines.values() if entry.schedule]


def _declared(entry: PipelineEntry, finish_grace_seconds: int) -> DeclaredSchedule:
    assert entry.schedule is not None
    start = ScheduledStart(
        pipeline=entry.name,
        email=entry.schedule.email,
        parameters=entry.resolve(dict(entry.schedule.parameters)),
        timeout_seconds=entry.default_timeout_seconds,
        version=entry.version,
        finish_grace_seconds=finish_grace_seconds,
    )
    return DeclaredSchedule(entry.name, entry.schedule.cron, start)


class ScheduleRegistry(Protocol):
    """Which pipelines have a schedule of ours in Resonate: resonate-pg cannot list its schedules."""

    async def names(self) -> set[str]: ...
    async def add(self, pipeline: str) -> None: ...
    async def remove(self, pipeline: str) -> None: ...


class LocalScheduleRegistry:
    """A registry in memory: for a gateway with no database (in process), and tests."""

    def __init__(self) -> None:
        self._names: set[str] = set()

    async def names(self) -> set[str]:
        return set(self._names)

    async def add(self, pipeline: str) -> None:
        self._names.add(pipeline)

    async def remove(self, pipeline: str) -> None:
        self._names.discard(pipeline)


@dataclass(frozen=True)
class Reconciled:
    """What one reconciling changed, by pipeline name."""

    created: list[str]
    replaced: list[str]
    deleted: list[str]


async def reconcile(
    schedules: Schedules, declared: Iterable[DeclaredSchedule], registry: ScheduleRegistry
) -> Reconciled:
    """Make Resonate's schedules of ours exactly the declared ones; idempotent, safe to repeat after a crash.

    resonate-pg's ``schedule.create`` hands back an existing schedule unchanged, so a changed
    declaration (told by its digest tag) is deleted and created again; its next firing is then
    computed afresh. A name is registered before its schedule is created and forgotten after its
    schedule is deleted, so a crash in between leaves nothing of ours unknown.
    """
    wanted = {schedule.pipeline: schedule for schedule in declared}
    changed = Reconciled([], [], [])
    for name in sorted(await registry.names() - set(wanted)):
        await _delete(schedules, schedule_id(name))
        await registry.remove(name)
        changed.deleted.append(name)
    for name, schedule in sorted(wanted.items()):
        await registry.add(name)
        found = await _get(schedules, schedule.id)
        if found is not None and found.promise_tags.get(DIGEST_TAG) == schedule.digest:
            continue
        if found is not None:
            await _delete(schedules, schedule.id)
        await _create(schedules, schedule)
        (changed.created if found is None else changed.replaced).append(name)
    return changed


async def _create(schedules: Schedules, schedule: DeclaredSchedule) -> ScheduleRecord:
    return await schedules.create(
        id=schedule.id,
        cron=schedule.cron,
        promise_id=FIRING_ID_TEMPLATE,
        promise_timeout=FIRING_TIMEOUT_MS,
        promise_param=Value(
            data=TaskData(
                func=names.START_SCHEDULED_PIPELINE,
                args=(schedule.start.model_dump(mode="json"),),
                kwargs={},
                version=1,
            )
        ),
        promise_tags=schedule.tags(),
    )


async def _get(schedules: Schedules, id: str) -> ScheduleRecord | None:
    try:
        return await schedules.get(id)
    except ServerError as exc:
        if exc.code != 404:
            raise
    return None


async def _delete(schedules: Schedules, id: str) -> None:
    try:
        await schedules.delete(id)
    except ServerError as exc:
        if exc.code != 404:
            raise
