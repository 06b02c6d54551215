"""Approving and rejecting a pipeline's approval gate from its page: the confirmation (with a comment) and the decision.

Who may decide is the gate's to say (one of its scopes, or admin), not a scope
of the page: these pages need only a session that may read the pipeline (with
``read``, or with ``approve`` while a gate of it names a scope it holds), and
offer the forms to those :func:`.pipeline.may_decide` allows; the domain
(``Pipelines.approve`` / ``Pipelines.reject``) checks again and refuses with
403 anyone else. A decision is a POST with the session's CSRF token, never a
GET: the approval email links to the pipeline's page, which decides nothing.
"""

# No `from __future__ import annotations`: the pages annotate with dependencies made by create_ui_app,
# which FastAPI could not resolve from a string.

import logging
from functools import partial
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from pipeline_shared.errors import PipelineError
from pipeline_shared.logs import pipeline_context

from ...auth.authenticator import audit_fields
from ...domain.pipelines import Pipelines
from ..asking import field, form_of
from ..context import Ui
from ..rendering import Pages
from ..sessions import Session
from .pipeline import MAX_COMMENT, STEP_REFERENCE, confirm_page, pipeline_id_of, visible_to

logger = logging.getLogger("pipeline_api.ui")


async def decide_gate(ui: Ui, request: Request, session: Session, pipeline_id: str, action: str) -> Response:
    """Approve or reject the gate the form names (or the one open), with its comment; the form again if refused."""
    pages: Pages = ui.pages
    owned = await visible_to(request, session.principal, pipeline_id_of(pipeline_id), deciding=True)
    form = await form_of(request)
    gate, comment = field(form, "gate") or None, field(form, "comment")
    again = partial(confirm_page, pages, request, session, pipeline_id, action, chosen=gate or "", comment=comment)
    if gate is not None and not STEP_REFERENCE.fullmatch(gate):
        return await again(422, problem="No gate of this pipeline has that name.", errors={"gate": "unknown"})
    if len(comment) > MAX_COMMENT:
        problem = f"A comment is at most {MAX_COMMENT} characters; this one has {len(comment)}."
        return await again(422, problem=problem, errors={"comment": problem})
    pipelines: Pipelines = request.app.state.pipelines
    decide = pipelines.approve if action == "approve" else pipelines.reject
    try:
        await decide(owned.root, session.principal, gate, comment)
    except PipelineError as exc:
        if ui.status_of(exc) != 409:
            raise  # 403 (not one of the gate's deciders) and the rest: the error page
        return await again(409, problem=exc.message)
    with pipeline_context(pipeline_id):
        fields = audit_fields(session.principal) | {"gate": gate}
        logger.info(f"pipeline gate {action}d from the web page", extra={"fields": fields})
    return RedirectResponse(f"/ui/pipelines/{quote(pipeline_id)}?done={action}", status_code=303)


def add_pages(ui: Ui) -> None:
    """Add these pages to the web page's app, before the pipeline's /pipelines/{id}/{action} (cancel scope)."""
    app, reader = ui.app, ui.pipeline_reader

    @app.get("/pipelines/{pipeline_id}/approve")
    async def confirm_approve(request: Request, pipeline_id: str, session: reader) -> Response:
        return await confirm_page(ui.pages, request, session, pipeline_id, "approve")

    @app.post("/pipelines/{pipeline_id}/approve")
    async def approve(request: Request, pipeline_id: str, session: reader) -> Response:
        return await decide_gate(ui, request, session, pipeline_id, "approve")

    @app.get("/pipelines/{pipeline_id}/reject")
    async def confirm_reject(request: Request, pipeline_id: str, session: reader) -> Response:
        return await confirm_page(ui.pages, request, session, pipeline_id, "reject")

    @app.post("/pipelines/{pipeline_id}/reject")
    async def reject(request: Request, pipeline_id: str, session: reader) -> Response:
        return await decide_gate(ui, request, session, pipeline_id, "reject")
