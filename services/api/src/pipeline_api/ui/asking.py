"""Who is asking, and is the request theirs: the session every page needs, the scope a page needs,
the CSRF token and same-site check of every POST, and reading a form.
"""

# No `from __future__ import annotations`: a page's scope dependency annotates with the session
# dependency it is made with, which FastAPI could not resolve from a string.

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from pipeline_shared.errors import (
    InsufficientScope,
    InvalidCredentials,
)

from ..auth.authenticator import Authenticator, audit_refusal
from ..auth.principals import Scope
from .rendering import RequestRefused, SignInRequired
from .sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Session,
    SessionCookies,
    cross_site_problem,
    csrf_problem,
)
from .sign_outs import SignOuts

logger = logging.getLogger("pipeline_api.ui")


#: Longer than any API key or OIDC access token; a longer one is refused unread.
MAX_CREDENTIAL_LENGTH = 8192
#: A form has a few dozen fields at most.
MAX_FORM_FIELDS = 200


def _to_sign_in(request: Request, reason: str | None) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": here if request.method == "GET" else "/ui/"}
    if reason:
        query["reason"] = reason
    target = "/ui/sign-in?" + urlencode(query)
    if request.headers.get("hx-request"):
        # A fragment's request: htmx would swap the sign-in page into the fragment; send the whole page there.
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this page, never another site."""
    if not target or len(target) > 2000 or "\\" in target or any(ord(c) < 0x20 for c in target):
        return "/ui/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not (parts.path == "/ui" or parts.path.startswith("/ui/")):
        return "/ui/"
    return target


# ── who is asking ────────────────────────────────────────────────────────────


async def form_of(request: Request) -> dict[str, list[str]]:
    """The request's urlencoded form, read once (BodyLimit bounds it); RequestRefused if it is not one."""
    if not hasattr(request.state, "ui_form"):
        if not _is_form(request):
            raise RequestRefused(415, "unsupported_media_type", "Not a form", "Send the page's form as it is.")
        try:
            text = (await request.body()).decode("utf-8")
            request.state.ui_form = parse_qs(
                text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
            )
        except (UnicodeDecodeError, ValueError):
            raise RequestRefused(
                400, "invalid_form", "The form could not be read", "Send the page's form as it is, in UTF-8."
            ) from None
    return request.state.ui_form


def _is_form(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/x-www-form-urlencoded"


def field(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[-1].strip() if values else ""


def _session_dependency(cookies: SessionCookies) -> Callable[..., Awaitable[Session]]:
    async def signed_in(request: Request) -> Session:
        """The session, re-checked against the keys file; refused cross-site requests before anything else."""
        if request.method not in ("GET", "HEAD"):
            await refuse_cross_site(request, None)
        session = cookies.load(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise SignInRequired()
        sign_outs: SignOuts = request.app.state.sign_outs
        if await sign_outs.ended(session.session_id):
            raise SignInRequired("That session was signed out: sign in again.")
        authenticator: Authenticator = request.app.state.authenticator
        try:
            principal = authenticator.still_signed_in(session.principal, session.key_digest, session.method)
        except InvalidCredentials as exc:
            raise SignInRequired(f"Signed out: {exc.message}. Sign in again.") from None
        session = replace(session, principal=principal)
        if request.method not in ("GET", "HEAD"):
            await refuse_cross_site(request, session)
        return session

    signed_in.checks_session = True  # type: ignore[attr-defined]  # what PublicPage takes off
    return signed_in


async def refuse_cross_site(request: Request, session: Session | None) -> None:
    """RequestRefused (403) for a state-changing request from another site, or without the session's CSRF token."""
    problem = cross_site_problem(request)
    if problem is None and session is not None:
        sent = request.headers.get(CSRF_HEADER)
        if not sent and _is_form(request):
            sent = field(await form_of(request), CSRF_FIELD)
        problem = csrf_problem(session, sent)
    if problem is not None:
        raise RequestRefused(403, "csrf_refused", "Request refused", f"Nothing was done: {problem}.")


def _page_allowed(
    signed_in: Callable[..., Awaitable[Session]], scope: Scope, *alternatives: Scope
) -> Callable[..., Awaitable[Session]]:
    """A dependency: the signed-in session, if its scopes grant ``scope`` (or one of ``alternatives``)."""

    async def session_with_scope(request: Request, session: Annotated[Session, Depends(signed_in)]) -> Session:
        if not any(session.principal.allows(each) for each in (scope, *alternatives)):
            refusal = InsufficientScope(scope.value)
            audit_refusal(request, refusal, session.principal, f"lacks the {scope.value} scope")
            detail = f"This needs the {scope.value!r} scope, which {session.principal.id} does not have."
            if scope is Scope.READ and session.principal.allows(Scope.APPROVE):
                # Someone who may only approve comes here after signing in with no page to go to.
                detail += " You may decide the approvals you are asked for: open the link in their email."
            raise RequestRefused(403, refusal.code, "Not allowed", detail)
        return session

    session_with_scope.required_scope = scope  # type: ignore[attr-defined]  # read by create_app's check
    return session_with_scope


class PublicPage(APIRoute):
    """A page anyone may open: the app's session dependency is taken off it (sign-in, sign-out, static files)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["dependencies"] = [
            d for d in kwargs.get("dependencies") or () if not getattr(d.dependency, "checks_session", False)
        ]
        super().__init__(path, endpoint, **kwargs)
