"""The state witness: an ASGI wrapper that fails a refused or read-only request that changed a promise.

It snapshots the promises of Resonate's in-process server before and after
every request (after the real, in-process workflow has gone quiet), so a
test that sends a request the gateway refuses also checks that the refusal
left Resonate's durable state exactly as it was.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from resonate.connections.local import LocalConnection, ServerState

from pipeline_api.settings import GatewaySettings
from tests.support.gateway_app import AUTHENTICATED, SETTINGS, Gateway, in_process_app
from tests.support.pipeline_harness import Harness

#: The workflow is "quiet" once promises and task states stayed the same this many polls in a row.
QUIET_POLLS = 3
#: Between two polls; the in-process workflow takes well under a millisecond per step.
QUIET_POLL_SECONDS = 0.002
#: A workflow busier than this after a request is itself a failure worth seeing.
QUIET_TIMEOUT_SECONDS = 5.0


Snapshot = dict[str, bytes]


class SideEffectOfRejectedRequest(AssertionError):
    """A request that was refused (4xx) or only read (GET) changed a promise."""


@dataclass
class Observation:
    """One request as the witness saw it."""

    method: str
    path: str
    before: Snapshot
    status: int | None = None
    after: Snapshot | None = None
    #: Another request ran at the same time, so a change may be the other's.
    overlapped: bool = False
    #: A promise deadline or a delayed dispatch fell due meanwhile, so the
    #: Resonate server may have changed state on its own.
    clock_moved: bool = False
    body: bytearray = field(default_factory=bytearray)

    @property
    def conclusive(self) -> bool:
        return not self.overlapped and not self.clock_moved

    def changes(self) -> list[str]:
        """Each promise that appeared, vanished or changed: its state and value before and after."""
        assert self.after is not None
        return [
            f"{promise_id}: {_describe(self.before.get(promise_id))} -> {_describe(self.after.get(promise_id))}"
            for promise_id in sorted(self.before.keys() | self.after.keys())
            if self.before.get(promise_id) != self.after.get(promise_id)
        ]


def _describe(record: bytes | None) -> str:
    """A promise record as a person reads it: state, and the value it holds (base64 JSON on the wire)."""
    if record is None:
        return "(absent)"
    decoded = json.loads(record)
    value = (decoded.get("value") or {}).get("data")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = base64.b64decode(value, validate=True).decode()
    return f"{decoded['state']} {value!s:.200}" if value is not None else decoded["state"]


def server_of(harness: Harness) -> ServerState:
    # The SDK exposes the in-process server only as the client's network; the
    # harness builds it with local_resonate, so this is always a LocalConnection.
    network = harness.resonate._network
    assert isinstance(network, LocalConnection), f"the harness no longer runs in process: {network!r}"
    return network.state


def _due(record: dict[str, Any], now: int) -> bool:
    """Whether the server may act on this pending promise by itself at ``now``."""
    delay = record["tags"].get("resonate:delay")
    return record["timeoutAt"] <= now or (delay is not None and int(delay) <= now)


class StateWitness:
    """ASGI wrapper recording Resonate's promises around every HTTP request.

    Before a request it waits until the in-process workflows are quiet, so
    that what changes during the request is the request's doing. A refused
    (4xx) request or a read (GET) that changed a promise fails at once, inside
    the request, with the changes listed; the test sees the error where it
    made the request.
    """

    def __init__(self, app: FastAPI, server: ServerState) -> None:
        self.app = app
        self.server = server
        self.observations: list[Observation] = []
        #: Requests between their first and their last snapshot.
        self._active: list[Observation] = []

    def snapshot(self) -> Snapshot:
        # Encoded, so that later changes to a live record cannot leak into an old snapshot.
        return {pid: json.dumps(p.to_record(), sort_keys=True).encode() for pid, p in self.server.promises.items()}

    def _activity(self) -> tuple[Snapshot, dict[str, str]]:
        return self.snapshot(), {tid: task.state for tid, task in self.server.tasks.items()}

    def _working(self, task_id: str, state: str) -> bool:
        """Whether a task is running, or about to: acquired, or pending and not held back by a delay."""
        if state == "acquired":
            return True
        if state != "pending":
            return False
        promise = self.server.promises.get(task_id)
        delay = promise.tags.get("resonate:delay") if promise is not None else None
        return delay is None or int(delay) <= int(time.time() * 1000)

    async def quiet(self) -> Snapshot:
        deadline = time.monotonic() + QUIET_TIMEOUT_SECONDS
        previous, unchanged = self._activity(), 0
        while unchanged < QUIET_POLLS:
            await asyncio.sleep(QUIET_POLL_SECONDS)
            current = self._activity()
            busy = any(self._working(task_id, state) for task_id, state in current[1].items())
            unchanged = unchanged + 1 if current == previous and not busy else 0
            previous = current
            if time.monotonic() > deadline:
                raise AssertionError(f"the in-process workflows were still busy after {QUIET_TIMEOUT_SECONDS} s")
        return previous[0]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observation = Observation(scope["method"], scope["path"], await self.quiet())
        if self._active:
            for overlapping in (*self._active, observation):
                overlapping.overlapped = True
        self._active.append(observation)
        self.observations.append(observation)

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                observation.status = message["status"]
            elif message["type"] == "http.response.body":
                observation.body.extend(message.get("body", b""))
            await send(message)

        try:
            try:
                await self.app(scope, receive, watch)
            except Exception:
                if observation.status is None:
                    raise
                # The app failed after answering (FastAPI answers 500, then
                # re-raises). A server logs that and carries on; so does the
                # witness, so that tests see the 500 as a response.
            observation.after = await self.quiet()
        finally:
            self._active.remove(observation)
        now = int(time.time() * 1000)
        observation.clock_moved = any(
            _due(record, now) for record in map(json.loads, observation.before.values()) if record["state"] == "pending"
        )
        refused = observation.status is not None and 400 <= observation.status < 500
        if (refused or observation.method == "GET") and observation.conclusive and observation.changes():
            raise SideEffectOfRejectedRequest(
                f"{observation.method} {observation.path} answered {observation.status} "
                f"{bytes(observation.body)[:300]!r} but changed promises:\n  " + "\n  ".join(observation.changes())
            )

    @property
    def last(self) -> Observation:
        return self.observations[-1]


def witnessed_gateway(settings: GatewaySettings = SETTINGS) -> tuple[Harness, StateWitness]:
    """A gateway (not yet started) on a fresh in-process pipeline, behind a witness."""
    harness = Harness(autostart=False)
    app = in_process_app(settings, harness)
    return harness, StateWitness(app, server_of(harness))


class WitnessedGateway(Gateway):
    def __init__(self, client: httpx.AsyncClient, harness: Harness, witness: StateWitness) -> None:
        super().__init__(client, harness)
        self.witness = witness

    async def waiting(self, **body: Any) -> str:
        pipeline_id = (await self.start(**body)).json()["id"]
        await self.wait_for_state(pipeline_id, "waiting")
        return pipeline_id

    async def state(self, pipeline_id: str) -> str:
        return (await self.client.get(f"/pipelines/{pipeline_id}")).json()["state"]

    async def finished(self, pipeline_id: str) -> dict[str, Any]:
        return await self.wait_for_state(pipeline_id, "succeeded", "failed", "cancelled", "timed_out")

    def notifications(self, pipeline_id: str) -> list[Any]:
        return [n for n in self.harness.notifications if n.pipeline_id == pipeline_id]


@contextlib.asynccontextmanager
async def serve_witnessed(
    settings: GatewaySettings = SETTINGS, headers: dict[str, str] = AUTHENTICATED
) -> AsyncIterator[WitnessedGateway]:
    """A started gateway behind a witness, and a client sending ``headers`` with every request."""
    harness, witness = witnessed_gateway(settings)
    transport = httpx.ASGITransport(app=witness)
    async with (
        witness.app.router.lifespan_context(witness.app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers) as client,
    ):
        yield WitnessedGateway(client, harness, witness)
