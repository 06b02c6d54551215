"""How the web page is drawn: its templates, its static files, the headers every page carries,
and the refusals it turns into pages.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from . import steps, views
from .sessions import Session

logger = logging.getLogger("pipeline_api.ui")


#: How often a live part of a page asks whether it changed.
POLL_SECONDS = 2
#: Scripts only from this page (htmx), styles only from its stylesheet, no
#: frames, forms posting only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: The files under static/ the page serves, with their media types; nothing else is served.
STATIC_FILES = {
    "ui.css": "text/css",
    "vendor/htmx.min.js": "text/javascript",
    "elapsed.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


# ── refusals the page turns into pages ───────────────────────────────────────


class SignInRequired(Exception):
    """No usable session: the person is sent to the sign-in page."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "")
        self.reason = reason


class RequestRefused(Exception):
    """A request the page refuses before doing anything: cross-site, no CSRF token, a malformed form."""

    def __init__(self, status: int, code: str, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.title, self.message = status, code, title, message


# ── rendering ────────────────────────────────────────────────────────────────


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline_api", "ui/templates"),
        # Every template, whatever its name: pipeline ids, emails, results
        # and error messages all come from users.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals |= {
        "duration": views.duration,
        "cell": views.cell,
        "wrappable": views.wrappable,
        "step_outcome": steps.step_outcome,
        "poll_seconds": POLL_SECONDS,
    }
    environment.filters["when"] = _when
    environment.filters["clock"] = _clock
    return environment


def _when(moment: datetime | int | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, int):  # epoch milliseconds, as attempts record them
        moment = datetime.fromtimestamp(moment / 1000, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(moment: datetime) -> str:
    """The time of day alone, where the day is on the page already (a phase's start and end)."""
    return moment.astimezone(UTC).strftime("%H:%M:%S")


class Pages:
    def __init__(self) -> None:
        self._templates = _environment()
        static = importlib.resources.files("pipeline_api").joinpath("ui/static")
        self.static = {name: static.joinpath(name).read_bytes() for name in STATIC_FILES}

    def render(
        self, request: Request, template: str, http_status: int = 200, session: Session | None = None, **context: Any
    ) -> HTMLResponse:
        html = self._templates.get_template(template).render(
            session=session, principal=session.principal if session else None, path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=http_status, headers=PAGE_HEADERS)

    def error(
        self, request: Request, status: int, code: str, title: str, message: str, session: Session | None = None
    ) -> HTMLResponse:
        return self.render(
            request, "error.html", status, session, status_code=status, code=code, title=title, message=message
        )


def digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
