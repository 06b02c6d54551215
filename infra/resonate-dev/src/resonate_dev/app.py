"""The HTTP face of the stand-in: the real server's routes over one in-memory state.

Routes, as resonatehq/resonate serves them on one port:

- ``POST /`` -- a request envelope in, a response envelope out, with the
  HTTP status equal to ``head.status`` (300 for a redirecting suspend, 404,
  409, 422 ...), as the server's ``into_response`` does;
- ``GET /poll/{group}/{pid}`` -- Server-Sent Events, one ``data:`` frame per
  ``execute`` / ``unblock`` message routed to this process;
- ``GET /health`` and ``GET /ready`` -- 200 with an empty body;
- the pre-protocol REST paths (``/promises``, ``/tasks``, ``/schedules``) --
  410 Gone, so an outdated SDK fails loudly.

Everything runs on one asyncio loop and every state transition is a plain
synchronous call, so requests and ticks never interleave inside one: the
model needs no lock. Messages a transition produced are routed before its
response is sent, as the server delivers after its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from resonate_dev import wire
from resonate_dev.auth import Authenticator
from resonate_dev.delivery import PollConnection, PollRegistry
from resonate_dev.model import StandInState
from resonate_dev.settings import Settings

logger = logging.getLogger(__name__)

_LEGACY_MESSAGE = "This endpoint is no longer supported. Please update to the latest SDK."


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class WireLog:
    """Every response envelope and SSE message sent, one JSON document a line.

    A tap for checking what the stand-in put on the wire against a client's
    own validators; off unless ``RESONATE_DEV__WIRE_LOG`` names a file.
    """

    sink: IO[bytes]

    def response(self, body: bytes) -> None:
        self.sink.write(b'{"type":"response","body":' + body + b"}\n")
        self.sink.flush()

    def message(self, body: bytes) -> None:
        self.sink.write(b'{"type":"message","body":' + body + b"}\n")
        self.sink.flush()


@dataclass
class StandIn:
    """The state, the open streams, and the clock that drives both."""

    settings: Settings
    state: StandInState = field(init=False)
    registry: PollRegistry = field(init=False)
    auth: Authenticator | None = field(init=False)
    wire_log: WireLog | None = None
    #: Per-tick cost, for the performance figures: (count, total ns, max ns).
    tick_stats: list[int] = field(default_factory=lambda: [0, 0, 0])

    def __post_init__(self) -> None:
        s = self.settings
        self.state = StandInState(
            server_url=s.server_url,
            retry_timeout_ms=s.tasks.retry_timeout,
        )
        self.registry = PollRegistry(
            max_connections=s.transports.http_poll.max_connections,
            buffer_size=s.transports.http_poll.buffer_size,
        )
        self.auth = (
            Authenticator(s.auth.publickey, iss=s.auth.iss, aud=s.auth.aud)
            if s.auth is not None
            else None
        )

    def handle(self, body: bytes) -> tuple[int, bytes]:
        """Answer one ``POST /`` body: (HTTP status, response body)."""
        parsed = wire.parse_request(body)
        if isinstance(parsed, wire.Rejected):
            return self._respond(parsed.response)
        if self.auth is not None:
            denied = self.auth.check_request(parsed.kind, parsed.data, parsed.auth)
            if denied is not None:
                return self._respond(
                    wire.error_response(parsed.kind, parsed.corr_id, denied.status, denied.message)
                )
        try:
            flat = self.state.apply(now_ms(), parsed.flat())
        except Exception as exc:
            # A bug in a transition answers 500 like the server's internal
            # errors, instead of tearing down the connection.
            logger.exception("%s %s failed", parsed.kind, parsed.corr_id)
            self.state.outgoing = []
            return self._respond(
                wire.error_response(parsed.kind, parsed.corr_id, 500, f"Internal error: {exc}")
            )
        self._deliver()
        return self._respond(wire.response_envelope(flat))

    def tick(self) -> None:
        started = time.perf_counter_ns()
        self.state.tick(now_ms())
        self._deliver()
        spent = time.perf_counter_ns() - started
        stats = self.tick_stats
        stats[0] += 1
        stats[1] += spent
        stats[2] = max(stats[2], spent)

    def _respond(self, envelope: dict[str, Any]) -> tuple[int, bytes]:
        body = wire.encode(envelope)
        if self.wire_log is not None:
            self.wire_log.response(body)
        return envelope["head"]["status"], body

    def _deliver(self) -> None:
        outgoing, self.state.outgoing = self.state.outgoing, []
        for message in outgoing:
            payload = wire.encode(message.message)
            if self.registry.route(message.address, payload) and self.wire_log is not None:
                self.wire_log.message(payload)


class PollStream:
    """``GET /poll/{group}/{pid}``: this process's messages as Server-Sent Events.

    A raw ASGI endpoint rather than a ``StreamingResponse`` so that a closed
    client connection is noticed at once (by waiting on ``http.disconnect``)
    instead of at the next write: a worker killed with SIGKILL must stop
    receiving anycast messages before its lease expires and the task is sent
    to another member.
    """

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        group = request.path_params["group"]
        pid = request.path_params["pid"]
        auth = self.standin.auth
        if auth is not None:
            denied = auth.check_stream(request.headers.get("authorization"))
            if denied is not None:
                await PlainTextResponse(denied.message, status_code=denied.status)(
                    scope, receive, send
                )
                return
        registry = self.standin.registry
        conn = registry.register(group, pid)
        if conn is None:
            response = PlainTextResponse("Poll registration at capacity", status_code=503)
            await response(scope, receive, send)
            return
        watcher = asyncio.create_task(self._close_on_disconnect(receive, conn))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            # Flush the headers now: a client treats the stream as open on them.
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            async for payload in self._messages(conn):
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + payload + b"\n\n",
                        "more_body": True,
                    }
                )
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            logger.info("poll connection %s: client went away mid-write", conn.conn_id)
        finally:
            registry.deregister(conn)
            watcher.cancel()

    @staticmethod
    async def _messages(conn: PollConnection) -> AsyncIterator[bytes]:
        while conn.open:
            payload = await conn.queue.get()
            if payload is None or not conn.open:
                return
            yield payload

    async def _close_on_disconnect(self, receive: Receive, conn: PollConnection) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.standin.registry.deregister(conn)
                return


def build_app(standin: StandIn) -> Starlette:
    async def api(request: Request) -> Response:
        status, body = standin.handle(await request.body())
        return Response(body, status_code=status, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def legacy(request: Request) -> Response:
        return JSONResponse({"error": _LEGACY_MESSAGE}, status_code=410)

    legacy_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/", api, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", health, methods=["GET"]),
        Route("/poll/{group}/{pid}", PollStream(standin), methods=["GET"]),
    ]
    for resource in ("promises", "schedules", "tasks"):
        routes.append(Route(f"/{resource}", legacy, methods=legacy_methods))
        routes.append(Route(f"/{resource}/{{path:path}}", legacy, methods=legacy_methods))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log_path = standin.settings.dev.wire_log
        sink = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed below
        standin.wire_log = WireLog(sink) if sink is not None else None
        ticker = asyncio.create_task(_tick_forever(standin))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            standin.registry.close_all()
            count, total, worst = standin.tick_stats
            logger.info(
                "stopped after %d ticks (mean %.3f ms, max %.3f ms); "
                "messages delivered %d, dropped %d",
                count,
                total / count / 1e6 if count else 0.0,
                worst / 1e6,
                standin.registry.stats.delivered,
                standin.registry.stats.dropped,
            )
            standin.wire_log = None
            if sink is not None:
                sink.close()

    return Starlette(routes=routes, lifespan=lifespan)


async def _tick_forever(standin: StandIn) -> None:
    interval = standin.settings.timeouts.poll_interval / 1000
    while True:
        await asyncio.sleep(interval)
        try:
            standin.tick()
        except Exception:
            # One bad transition must not stop every later timeout from firing.
            logger.exception("timeout tick failed")
