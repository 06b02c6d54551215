"""A pipeline's promises written into a real Resonate server, as the gateway and the worker write them.

The start is written as the gateway wrote it before pipelines were code (the
root promise of a one-job workflow, dispatched to the worker with its owner
and nonce tags), a tree the index must go on reading; what follows is
written as the worker's steps leave it: the trigger step resolved with the
run it started, the root resolved with the workflow's outcome. No worker
runs: a test decides which state each pipeline reaches, and the index must
read that back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from resonate.promises import Promises
from resonate.types import Value

from pipeline_api.auth.principals import Principal, Scope
from pipeline_api.index.queries import PipelineIndex
from pipeline_api.settings import GatewaySettings
from pipeline_shared import names, promise_tree
from pipeline_shared.invocations import dispatch
from pipeline_shared.models import DatabricksRun, PipelineOutcome, PipelineSpec, PipelineState, TriggerOutcome
from pipeline_shared.promise_tree import CREATED_BY_TAG, OWNER_TAG

#: A child promise's deadline: far enough that no test sees one time out.
CHILD_TIMEOUT_MS = 3_600_000
#: More than the millisecond a promise's creation time is counted in.
CREATION_TICK_SECONDS = 0.002


def principal(*scopes: Scope, name: str | None = None) -> Principal:
    """A key principal of its own (a unique name unless given), holding ``scopes`` (default: start and read)."""
    return Principal(
        kind="key",
        name=name or f"index-test-{uuid.uuid4().hex[:10]}",
        scopes=frozenset(scopes or {Scope.START, Scope.READ}),
    )


class PipelinePromises:
    """Writes pipelines' promises through ``promises`` (a Resonate client on the server under test)."""

    def __init__(self, promises: Promises, settings: GatewaySettings) -> None:
        self._promises = promises
        self._settings = settings

    async def start(self, by: Principal, *, job: str = "csv-statistics", pipeline_id: str | None = None) -> str:
        """Start a one-job pipeline of ``job`` as ``by``, as the gateway started one before pipelines were code.

        Its spec has no version and its root invokes ``run_pipeline`` at version 1, with the tags the
        gateway writes (owner, nonce): the tree the trigger step and the outcome below complete.
        """
        pipeline_id = pipeline_id or f"idx-{uuid.uuid4().hex[:16]}"
        catalogued = self._settings.catalogue.job(job)
        spec = PipelineSpec(
            id=pipeline_id,
            email="index@example.com",
            parameters={},
            timeout_seconds=catalogued.default_timeout_seconds,
            job=job,
        )
        await dispatch(
            self._promises,
            pipeline_id,
            names.RUN_PIPELINE,
            spec.model_dump(mode="json"),
            group=names.WORKER_GROUP,
            origin=pipeline_id,
            timeout_at=_now_ms() + 1000 * spec.timeout_seconds,
            extra_tags={CREATED_BY_TAG: uuid.uuid4().hex, OWNER_TAG: by.id},
            version=names.RUN_PIPELINE_ONE_JOB_VERSION,
        )
        # Lists order by creation time (in ms), then id: the next start is created in a later millisecond,
        # so that pipelines a test starts one after the other list in that order.
        await asyncio.sleep(CREATION_TICK_SECONDS)
        return pipeline_id

    async def trigger(self, pipeline_id: str, run_id: int) -> DatabricksRun:
        """The trigger step done: Databricks run ``run_id`` started, as the worker records it."""
        run = DatabricksRun(run_id=run_id, run_page_url=f"https://databricks.test/#job/7/run/{run_id}", job_id=7)
        step = promise_tree.trigger_step_id(pipeline_id)
        await self._promises.create(
            step,
            timeout_at=_now_ms() + CHILD_TIMEOUT_MS,
            param=Value(data={"pipeline_id": pipeline_id}),
            tags={"resonate:origin": pipeline_id, "resonate:parent": pipeline_id, "resonate:branch": step},
        )
        outcome = TriggerOutcome(run=run, started_at=_now_ms())
        await self._promises.resolve(step, Value(data=outcome.model_dump(mode="json")))
        return run

    async def finish(self, pipeline_id: str, state: PipelineState, **outcome: Any) -> None:
        """The workflow returned: its root resolved with the outcome of ``state``."""
        value = PipelineOutcome(state=state, **outcome).model_dump(mode="json")
        await self._promises.resolve(pipeline_id, Value(data=value))

    async def resolve_root_with(self, pipeline_id: str, value: Any) -> None:
        """The root resolved with ``value`` whatever it is: a record the gateway's reading cannot make sense of."""
        await self._promises.resolve(pipeline_id, Value(data=value))


def _now_ms() -> int:
    return int(time.time() * 1000)


async def project_everything(index: PipelineIndex) -> int:
    """Run the projector's batches until one finds nothing it can project; the notes handled in all."""
    handled = 0
    while projected := await index.project_pending():
        handled += projected
    return handled
