"""Dispatching a registered function to another group by creating its promise.

``Resonate.rpc`` does this too, but it also subscribes the calling process to
the result, and it cannot defer the dispatch. The gateway (starting a
pipeline) and the watchdog (scheduling its next check) need neither the
subscription nor, respectively, an immediate dispatch, so they create the
invocation's promise directly, with the tags the SDK itself would write: the
lineage tags (``origin``, ``branch``, ``parent``), ``scope``, the
``target`` address the server delivers the task to, and optionally
``resonate:delay``, the protocol's way to hold the first dispatch until a
given time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from resonate.connections.sse import resolve_target
from resonate.promises import Promises
from resonate.types import PromiseRecord, TaskData, Value

from . import names, tracing
from .models import PipelineSpec
from .promise_tree import CREATED_BY_TAG, OWNER_TAG

#: The version a function is dispatched at unless told otherwise.
FUNCTION_VERSION = 1


async def dispatch(
    promises: Promises,
    promise_id: str,
    function: str,
    argument: Any,
    *,
    group: str,
    origin: str,
    timeout_at: int,
    not_before: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
    version: int = FUNCTION_VERSION,
) -> PromiseRecord:
    """Create the invocation ``function(argument)`` on ``group``, idempotently by id.

    ``origin`` is the lineage the id belongs to: the id itself for a root,
    else a prefix of it. Creating an id that exists returns the stored record
    unchanged, so ``extra_tags`` that only this call sends (a nonce) tell
    whether this call created the promise.
    """
    tags = {
        "resonate:origin": origin,
        "resonate:branch": promise_id,
        "resonate:parent": origin,
        "resonate:scope": "global",
        "resonate:target": resolve_target(group),
    }
    if not_before is not None:
        tags["resonate:delay"] = str(not_before)
    tags |= extra_tags or {}
    return await promises.create(
        promise_id,
        timeout_at=timeout_at,
        param=Value(data=TaskData(func=function, args=(argument,), kwargs={}, version=version)),
        tags=tags,
    )


async def create_pipeline_root(
    promises: Promises,
    spec: PipelineSpec,
    *,
    finish_grace_seconds: int,
    created_by: str,
    owner: str,
    version: int = names.RUN_PIPELINE_VERSION,
    extra_tags: Mapping[str, str] | None = None,
) -> PromiseRecord:
    """Create pipeline ``spec.id``'s root as every start makes it, idempotently by id; its record.

    ``run_pipeline(spec)`` at ``version`` on the worker's group, its own
    origin, lasting its wait and ``finish_grace_seconds`` more; tagged with
    ``owner`` and ``created_by`` (a value only this call sends, so the record
    tells whether this call made it). The gateway's starts, a schedule's
    firings and the benchmark all make a root here.
    """
    return await dispatch(
        promises,
        spec.id,
        names.RUN_PIPELINE,
        spec.model_dump(mode="json"),
        group=names.WORKER_GROUP,
        origin=spec.id,
        timeout_at=int(time.time() * 1000) + 1000 * (spec.timeout_seconds + finish_grace_seconds),
        extra_tags={CREATED_BY_TAG: created_by, OWNER_TAG: owner, **_trace_tag(), **(extra_tags or {})},
        version=version,
    )


def _trace_tag() -> dict[str, str]:
    traceparent = tracing.current_traceparent()
    return {tracing.TRACEPARENT_TAG: traceparent} if traceparent else {}
