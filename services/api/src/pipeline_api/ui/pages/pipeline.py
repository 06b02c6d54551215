"""One pipeline's page, its live fragment, and the confirmation and taking of its actions.

Its actions: cancel; repair and abandon (of the job step awaiting repair, chosen
when several are); approve and reject an open approval gate, offered only to a
session that may decide that gate (one of its scopes, or admin). The domain
decides again when the action is taken: what the page offers is a convenience,
never the check.
"""

# No `from __future__ import annotations`: the pages annotate with dependencies made by create_ui_app,
# which FastAPI could not resolve from a string.

import logging
import re
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline_shared.errors import PipelineError
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import PIPELINE_ID, PipelineState, StepSummary
from pipeline_shared.schedules import next_firing_at

from ...auth.authenticator import audit_fields, audit_refusal
from ...auth.principals import Principal, Scope
from ...domain.access import visible
from ...domain.commands import OwnedPipeline
from ...domain.pipelines import Pipelines
from ...domain.pipelines import may_decide as domain_may_decide
from ...schemas import PipelineEvent, PipelineStatus
from ...settings import GatewaySettings
from .. import steps as step_views
from .. import views
from ..asking import field, form_of
from ..context import Ui
from ..rendering import Pages, RequestRefused, digest
from ..sessions import Session

logger = logging.getLogger("pipeline_api.ui")


#: The actions a pipeline's page offers that need the cancel scope, and how each is told.
ACTIONS = {
    "cancel": "Cancel",
    "repair": "Repair",
    "abandon": "Abandon",
}
#: The decisions at an approval gate: the gate's own scopes decide who may take them.
GATE_ACTIONS = {
    "approve": "Approve",
    "reject": "Reject",
}
#: The longest comment a decision at a gate takes (the gateway's own bound).
MAX_COMMENT = 2000
#: What a gate or step field may hold: a step's id or name (pipeline_shared.models.StepName).
STEP_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}")

# ── one pipeline ─────────────────────────────────────────────────────────────


def may_decide(principal: Principal, gate: StepSummary) -> bool:
    """Whether ``principal`` may approve or reject ``gate``: the domain's rule (a scope of the gate's, or admin)."""
    return gate.approval is not None and domain_may_decide(principal, gate.approval)


def actions_for(status: PipelineStatus, session: Session) -> list[str]:
    """What the principal may do to the pipeline now: by its state and its steps, the cancel scope and the gates'."""
    if status.state.is_final:
        return []
    steps = step_views.steps_of(status)
    actions = []
    if any(may_decide(session.principal, gate) for gate in step_views.open_gates(steps)):
        actions += ["approve", "reject"]
    if not session.principal.allows(Scope.CANCEL):
        return actions
    if status.state == PipelineState.AWAITING_REPAIR or step_views.awaiting_repair(steps):
        actions += ["repair", "abandon"]
    if status.state != PipelineState.AWAITING_REPAIR:
        actions.append("cancel")
    return actions


async def _timeline(request: Request, pipeline_id: str) -> list[PipelineEvent] | None:
    index = request.app.state.index
    if index is None:
        return None
    return await index.timeline(pipeline_id)


def mailsink_link(settings: GatewaySettings, message_id: str | None) -> str | None:
    if not settings.MAILSINK_UI_URL or not message_id:
        return None
    return f"{settings.MAILSINK_UI_URL}/ui/by-message-id/{quote(message_id, safe='')}"


async def _pipeline_context(
    request: Request, session: Session, pipeline_id: str, *, gates: bool = False
) -> dict[str, Any]:
    """What a pipeline's page shows; with ``gates``, also to whom an open gate of it names a scope held."""
    owned = await visible_to(request, session.principal, pipeline_id, gates=gates)
    pipelines: Pipelines = request.app.state.pipelines
    status = await pipelines.status(owned.root)
    events = await _timeline(request, pipeline_id)
    settings: GatewaySettings = request.app.state.settings
    now = datetime.now(UTC)
    drawn = views.phases(events or [], final=status.state.is_final, now=now) if events else []
    steps = step_views.steps_of(status)
    shown = step_views.steps_worth_showing(steps)
    step_bars = step_views.step_phases(shown, final=status.state.is_final, now=now)
    version = digest(status.state, status.updated_at, [(e.seq, e.kind) for e in events or []], shown)
    return {
        "status": status,
        "events": events,
        "phases": drawn,
        "chart": views.chart(drawn),
        "steps": shown,
        "step_bars": step_bars,
        "step_chart": views.chart(step_bars),
        "gates": [g for g in step_views.open_gates(steps) if may_decide(session.principal, g)],
        "repairable": step_views.awaiting_repair(steps),
        "result": views.result_view(status.result) if status.result else None,
        "actions": actions_for(status, session),
        "mail_link": mailsink_link(settings, status.notification.message_id if status.notification else None),
        "job": (entry := settings.catalogue.startable.get(status.job)),
        # Its entry's schedule: when it next starts a pipeline like this one.
        "next_firing": next_firing_at(entry) if entry is not None else None,
        "version": version,
        # The timeline comes from the index, which trails Resonate a little: a page that
        # stopped polling at the final state could keep a timeline without its end.
        "live": not status.state.is_final or (events is not None and not _ended(events)),
    }


async def _repair(
    pages: Pages, request: Request, session: Session, owned: OwnedPipeline, form: dict[str, list[str]], step: str | None
) -> Response | None:
    """Repair the pipeline, or its job step ``step``; the form again (422) when a changed parameter is refused.

    A pipeline of its own catalogue job reruns with the form's parameters; a job step of a pipeline of
    several reruns with those it ran with (the page offers no parameters for it).
    """
    pipelines: Pipelines = request.app.state.pipelines
    settings: GatewaySettings = request.app.state.settings
    status = await pipelines.status(owned.root)
    principal_id, pipeline_id = session.principal.id, owned.root.id
    if step is not None or status.job not in settings.catalogue.jobs or _steps_shown(status):
        # Only a named step is passed on: a pipeline of one job repairs as it always did.
        await pipelines.decide(owned.root, principal_id, "repair", None, **({"step": step} if step else {}))
        return None
    changes = {
        name.removeprefix("param."): values[-1] for name, values in form.items() if name.startswith("param.") and values
    }
    changed = {name: value for name, value in changes.items() if status.parameters.get(name) != value}
    try:
        parameters = await pipelines.parameters_for_repair(owned.root, changed)
    except ValueError as exc:
        errors = {f"param.{p.name}": p.problem for p in getattr(exc, "problems", [])}
        return await confirm_page(
            pages, request, session, pipeline_id, "repair", 422, problem=str(exc), errors=errors, values=changes
        )
    await pipelines.decide(owned.root, principal_id, "repair", parameters)
    return None


def _steps_shown(status: PipelineStatus) -> list[StepSummary]:
    return step_views.steps_worth_showing(step_views.steps_of(status))


def _ended(events: list[PipelineEvent]) -> bool:
    return any(event.kind == "finished" for event in events)


async def visible_to(
    request: Request, principal: Principal, pipeline_id: str, *, gates: bool = False, deciding: bool = False
) -> OwnedPipeline:
    """The pipeline for ``principal``, by the domain's rule (see :func:`...domain.access.visible`)."""
    audit = partial(audit_refusal, request)
    return await visible(request.app.state.pipelines, principal, pipeline_id, audit, gates=gates, deciding=deciding)


def pipeline_id_of(pipeline_id: str) -> str:
    """``pipeline_id``, when it may be one; else the page of no such pipeline."""
    if not PIPELINE_ID.fullmatch(pipeline_id):
        raise RequestRefused(
            404,
            "pipeline_not_found",
            "No such pipeline",
            "A pipeline id is 1-64 of A-Z a-z 0-9 . _ - ; this address holds none.",
        )
    return pipeline_id


async def confirm_page(
    pages: Pages, request: Request, session: Session, pipeline_id: str, action: str, status: int = 200, **extra: Any
) -> Response:
    """The confirmation of ``action`` (its form), again with ``problem`` and ``errors`` when it was refused."""
    if action not in ACTIONS and action not in GATE_ACTIONS:
        raise StarletteHTTPException(404)
    # A gate's decider may read the pipeline while the gate is open; the other actions need its owner.
    gates = action in GATE_ACTIONS
    context = await _pipeline_context(request, session, pipeline_id_of(pipeline_id), gates=gates)
    extra.setdefault("problem", None)
    extra.setdefault("errors", {})
    extra.setdefault("values", context["status"].parameters)
    # The step or gate a link chose (?step=, ?gate=), kept when a refusal shows the form again.
    extra.setdefault("chosen", request.query_params.get("step") or request.query_params.get("gate") or "")
    extra.setdefault("comment", "")
    return pages.render(request, "confirm.html", status, session, action=action, **context, **extra)


def add_pages(ui: Ui) -> None:
    """Add these pages to the web page's app."""
    pages, app, canceller, status_of = ui.pages, ui.app, ui.canceller, ui.status_of
    reader = ui.pipeline_reader

    # ── one pipeline ──

    @app.get("/pipelines/{pipeline_id}")
    async def pipeline_page(request: Request, pipeline_id: str, session: reader) -> Response:
        context = await _pipeline_context(request, session, pipeline_id_of(pipeline_id), gates=True)
        done = request.query_params.get("done") or ""
        told = ACTIONS.get(done) or GATE_ACTIONS.get(done)
        return pages.render(request, "pipeline.html", 200, session, done=told, **context)

    @app.get("/pipelines/{pipeline_id}/live")
    async def pipeline_fragment(request: Request, pipeline_id: str, session: reader) -> Response:
        context = await _pipeline_context(request, session, pipeline_id_of(pipeline_id), gates=True)
        if request.query_params.get("version") == context["version"]:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return pages.render(request, "_pipeline_live.html", 200, session, **context)

    # ── the actions that need the cancel scope ──

    @app.get("/pipelines/{pipeline_id}/{action}")
    async def confirm_action(request: Request, pipeline_id: str, action: str, session: canceller) -> Response:
        return await confirm_page(pages, request, session, pipeline_id, action)

    @app.post("/pipelines/{pipeline_id}/{action}")
    async def take_action(request: Request, pipeline_id: str, action: str, session: canceller) -> Response:
        if action not in ACTIONS:
            raise StarletteHTTPException(404)
        owned = await visible_to(request, session.principal, pipeline_id_of(pipeline_id))
        pipelines: Pipelines = request.app.state.pipelines
        form = await form_of(request)
        step = field(form, "step") or None
        if step is not None and not STEP_REFERENCE.fullmatch(step):
            return await confirm_page(
                pages, request, session, pipeline_id, action, 422, problem="No step of this pipeline has that name."
            )
        which = {"step": step} if step is not None else {}
        try:
            if action == "cancel":
                await pipelines.cancel(owned.root, session.principal.id)
            elif action == "abandon":
                await pipelines.decide(owned.root, session.principal.id, "abandon", **which)
            else:
                refused = await _repair(pages, request, session, owned, form, step)
                if refused is not None:
                    return refused
        except PipelineError as exc:
            status = status_of(exc)
            if status not in (409,):
                raise
            return await confirm_page(
                pages, request, session, pipeline_id, action, status, problem=exc.message, chosen=step or ""
            )
        with pipeline_context(pipeline_id):
            logger.info(f"pipeline {action} from the web page", extra={"fields": audit_fields(session.principal)})
        return RedirectResponse(f"/ui/pipelines/{quote(pipeline_id)}?done={action}", status_code=303)
