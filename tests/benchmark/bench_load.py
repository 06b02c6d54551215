"""The load generator: open-loop pacing, closed-loop pools, saturation runs, and the statistics over them.

Open loop (:func:`paced`) is how users and notebooks arrive: request ``i`` is
due at ``start + i / rate`` whether or not earlier ones have been answered, so
a slow server faces a growing backlog instead of a politely waiting client,
and latency is counted from when a request was due, not from when the client
got round to sending it (no coordinated omission).

Closed loop (:func:`pool`, and :mod:`.bench_wire` for throughput) is for
setting up state quickly and for throughput: a fixed number of requests in
flight, each sending the next as soon as its answer comes.

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Outcome[T]:
    """One request: which item, when it was due and sent (epoch s), how long it took, what it answered."""

    item: T
    due: float
    sent: float
    seconds: float
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def latency_from_due(self) -> float:
        return self.sent - self.due + self.seconds


async def _attempt[T](item: T, action: Callable[[T], Awaitable[int]], due: float) -> Outcome[T]:
    sent = time.time()
    started = time.perf_counter()
    try:
        status = await action(item)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Outcome(item, due, sent, time.perf_counter() - started, None, f"{type(exc).__name__}: {exc}")
    return Outcome(item, due, sent, time.perf_counter() - started, status)


async def paced[T](items: Sequence[T], rate: float, action: Callable[[T], Awaitable[int]]) -> list[Outcome[T]]:
    """Send ``items`` open-loop at ``rate`` per second; returns every outcome, in item order."""
    loop = asyncio.get_running_loop()
    start_wall, start_loop = time.time() + 0.05, loop.time() + 0.05
    tasks: list[asyncio.Task[Outcome[T]]] = []
    for index, item in enumerate(items):
        offset = index / rate
        delay = start_loop + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_attempt(item, action, start_wall + offset)))
    return list(await asyncio.gather(*tasks))


async def pool[T](items: Iterable[T], concurrency: int, action: Callable[[T], Awaitable[int]]) -> list[Outcome[T]]:
    """Send ``items`` closed-loop with ``concurrency`` in flight; returns every outcome."""
    queue = list(items)
    queue.reverse()
    results: list[Outcome[T]] = []

    async def worker() -> None:
        while queue:
            item = queue.pop()
            results.append(await _attempt(item, action, time.time()))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


@dataclass
class Saturation:
    """A closed-loop run against one endpoint for a fixed time."""

    seconds: float
    completed: int
    failed: int
    latencies: list[float] = field(repr=False)
    statuses: dict[int, int]

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds


# -- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/mean/max in milliseconds, and the count."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "mean_ms": statistics.fmean(seconds) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Median and range of one figure over repeated runs (n is small, so min-max rather than a deviation)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "runs": list(values)}
    return {"median": statistics.median(present), "min": min(present), "max": max(present), "runs": list(values)}
