"""One event of a pipeline's timeline, and the order events of the same moment come in.

Kept apart from :mod:`.events` (a one-job workflow's promises read into
events) and :mod:`.step_events` (the steps of a pipeline run by its code),
which both make them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from resonate.types import PromiseRecord

#: Where a kind goes among events of the same millisecond: the order they happen in.
KINDS = (
    "started",
    "step_started",
    "gate_opened",
    "run_triggered",
    "trigger_failed",
    "notification_received",
    "databricks_state",
    "callback_received",
    "outcome_read_from_run",
    "cancel_requested",
    "timed_out",
    "awaiting_repair",
    "repair_requested",
    "abandoned",
    "repair_window_expired",
    "repaired",
    "approved",
    "rejected",
    "approval_expired",
    "approval_cancelled",
    "step_ended",
    "email_delivered",
    "email_refused",
    "finished",
)
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Event:
    """One event, keyed by what it is an event of (stable across projections)."""

    key: str
    at_ms: int
    kind: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_ms / 1000, UTC)

    @property
    def order(self) -> tuple[int, int]:
        return self.at_ms, _RANK[self.kind]


# ── reading promises ─────────────────────────────────────────────────────────


def settled_at(promise: PromiseRecord) -> int:
    return promise.settled_at or promise.created_at


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
