"""Starting a pipeline from the page: the form, checked by the domain exactly as the JSON API checks a start."""

# No `from __future__ import annotations`: the pages annotate with dependencies made by create_ui_app,
# which FastAPI could not resolve from a string.

import contextlib
import logging
from functools import partial
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from pipeline_shared.catalogue import Job
from pipeline_shared.errors import (
    InsufficientScope,
    PipelineConflict,
)
from pipeline_shared.logs import pipeline_context

from ...auth.authenticator import audit_fields, audit_refusal
from ...auth.principals import Principal
from ...domain.access import InvalidRequest, may_start
from ...domain.access import checked_start as checked_by_the_domain
from ...domain.commands import StartRequest
from ...domain.pipelines import Pipelines
from ...schemas import PipelineRequest
from ...settings import GatewaySettings
from ..asking import field, form_of
from ..context import Ui
from ..sessions import Session

logger = logging.getLogger("pipeline_api.ui")


# ── starting ─────────────────────────────────────────────────────────────────


def checked_start(request: Request, principal: Principal, document: PipelineRequest) -> StartRequest:
    """The domain's check of a start, its problems as the 422 the page's handlers answer."""
    settings: GatewaySettings = request.app.state.settings
    recipients = request.app.state.recipient_domains
    audit = partial(audit_refusal, request)
    try:
        return checked_by_the_domain(settings.catalogue, recipients, principal, document, audit)
    except InvalidRequest as exc:
        raise RequestValidationError(exc.problems) from None


def startable_jobs(session: Session, settings: GatewaySettings) -> list[Job]:
    return [job for job in settings.catalogue.jobs.values() if may_start(session.principal, job)]


def _start_document(form: dict[str, list[str]]) -> dict[str, Any]:
    """The form as the JSON API's start document: empty fields left out, so defaults apply."""
    document: dict[str, Any] = {"email": field(form, "email")}
    for name in ("id", "job"):
        if value := field(form, name):
            document[name] = value
    if timeout := field(form, "timeout_seconds"):
        document["timeout_seconds"] = int(timeout) if timeout.isdigit() and len(timeout) < 12 else timeout
    prefix = "param."
    document["parameters"] = {
        name.removeprefix(prefix): values[-1]
        for name, values in form.items()
        if name.startswith(prefix) and values and values[-1] != ""
    }
    return document


def _field_of(loc: tuple[Any, ...]) -> str:
    """The form field a validation error's location names (``parameters.top`` → ``param.top``)."""
    parts = [str(part) for part in loc if part != "body"]
    if len(parts) >= 2 and parts[0] == "parameters":
        return f"param.{parts[1]}"
    return parts[0] if parts else "form"


def add_pages(ui: Ui) -> None:
    """Add these pages to the web page's app."""
    settings, pages, app, starter = ui.settings, ui.pages, ui.app, ui.starter

    # ── starting ──

    def start_form(
        request: Request,
        session: Session,
        job: Job | None,
        status: int = 200,
        *,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        problem: str | None = None,
    ) -> Response:
        jobs = startable_jobs(session, settings)
        if job is None and errors:
            # No form to mark the fields of (the job is unknown, or not the caller's to start): say it at the top.
            problem = "; ".join(errors.values())
        return pages.render(
            request,
            "start.html",
            status,
            session,
            jobs=jobs,
            job=job,
            values=values or {},
            errors=errors or {},
            problem=problem,
        )

    @app.get("/start")
    async def start_page(request: Request, session: starter) -> Response:
        jobs = startable_jobs(session, settings)
        wanted = request.query_params.get("job") or settings.catalogue.default
        job = next((j for j in jobs if j.name == wanted), jobs[0] if jobs else None)
        problem = None
        if request.query_params.get("job") and (job is None or job.name != wanted):
            problem = f"You may not start a job called {wanted[:64]!r}; choose one of those listed."
        return start_form(request, session, job, 200, problem=problem)

    @app.post("/start")
    async def start(request: Request, session: starter) -> Response:
        form = await form_of(request)
        values = {name: values[-1] for name, values in form.items() if values}
        document = _start_document(form)
        wanted = document.get("job") or settings.catalogue.default
        job = next((j for j in startable_jobs(session, settings) if j.name == wanted), None)
        errors: dict[str, str] = {}

        def note(problems: list[Any]) -> None:
            for error in problems:
                errors.setdefault(_field_of(tuple(error.get("loc", ()))), str(error.get("msg", "")))

        try:
            try:
                checked = checked_start(request, session.principal, PipelineRequest.model_validate(document))
            except ValidationError as exc:
                note(exc.errors(include_url=False))
                # Check the rest against the catalogue too, so one submit shows every problem: the
                # fields found invalid are left out (the email stood in for), and nothing is started.
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
                rest = {k: v for k, v in document.items() if k not in bad}
                if "email" in bad:
                    rest["email"] = "stand-in@example.com"
                with contextlib.suppress(ValidationError, InsufficientScope):
                    checked_start(request, session.principal, PipelineRequest.model_validate(rest))
                raise RequestValidationError([]) from None
            pipelines: Pipelines = request.app.state.pipelines
            started, created = await pipelines.start(checked)
        except RequestValidationError as exc:
            note(list(exc.errors()))
            return start_form(request, session, job, 422, values=values, errors=errors)
        except InsufficientScope as exc:
            return start_form(request, session, job, 403, values=values, errors={"job": exc.message})
        except PipelineConflict as exc:
            return start_form(request, session, job, 409, values=values, errors={"id": exc.message})
        with pipeline_context(started.id):
            logger.info(
                "pipeline started from the web page" if created else "pipeline start repeated from the web page",
                extra={"fields": audit_fields(session.principal)},
            )
        return RedirectResponse(f"/ui/pipelines/{quote(started.id)}", status_code=303)
