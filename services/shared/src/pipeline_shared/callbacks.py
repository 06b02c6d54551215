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
        return self.stored is not None and self.stored.agrees_with(attempt)


def stored_settlement(record: PromiseRecord) -> SettleResult:
    """Read a (decoded) callback promise record."""
    if record.state == "resolved" and isinstance(record.value.data, dict):
        return SettleResult(Settlement.model_validate(record.value.data), record.state)
    return SettleResult(None, record.state)


async def settle_callback(promises: Promises, promise_id: str, settlement: Settlement) -> SettleResult:
    """Resolve the callback promise with ``settlement`` unless already settled.

    Raises the SDK's ``ServerError`` (code 404) when the promise does not exist.
    """
    record = await promises.resolve(promise_id, Value(data=settlement))
    return stored_settlement(record)
