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

from collections.abc import Mapping
from typing import Any

from resonate.connections.sse import resolve_target
from resonate.promises import Promises
from resonate.types import PromiseRecord, TaskData, Value

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
