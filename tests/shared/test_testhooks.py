"""The test hooks' routes: only when enabled, and the heap count the benchmark reads."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from pipeline_shared import testhooks


def client_of(*, enabled: bool) -> httpx.AsyncClient:
    hooks = testhooks.TestHooks(enabled=enabled, points=testhooks.WORKER_POINTS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(Starlette(routes=hooks.routes())), base_url="http://ops")


async def test_the_heap_route_counts_what_live_objects_hold_after_a_collection() -> None:
    async with client_of(enabled=True) as client:

        async def blocks() -> int:
            return (await client.get("/test-hooks/heap")).json()["allocated_blocks"]

        first = await blocks()
        kept = [object() for _ in range(20_000)]
        held = await blocks()
        del kept
        freed = await blocks()
        # Arming a point is still a PUT on its own route.
        armed = (await client.put("/test-hooks/after_email", json={"pipelines": ["p-1"]})).json()

    assert held - first > 19_000
    assert held - freed > 19_000
    assert armed["armed"] == ["p-1"]


async def test_without_hooks_there_is_no_route() -> None:
    async with client_of(enabled=False) as client:
        assert (await client.get("/test-hooks/heap")).status_code == 404
