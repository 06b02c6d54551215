"""Pause points for fault tests: where a test can kill -9 a service, reliably.

A crash between two effects is what durable execution must survive, and a
test can only show it if the process is reliably *between* them when it dies.
With ``WORKER_TEST_HOOKS=1`` (tests only; refused outside development) the
worker's and the notifier's ops servers gain:

- ``PUT /test-hooks/{point}`` with ``{"pipelines": [...]}``: arm ``point`` for
  those pipelines. A pipeline that reaches an armed point stops there for
  good, inside the step, holding its lease, exactly as a process frozen at
  that line would.
- ``GET /test-hooks``: which pipelines are stopped at which point, so the test
  kills the container only once all of them are there.
- ``GET /test-hooks/heap``: the memory blocks the process's live objects hold,
  after a full garbage collection (the benchmark's figure 9: what a waiting
  pipeline leaves in the worker).

A point named ``fail_...`` raises :class:`InjectedFault` for the armed
pipelines instead of stopping them: an unexpected error at that line, which
the service must turn into an outcome rather than a pipeline stuck forever.

Arming lives in this process's memory. The process that replaces a killed one
starts unarmed and runs through every point, which is the recovery under test.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections import defaultdict

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)

#: The worker's points: just before ``run_now``; after ``run_now`` answered,
#: before the trigger step's result is recorded; after ``repair_run`` answered,
#: before the repair step's result is recorded; after the email was sent,
#: before the workflow records its outcome.
WORKER_POINTS = ("before_run_now", "after_run_now", "after_repair_run", "after_email")
#: The notifier's points: the mail server accepted the email, and the email
#: step's result is not recorded yet; composing the email is about to fail.
NOTIFIER_POINTS = ("after_smtp", "fail_composing")
#: Points that raise rather than stop.
FAULT_PREFIX = "fail_"


class InjectedFault(RuntimeError):
    """The unexpected error a fault test asked for at a ``fail_...`` point."""


class TestHooks:
    def __init__(self, enabled: bool, points: tuple[str, ...] = ()) -> None:
        self.enabled = enabled
        self.points = points
        self._armed: dict[str, set[str]] = defaultdict(set)
        self._stopped: dict[str, set[str]] = defaultdict(set)

    def arm(self, point: str, pipelines: list[str]) -> None:
        self._armed[point].update(pipelines)

    async def checkpoint(self, point: str, pipeline_id: str) -> None:
        """Return at once, unless ``point`` is armed for ``pipeline_id``: then never, or raise for a fault point."""
        if not self.enabled or pipeline_id not in self._armed[point]:
            return
        self._stopped[point].add(pipeline_id)
        if point.startswith(FAULT_PREFIX):
            logger.warning("test hook: fault injected at %s", point, extra={"fields": {"pipeline_id": pipeline_id}})
            raise InjectedFault(f"test hook {point} failed on purpose")
        logger.warning("test hook: pipeline stopped at %s", point, extra={"fields": {"pipeline_id": pipeline_id}})
        await asyncio.Event().wait()

    def routes(self) -> list[Route]:
        if not self.enabled:
            return []

        async def arm(request: Request) -> JSONResponse:
            point = request.path_params["point"]
            if point not in self.points:
                return JSONResponse(
                    {"code": "unknown_point", "message": f"no hook {point!r}; points are {', '.join(self.points)}"},
                    status_code=404,
                )
            try:
                body = await request.json()
                pipelines = [str(p) for p in body["pipelines"]]
            except (ValueError, KeyError, TypeError):
                return JSONResponse(
                    {"code": "invalid_request", "message": 'body must be {"pipelines": ["<pipeline id>", ...]}'},
                    status_code=422,
                )
            self.arm(point, pipelines)
            return JSONResponse({"point": point, "armed": sorted(self._armed[point])})

        async def state(_: Request) -> JSONResponse:
            return JSONResponse({point: sorted(self._stopped[point]) for point in self.points})

        async def heap(_: Request) -> JSONResponse:
            # Resident memory keeps what the allocator took for work already done, and
            # garbage in reference cycles waits for the collector: after a full collection,
            # the blocks still allocated are what the process's live objects hold.
            gc.collect()
            return JSONResponse({"allocated_blocks": sys.getallocatedblocks()})

        return [
            Route("/test-hooks/heap", heap, methods=["GET"]),
            Route("/test-hooks/{point}", arm, methods=["PUT"]),
            Route("/test-hooks", state),
        ]
