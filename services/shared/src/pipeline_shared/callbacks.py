"""Settling a pipeline's callback promise: first settlement wins.

The gateway (notebook callbacks, user cancels) and the worker (watchdog,
refused triggers) settle the same promise. The Resonate server keeps the first
settlement and answers later attempts with the stored record; this module
turns that record back into a :class:`Settlement` so every caller can tell
whether its own attempt won, repeated, or lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from resonate.promises import Promises
from resonate.types import PromiseRecord, Value

from . import promise_tree
from .models import Settlement


@dataclass(frozen=True)
class SettleResult:
    """What the promise holds after an attempt to settle it."""

    #: The stored settlement; None when the promise ended otherwise (timed out,
    #: or rejected by something outside this system).
    stored: Settlement | None
    #: The promise's state: ``resolved``, ``rejected_timedout``, ...
    state: str

    def accepted(self, attempt: Settlement) -> bool:
        """Whether ``attempt`` is now the outcome, or agrees with the one stored."""
        return self.stored is not None and self.stored.agrees_with(attempt.status, attempt.result)


def stored_settlement(record: PromiseRecord) -> SettleResult:
    """Read a (decoded) callback promise record."""
    if record.state == "resolved" and isinstance(record.value.data, dict):
        return SettleResult(Settlement.model_validate(record.value.data), record.state)
    return SettleResult(None, record.state)


async def create_callback_promise(promises: Promises, pipeline_id: str, timeout_at: int) -> PromiseRecord:
    """Create a pipeline's callback promise exactly as its workflow does.

    The workflow's ``ctx.promise()`` creates it with these tags; whoever
    creates it first (a cancel arriving before any worker picked the pipeline
    up) makes the workflow find it, already settled, instead of a new one.
    """
    promise_id = promise_tree.callback_promise_id(pipeline_id)
    return await promises.create(
        promise_id,
        timeout_at=timeout_at,
        param=Value(),
        tags={
            "resonate:scope": "global",
            "resonate:branch": promise_id,
            "resonate:parent": pipeline_id,
            "resonate:origin": pipeline_id,
            promise_tree.EXTERNAL_TAG: "true",
        },
    )


async def settle_callback(promises: Promises, promise_id: str, settlement: Settlement) -> SettleResult:
    """Resolve the callback promise with ``settlement`` unless already settled.

    Raises the SDK's ``ServerError`` (code 404) when the promise does not exist.
    """
    record = await promises.resolve(promise_id, Value(data=settlement))
    return stored_settlement(record)
