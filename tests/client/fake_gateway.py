"""A stand-in for the gateway's issue-14 routes, faithful to /work/contract-14.md, for the CLI's tests.

The real routes are being built beside the CLI; until they land, the CLI is
held to the contract through this: the same paths, query parameters, JSON
documents (built with the gateway's own pydantic schemas, so a field the
schemas lack fails here) and real ``text/event-stream`` responses over
loopback, with the bearer key checked. It records what each request asked for
so a test can check what the CLI sent, and it can drop a stream mid-way or
refuse reconnections the way a restarting gateway does.

It is not the index: it filters and pages a list it is given, no more.

Issue 22 adds a pipeline's status document and the decisions on it (approve,
reject, repair and abandon of one step), held to /work/briefs/contract22.md:
the document is a legacy one of the gateway's schema, or one with ``steps``
built from the shared StepSummary (the gateway's schema gains them on its own
branch); each decision is recorded with its body and answered as the
contract says (the document, or 409 ``not_awaiting_approval``,
``gate_ambiguous``, ``step_ambiguous``, or 403).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline_api.schemas import PipelineEvent, PipelinePage, PipelineStatus, PipelineSummary, PipelineTimeline
from pipeline_shared.models import StepSummary

FAKE_KEY = "fake-gateway-key"
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
#: Told to the client with `retry:` so reconnections in tests take milliseconds, not seconds.
RETRY_MILLISECONDS = 20


def summary(number: int, state: str = "succeeded", job: str = "csv-statistics") -> dict[str, Any]:
    created = T0 - timedelta(minutes=number)
    return PipelineSummary(
        id=f"p-{number:03d}",
        job=job,
        state=state,
        owner="key:dev",
        email="you@example.com",
        created_at=created,
        updated_at=created + timedelta(seconds=2.5),
        run_id=1796138466619000 + number,
        run_page_url=f"http://localhost:8080/?o=1#job/1001/run/{1796138466619000 + number}",
    ).model_dump(mode="json")


def timeline_events(pipeline_id: str, final: str) -> list[dict[str, Any]]:
    """A whole timeline ending in ``final`` (a final state, or awaiting_repair, where it stops)."""
    run_page = "http://localhost:8080/?o=1#job/1001/run/77"
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("started", "started by key:dev (job csv-statistics)", {"by": "key:dev", "job": "csv-statistics"}),
        ("run_triggered", "Databricks run 77 triggered", {"run_id": 77, "run_page_url": run_page, "attempt": 0}),
        ("databricks_state", "the run is RUNNING", {"life_cycle_state": "RUNNING", "result_state": None}),
    ]
    if final == "awaiting_repair":
        steps.append(("awaiting_repair", "the run failed; awaiting repair", {"attempt": 0}))
    else:
        steps += [
            ("callback_received", f"the notebook reported {final}", {"status": "success", "attempt": 0}),
            ("email_delivered", "the outcome was emailed to you@example.com", {"kind": "outcome"}),
            ("finished", f"finished: {final}", {"state": final, "error": None}),
        ]
    return [
        PipelineEvent(seq=100 + n, at=T0 + timedelta(seconds=1.5 * n), kind=kind, summary=text, data=data).model_dump(
            mode="json"
        )
        for n, (kind, text, data) in enumerate(steps)
    ]


def status_document(pipeline_id: str, state: str, steps: list[StepSummary] = (), **fields: Any) -> dict[str, Any]:
    """A status document: the gateway's schema for what it has today, plus ``version`` and ``steps``."""
    legacy = PipelineStatus(
        id=pipeline_id,
        state=state,
        job=fields.pop("job", "customer-onboarding" if steps else "csv-statistics"),
        email="you@example.com",
        parameters={},
        timeout_seconds=3600,
        databricks=None,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=9),
        **fields,
    ).model_dump(mode="json")
    return legacy | {"version": 1 if steps else None, "steps": [s.model_dump(mode="json") for s in steps]}


@dataclass
class Decision:
    """One POST of a decision: which pipeline, which action, with what body (None: no body)."""

    pipeline_id: str
    action: str
    body: dict[str, Any] | None


@dataclass
class FakeTimeline:
    events: list[dict[str, Any]]
    #: How many of the events `GET /pipelines/{id}/events` shows (the rest "happen" on the stream).
    shown: int
    #: The state that document gives.
    state_shown: str = "waiting"
    #: The state `event: end` gives after the events; None: the stream stays open (keepalives only).
    end_state: str | None = None
    #: The first stream dies (connection aborted) after sending this many events.
    drop_after: int | None = None
    #: After the drop, this many connection attempts get 503 with Retry-After (a gateway restarting).
    unavailable_for: int = 0
    connections: int = 0


@dataclass
class Seen:
    path: str
    query: list[tuple[str, str]]
    last_event_id: str | None


@dataclass
class FakeGateway:
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    timelines: dict[str, FakeTimeline] = field(default_factory=dict)
    #: `GET /pipelines?follow=true` sends these as `event: pipeline`, then closes; later connections get 401.
    list_changes: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    cursors_issued: list[str] = field(default_factory=list)
    list_streams: int = 0
    #: `GET /pipelines/{id}` answers these; a pipeline with only a timeline gets a legacy document in its state.
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    #: The answer the next decision gets instead of the document: (status, code).
    refuse_next: tuple[int, str] | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/pipelines", self._list),
                Route("/pipelines/{pipeline_id}", self._status),
                Route("/pipelines/{pipeline_id}/events", self._events),
                Route("/pipelines/{pipeline_id}/{action:str}", self._decide, methods=["POST"]),
            ]
        )

    async def _status(self, request: Request) -> Response:
        # Not in `seen`: the stream tests read its last entry, and `watch` reads the status after its stream.
        if refused := self._refusal(request, record=False):
            return refused
        pipeline_id = request.path_params["pipeline_id"]
        if pipeline_id in self.statuses:
            return JSONResponse(self.statuses[pipeline_id])
        if timeline := self.timelines.get(pipeline_id):
            return JSONResponse(status_document(pipeline_id, timeline.end_state or timeline.state_shown))
        return JSONResponse({"code": "pipeline_not_found", "message": "no pipeline with this id"}, 404)

    async def _decide(self, request: Request) -> Response:
        if refused := self._refusal(request):
            return refused
        pipeline_id, action = request.path_params["pipeline_id"], request.path_params["action"]
        if action not in ("approve", "reject", "repair", "abandon") or pipeline_id not in self.statuses:
            return JSONResponse({"code": "not_found", "message": f"no {action} of {pipeline_id}"}, 404)
        raw = await request.body()
        self.decisions.append(Decision(pipeline_id, action, json.loads(raw) if raw else None))
        if self.refuse_next is not None:
            (status, code), self.refuse_next = self.refuse_next, None
            return JSONResponse({"code": code, "message": f"refused by the fake: {code}"}, status)
        return JSONResponse(self.statuses[pipeline_id], 202)

    def _refusal(self, request: Request, record: bool = True) -> Response | None:
        if record:
            self.seen.append(
                Seen(request.url.path, list(request.query_params.multi_items()), request.headers.get("last-event-id"))
            )
        if request.headers.get("authorization") != f"Bearer {FAKE_KEY}":
            return JSONResponse(
                {"code": "invalid_token", "message": "the API key is not one of this gateway's"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        return None

    async def _list(self, request: Request) -> Response:
        if refused := self._refusal(request):
            return refused
        query = request.query_params
        if query.get("follow") == "true":
            return self._list_stream()
        matching = [s for s in self.pipelines if self._matches(s, query)]
        cursor = query.get("cursor")
        if cursor is not None and cursor not in self.cursors_issued:
            return JSONResponse({"code": "invalid_request", "message": f"unknown cursor {cursor!r}"}, 422)
        start = 0 if cursor is None else int(cursor.split("/")[1])
        limit = int(query.get("limit", "50"))
        items = matching[start : start + limit]
        next_cursor = None
        if start + limit < len(matching):
            # Opaque and awkward on purpose: a slash, a plus and an equals sign must come back verbatim.
            next_cursor = f"c/{start + limit}/+x=="
            self.cursors_issued.append(next_cursor)
        page = PipelinePage.model_validate({"items": items, "next_cursor": next_cursor, "total": len(matching)})
        return JSONResponse(page.model_dump(mode="json"))

    @staticmethod
    def _matches(summary: dict[str, Any], query: Any) -> bool:
        created = datetime.fromisoformat(summary["created_at"])
        states = query.getlist("state")
        return (
            (not states or summary["state"] in states)
            and query.get("job") in (None, summary["job"])
            and ("created_after" not in query or created > datetime.fromisoformat(query["created_after"]))
            and ("created_before" not in query or created < datetime.fromisoformat(query["created_before"]))
        )

    def _list_stream(self) -> Response:
        self.list_streams += 1
        if self.list_streams > 1:
            return JSONResponse({"code": "invalid_token", "message": "the key was revoked"}, status_code=401)

        async def changes() -> AsyncIterator[str]:
            yield f"retry: {RETRY_MILLISECONDS}\n\n: keepalive\n\n"
            for seq, change in enumerate(self.list_changes, start=500):
                yield f"event: pipeline\nid: {seq}\ndata: {json.dumps(change)}\n\n"

        return StreamingResponse(changes(), media_type="text/event-stream")

    async def _events(self, request: Request) -> Response:
        if refused := self._refusal(request):
            return refused
        timeline = self.timelines.get(request.path_params["pipeline_id"])
        if timeline is None:
            return JSONResponse({"code": "pipeline_not_found", "message": "no pipeline with this id"}, 404)
        if request.query_params.get("follow") != "true":
            document = PipelineTimeline(
                pipeline_id=request.path_params["pipeline_id"],
                state=timeline.state_shown,
                events=timeline.events[: timeline.shown],
            )
            return JSONResponse(document.model_dump(mode="json"))
        timeline.connections += 1
        attempt = timeline.connections
        if timeline.drop_after is not None and 1 < attempt <= 1 + timeline.unavailable_for:
            return JSONResponse(
                {"code": "index_unavailable", "message": "the index is away"}, 503, headers={"retry-after": "1"}
            )
        after = int(request.headers.get("last-event-id") or 0)
        drop_after = timeline.drop_after if attempt == 1 else None
        return StreamingResponse(
            self._timeline_stream(request.path_params["pipeline_id"], timeline, after, drop_after),
            media_type="text/event-stream",
        )

    @staticmethod
    async def _timeline_stream(
        pipeline_id: str, timeline: FakeTimeline, after: int, drop_after: int | None
    ) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        sent = 0
        for event in timeline.events:
            if event["seq"] <= after:
                continue
            if sent == drop_after:
                # Aborts the connection mid-body, as a gateway killed mid-stream does.
                raise ConnectionAbortedError("the fake gateway drops the stream")
            yield f"event: timeline\nid: {event['seq']}\ndata: {json.dumps(event)}\n\n"
            sent += 1
            await asyncio.sleep(0.01)
        if timeline.end_state is not None:
            yield f"event: end\ndata: {json.dumps({'pipeline_id': pipeline_id, 'state': timeline.end_state})}\n\n"
            return
        while True:
            yield ": keepalive\n\n"
            await asyncio.sleep(0.05)
