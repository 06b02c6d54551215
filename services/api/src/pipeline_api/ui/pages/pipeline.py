"""One pipeline's page, its live fragment, and the confirmation and taking of its actions."""

# No `from __future__ import annotations`: the pages annotate with dependencies made by create_ui_app,
# which FastAPI could not resolve from a string.

import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline_shared.errors import PipelineError
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import PIPELINE_ID, PipelineState

from ...auth.authenticator import audit_fields, audit_refusal
from ...auth.principals import Principal, Scope
from ...domain.access import visible
from ...domain.commands import OwnedPipeline
from ...domain.pipelines import Pipelines
from ...schemas import PipelineEvent, PipelineStatus
from ...settings import GatewaySettings
from .. import views
from ..asking import form_of
from ..context import Ui
from ..rendering import RequestRefused, digest
from ..sessions import Session

logger = logging.getLogger("pipeline_api.ui")


#: The actions a pipeline's page offers, what each needs, and how each is told.
ACTIONS = {
    "cancel": "Cancel",
    "repair": "Repair",
    "abandon": "Abandon",
}

# ── one pipeline ─────────────────────────────────────────────────────────────


def actions_for(status: PipelineStatus, session: Session) -> list[str]:
    """What the principal may do to the pipeline now: by its state, and the cancel scope."""
    if not session.principal.allows(Scope.CANCEL) or status.state.is_final:
        return []
    if status.state == PipelineState.AWAITING_REPAIR:
        return ["repair", "abandon"]
    return ["cancel"]


async def _timeline(request: Request, pipeline_id: str) -> list[PipelineEvent] | None:
    index = request.app.state.index
    if index is None:
        return None
    return await index.timeline(pipeline_id)


def mailsink_link(settings: GatewaySettings, message_id: str | None) -> str | None:
    if not settings.MAILSINK_UI_URL or not message_id:
        return None
    return f"{settings.MAILSINK_UI_URL}/ui/by-message-id/{quote(message_id, safe='')}"


async def _pipeline_context(request: Request, session: Session, pipeline_id: str) -> dict[str, Any]:
    owned = await _visible(request, session.principal, pipeline_id)
    pipelines: Pipelines = request.app.state.pipelines
    status = await pipelines.status(owned.root)
    events = await _timeline(request, pipeline_id)
    settings: GatewaySettings = request.app.state.settings
    now = datetime.now(UTC)
    drawn = views.phases(events or [], final=status.state.is_final, now=now) if events else []
    version = digest(status.state, status.updated_at, [(e.seq, e.kind) for e in events or []])
    return {
        "status": status,
        "events": events,
        "phases": drawn,
        "chart": views.chart(drawn),
        "result": views.result_view(status.result) if status.result else None,
        "actions": actions_for(status, session),
        "mail_link": mailsink_link(settings, status.notification.message_id if status.notification else None),
        "job": settings.catalogue.jobs.get(status.job),
        "version": version,
        # The timeline comes from the index, which trails Resonate a little: a page that
        # stopped polling at the final state could keep a timeline without its end.
        "live": not status.state.is_final or (events is not None and not _ended(events)),
    }


def _ended(events: list[PipelineEvent]) -> bool:
    return any(event.kind == "finished" for event in events)


async def _visible(request: Request, principal: Principal, pipeline_id: str) -> OwnedPipeline:
    return await visible(request.app.state.pipelines, principal, pipeline_id, partial(audit_refusal, request))


def add_pages(ui: Ui) -> None:
    """Add these pages to the web page's app."""
    pages, app, reader, canceller, status_of = ui.pages, ui.app, ui.reader, ui.canceller, ui.status_of

    # ── one pipeline ──

    def pipeline_id_of(pipeline_id: str) -> str:
        if not PIPELINE_ID.fullmatch(pipeline_id):
            raise RequestRefused(
                404,
                "pipeline_not_found",
                "No such pipeline",
                "A pipeline id is 1-64 of A-Z a-z 0-9 . _ - ; this address holds none.",
            )
        return pipeline_id

    @app.get("/pipelines/{pipeline_id}")
    async def pipeline_page(request: Request, pipeline_id: str, session: reader) -> Response:
        context = await _pipeline_context(request, session, pipeline_id_of(pipeline_id))
        done = request.query_params.get("done")
        return pages.render(request, "pipeline.html", 200, session, done=ACTIONS.get(done or ""), **context)

    @app.get("/pipelines/{pipeline_id}/live")
    async def pipeline_fragment(request: Request, pipeline_id: str, session: reader) -> Response:
        context = await _pipeline_context(request, session, pipeline_id_of(pipeline_id))
        if request.query_params.get("version") == context["version"]:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return pages.render(request, "_pipeline_live.html", 200, session, **context)

    async def confirm_page(
        request: Request, session: Session, pipeline_id: str, action: str, status: int = 200, **extra: Any
    ) -> Response:
        if action not in ACTIONS:
            raise StarletteHTTPException(404)
        context = await _pipeline_context(request, session, pipeline_id_of(pipeline_id))
        extra.setdefault("problem", None)
        extra.setdefault("errors", {})
        extra.setdefault("values", context["status"].parameters)
        return pages.render(request, "confirm.html", status, session, action=action, **context, **extra)

    @app.get("/pipelines/{pipeline_id}/{action}")
    async def confirm_action(request: Request, pipeline_id: str, action: str, session: canceller) -> Response:
        return await confirm_page(request, session, pipeline_id, action)

    @app.post("/pipelines/{pipeline_id}/{action}")
    async def take_action(request: Request, pipeline_id: str, action: str, session: canceller) -> Response:
        if action not in ACTIONS:
            raise StarletteHTTPException(404)
        owned = await _visible(request, session.principal, pipeline_id_of(pipeline_id))
        pipelines: Pipelines = request.app.state.pipelines
        form = await form_of(request)
        try:
            if action == "cancel":
                await pipelines.cancel(owned.root, session.principal.id)
            elif action == "abandon":
                await pipelines.decide(owned.root, session.principal.id, "abandon")
            else:
                changes = {
                    name.removeprefix("param."): values[-1]
                    for name, values in form.items()
                    if name.startswith("param.") and values
                }
                current = (await pipelines.status(owned.root)).parameters
                changed = {name: value for name, value in changes.items() if current.get(name) != value}
                try:
                    parameters = await pipelines.parameters_for_repair(owned.root, changed)
                except ValueError as exc:
                    problems = getattr(exc, "problems", [])
                    errors = {f"param.{p.name}": p.problem for p in problems}
                    return await confirm_page(
                        request, session, pipeline_id, action, 422, problem=str(exc), errors=errors, values=changes
                    )
                await pipelines.decide(owned.root, session.principal.id, "repair", parameters)
        except PipelineError as exc:
            status = status_of(exc)
            if status not in (409,):
                raise
            return await confirm_page(request, session, pipeline_id, action, status, problem=exc.message)
        with pipeline_context(pipeline_id):
            logger.info(f"pipeline {action} from the web page", extra={"fields": audit_fields(session.principal)})
        return RedirectResponse(f"/ui/pipelines/{quote(pipeline_id)}?done={action}", status_code=303)
