"""Deadlines keyed by id, ordered by time: the timeout index of the stand-in.

The SDK's reference model keeps promise and task timeouts in plain lists, so
arming, disarming and sweeping each scan every pending timeout. With the
10,000 suspended workflows the product's benchmark holds, that turns every
request and every tick into a walk over 10,000 entries. This index keeps the
same contract -- at most one deadline per id, re-arming replaces it -- in a
binary heap with lazy deletion, so arming is O(log n), disarming O(1) and a
sweep touches only what has come due.

It owns ordering only. What a deadline *means* (settle a promise, release a
lease, resend an execute message) stays with
:class:`resonate_dev.model.StandInState`.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

#: Rebuild the heap once stale entries (disarmed or re-armed ids) outnumber the
#: live ones by this factor, so a long run of re-arms -- a heartbeat every few
#: seconds per task -- cannot grow the heap without bound.
COMPACTION_FACTOR = 2

#: Below this many heap entries compaction is not worth its own cost.
COMPACTION_FLOOR = 1024


@dataclass(frozen=True, slots=True)
class Deadline:
    """One armed deadline: when it falls due and what kind of timeout it is."""

    at: int
    kind: int
    seq: int


class DeadlineQueue:
    """At most one deadline per id, popped in time order once due."""

    def __init__(self) -> None:
        self._armed: dict[str, Deadline] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._armed)

    def __contains__(self, id: str) -> bool:
        return id in self._armed

    def get(self, id: str) -> Deadline | None:
        return self._armed.get(id)

    def arm(self, id: str, at: int, kind: int = 0) -> None:
        """Set ``id``'s deadline to ``at``, replacing any deadline it had."""
        seq = next(self._seq)
        self._armed[id] = Deadline(at=at, kind=kind, seq=seq)
        heapq.heappush(self._heap, (at, seq, id))
        self._maybe_compact()

    def disarm(self, id: str) -> None:
        """Forget ``id``'s deadline; its heap entry is dropped when reached."""
        self._armed.pop(id, None)

    def pop_due(self, now: int) -> list[tuple[str, Deadline]]:
        """Remove and return every deadline at or before ``now``, earliest first."""
        due: list[tuple[str, Deadline]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, id = heapq.heappop(heap)
            current = self._armed.get(id)
            if current is not None and current.seq == seq:
                del self._armed[id]
                due.append((id, current))
        return due

    def next_due(self) -> int | None:
        """The earliest live deadline, or None when nothing is armed."""
        heap = self._heap
        while heap:
            at, seq, id = heap[0]
            current = self._armed.get(id)
            if current is not None and current.seq == seq:
                return at
            heapq.heappop(heap)
        return None

    def items(self) -> list[tuple[str, Deadline]]:
        return list(self._armed.items())

    def _maybe_compact(self) -> None:
        size = len(self._heap)
        if size > COMPACTION_FLOOR and size > COMPACTION_FACTOR * (len(self._armed) + 1):
            self._heap = [(d.at, d.seq, id) for id, d in self._armed.items()]
            heapq.heapify(self._heap)
