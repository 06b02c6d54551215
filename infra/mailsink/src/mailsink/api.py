"""The sink's HTTP API: read what arrived, wait for it, and inject faults.

Tests and the integration suite talk to the sink only through this API (and
SMTP). Every error is JSON with a stable ``code`` and a human ``message``.
Waiting is a long poll answered the moment a matching message is stored, so a
test never sleeps to give mail time to arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailsink.faults import FaultError, FaultPlan, PermanentFault, Stage, TransientFault
from mailsink.smtp import SinkStats
from mailsink.store import MailStore, MessageFilter, StoredMessage

#: The longest a wait may be asked to last; longer would tie up a connection
#: past any sensible test timeout.
MAX_WAIT_SECONDS = 120.0
#: How long a wait lasts when the caller does not say.
DEFAULT_WAIT_SECONDS = 10.0


class ErrorBody(BaseModel):
    code: str
    message: str


class AttachmentView(BaseModel):
    filename: str | None
    content_type: str
    size: int


class MessageView(BaseModel):
    """One stored message, as ``GET /messages`` and friends return it."""

    model_config = ConfigDict(populate_by_name=True)

    id: int
    message_id: str | None
    pipeline_id: str | None
    envelope_from: str
    envelope_to: list[str]
    from_: str | None = Field(alias="from")
    to: str | None
    subject: str | None
    date: str | None
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    size: int
    received_at: datetime
    received_at_ms: int
    last_received_at: datetime
    deliveries: int
    authenticated_as: str | None
    tls: bool
    defects: list[str]
    attachments: list[AttachmentView]

    @classmethod
    def of(cls, message: StoredMessage) -> MessageView:
        return cls(
            id=message.id,
            message_id=message.message_id,
            pipeline_id=message.pipeline_id,
            envelope_from=message.envelope_from,
            envelope_to=list(message.envelope_to),
            from_=message.header("From"),
            to=message.header("To"),
            subject=message.header("Subject"),
            date=message.header("Date"),
            headers=message.headers,
            text=message.text,
            html=message.html,
            size=len(message.raw),
            received_at=message.received_at,
            received_at_ms=int(message.received_at.timestamp() * 1000),
            last_received_at=message.last_received_at,
            deliveries=message.deliveries,
            authenticated_as=message.authenticated_as,
            tls=message.tls,
            defects=message.defects,
            attachments=[
                AttachmentView(filename=a.filename, content_type=a.content_type, size=a.size)
                for a in message.attachments
            ],
        )


class MessageList(BaseModel):
    messages: list[MessageView]


class Deleted(BaseModel):
    deleted: int


class TransientFaultRequest(BaseModel):
    """Answer a 4xx to the next ``count`` transactions, or to all for ``seconds``."""

    model_config = ConfigDict(extra="forbid")

    code: int = 451
    stage: Stage = Stage.RCPT
    count: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_bound(self) -> TransientFaultRequest:
        if (self.count is None) == (self.seconds is None):
            raise ValueError("give exactly one of count and seconds")
        return self


class PermanentFaultRequest(BaseModel):
    """Answer a 5xx to every transaction to ``recipient`` until reset."""

    model_config = ConfigDict(extra="forbid")

    recipient: str = Field(min_length=3, max_length=320)
    code: int = 550
    stage: Literal[Stage.RCPT, Stage.DATA] = Stage.RCPT


class TransientFaultView(BaseModel):
    code: int
    text: str
    stage: Stage
    #: Transactions still to refuse, for a counted fault.
    remaining: int | None
    #: Seconds until the fault ends, for a timed one.
    seconds_left: float | None


class PermanentFaultView(BaseModel):
    recipient: str
    code: int
    text: str
    stage: Stage


class FaultsView(BaseModel):
    transient: TransientFaultView | None
    permanent: list[PermanentFaultView]


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    #: The sink's own SMTP reply to NOOP, or why it got none.
    smtp: str


class StatsView(BaseModel):
    messages: int
    transactions: int
    accepted: int
    duplicates: int
    rejected_transient: int
    rejected_permanent: int
    auth_failures: int
    evicted: int
    #: Long polls waiting right now.
    waiting: int


def _faults_view(faults: FaultPlan) -> FaultsView:
    transient: TransientFault | None = faults.transient
    permanent: list[PermanentFault] = faults.permanent
    return FaultsView(
        transient=None
        if transient is None
        else TransientFaultView(
            code=transient.reply.code,
            text=transient.reply.text,
            stage=transient.stage,
            remaining=transient.remaining,
            seconds_left=faults.seconds_left(transient),
        ),
        permanent=[
            PermanentFaultView(
                recipient=f.recipient, code=f.reply.code, text=f.reply.text, stage=f.stage
            )
            for f in permanent
        ],
    )


def validation_problems(exc: RequestValidationError) -> str:
    """What was wrong with a request, parameter by parameter, in one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(ErrorBody(code=code, message=message).model_dump(), status_code=status)


ToQuery = Annotated[str | None, Query(description="An envelope recipient (case-insensitive).")]
MessageIdQuery = Annotated[
    str | None, Query(description="The Message-ID, with or without angle brackets.")
]
PipelineIdQuery = Annotated[str | None, Query(description="The X-Pipeline-Id header.")]


def create_app(
    store: MailStore,
    faults: FaultPlan,
    stats: SinkStats,
    probe_smtp: Callable[[], Awaitable[str]],
) -> FastAPI:
    """The HTTP API over one sink's store, faults and counters.

    ``probe_smtp`` talks SMTP to the sink's own listener and returns its reply
    (raising when there is none); ``/healthz`` is healthy only when it works.
    """
    app = FastAPI(title="mailsink", summary="A local SMTP sink with an HTTP API.")

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", validation_problems(exc))

    @app.exception_handler(FaultError)
    async def _invalid_fault(request: Request, exc: FaultError) -> JSONResponse:
        return _error(422, "invalid_fault", str(exc))

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Health | JSONResponse:
        try:
            reply = await probe_smtp()
        except Exception as exc:
            body = Health(status="unhealthy", smtp=f"{exc.__class__.__name__}: {exc}")
            return JSONResponse(body.model_dump(), status_code=503)
        return Health(status="ok", smtp=reply)

    @app.get("/messages", response_model=MessageList, response_model_by_alias=True)
    async def list_messages(
        to: ToQuery = None, message_id: MessageIdQuery = None, pipeline_id: PipelineIdQuery = None
    ) -> MessageList:
        wanted = MessageFilter(to=to, message_id=message_id, pipeline_id=pipeline_id)
        return MessageList(messages=[MessageView.of(m) for m in store.find(wanted)])

    @app.get(
        "/messages/wait",
        response_model=MessageList,
        response_model_by_alias=True,
        responses={408: {"model": ErrorBody}},
    )
    async def wait_for_messages(
        to: ToQuery = None,
        message_id: MessageIdQuery = None,
        pipeline_id: PipelineIdQuery = None,
        count: Annotated[int, Query(ge=1, le=1000)] = 1,
        min_deliveries: Annotated[int, Query(ge=1, le=1000)] = 1,
        timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = DEFAULT_WAIT_SECONDS,
    ) -> MessageList | JSONResponse:
        wanted = MessageFilter(to=to, message_id=message_id, pipeline_id=pipeline_id)
        found = await store.wait_for(
            wanted, count=count, min_deliveries=min_deliveries, timeout=timeout
        )
        if found is None:
            return _error(
                408,
                "wait_timed_out",
                f"fewer than {count} matching message(s) with at least {min_deliveries} "
                f"deliveries arrived within {timeout} s",
            )
        return MessageList(messages=[MessageView.of(m) for m in found])

    @app.get(
        "/messages/{number}",
        response_model=MessageView,
        response_model_by_alias=True,
        responses={404: {"model": ErrorBody}},
    )
    async def get_message(number: int) -> MessageView | JSONResponse:
        message = store.get(number)
        if message is None:
            return _error(404, "message_not_found", f"no message {number} is stored")
        return MessageView.of(message)

    @app.get(
        "/messages/{number}/raw",
        response_class=Response,
        responses={200: {"content": {"message/rfc822": {}}}, 404: {"model": ErrorBody}},
    )
    async def get_raw_message(number: int) -> Response:
        message = store.get(number)
        if message is None:
            return _error(404, "message_not_found", f"no message {number} is stored")
        return Response(message.raw, media_type="message/rfc822")

    @app.delete("/messages", response_model=Deleted)
    async def delete_messages() -> Deleted:
        return Deleted(deleted=store.clear())

    @app.get("/faults", response_model=FaultsView)
    async def get_faults() -> FaultsView:
        return _faults_view(faults)

    @app.post("/faults/transient", response_model=FaultsView, responses={422: {"model": ErrorBody}})
    async def set_transient_fault(body: TransientFaultRequest) -> FaultsView:
        faults.set_transient(
            code=body.code, stage=body.stage, count=body.count, seconds=body.seconds
        )
        return _faults_view(faults)

    @app.post("/faults/permanent", response_model=FaultsView, responses={422: {"model": ErrorBody}})
    async def set_permanent_fault(body: PermanentFaultRequest) -> FaultsView:
        faults.set_permanent(body.recipient, code=body.code, stage=body.stage)
        return _faults_view(faults)

    @app.delete("/faults", response_model=FaultsView)
    async def reset_faults() -> FaultsView:
        faults.reset()
        return _faults_view(faults)

    @app.get("/stats", response_model=StatsView)
    async def get_stats() -> StatsView:
        return StatsView(
            messages=len(store), evicted=store.evicted, waiting=store.waiting, **stats.as_dict()
        )

    return app
