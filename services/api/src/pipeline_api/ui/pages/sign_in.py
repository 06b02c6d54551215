"""Signing in and out, and the page's static files: the public pages."""

# No `from __future__ import annotations`: the pages annotate with dependencies made by create_ui_app,
# which FastAPI could not resolve from a string.

import logging
import time

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline_shared.errors import (
    AccessRefused,
    AuthenticationUnavailable,
)

from ...auth.authenticator import Authenticator, audit_fields, audit_refusal
from ..asking import MAX_CREDENTIAL_LENGTH, field, form_of, refuse_cross_site, safe_next
from ..context import Ui
from ..rendering import STATIC_FILES
from ..sessions import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_FORM_SECONDS,
    clear_cookie,
    set_cookie,
)
from ..sign_outs import SignOuts

logger = logging.getLogger("pipeline_api.ui")


def add_pages(ui: Ui) -> None:
    """Add these pages to the web page's app."""
    settings, pages, cookies, public = ui.settings, ui.pages, ui.cookies, ui.public

    # ── signing in and out ──

    def sign_in_form(
        request: Request, status: int = 200, *, problem: str | None = None, next_url: str = "/ui/"
    ) -> Response:
        token, cookie = cookies.new_sign_in_token()
        notice = request.query_params.get("reason") if status == 200 else None
        signed_out = request.query_params.get("signed_out") == "1"
        response = pages.render(
            request,
            "sign_in.html",
            status,
            problem=problem,
            notice=notice[:300] if notice else None,
            signed_out=signed_out,
            sign_in_token=token,
            next_url=safe_next(next_url),
            oidc=settings.OIDC_ISSUER is not None,
        )
        set_cookie(response, request, SIGN_IN_COOKIE, cookie, SIGN_IN_FORM_SECONDS)
        return response

    @public("/sign-in", "GET")
    async def sign_in_page(request: Request) -> Response:
        return sign_in_form(request, next_url=request.query_params.get("next", "/ui/"))

    @public("/sign-in", "POST")
    async def sign_in(request: Request) -> Response:
        await refuse_cross_site(request, None)
        form = await form_of(request)
        next_url = safe_next(field(form, "next"))
        if not cookies.sign_in_token_matches(request.cookies.get(SIGN_IN_COOKIE), field(form, "sign_in_token")):
            return sign_in_form(
                request,
                403,
                problem="This sign-in form has expired or was not sent by this page; it has been renewed: "
                "sign in again.",
                next_url=next_url,
            )
        credential = field(form, "credential")
        if not credential:
            return sign_in_form(request, 401, problem="Enter an API key or an OIDC access token.", next_url=next_url)
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            return sign_in_form(
                request,
                401,
                problem=f"That is longer than any credential accepted here ({MAX_CREDENTIAL_LENGTH} characters).",
                next_url=next_url,
            )
        authenticator: Authenticator = request.app.state.authenticator
        try:
            signed = await authenticator.sign_in(credential)
        except AuthenticationUnavailable as exc:
            return sign_in_form(request, 503, problem=exc.message, next_url=next_url)
        except AccessRefused as exc:
            audit_refusal(request, exc, None, exc.message)
            return sign_in_form(request, 401, problem=f"Not signed in: {exc.message}.", next_url=next_url)
        session = cookies.new_session(signed)
        logger.info("signed in to the web page", extra={"fields": audit_fields(session.principal)})
        response = RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"})
        set_cookie(response, request, SESSION_COOKIE, cookies.dump(session), session.expires_at - int(time.time()))
        clear_cookie(response, request, SIGN_IN_COOKIE)
        return response

    @public("/sign-out", "POST")
    async def sign_out(request: Request) -> Response:
        # Public so that any session, whatever its scopes, can end; the CSRF token is checked all the same.
        session = cookies.load(request.cookies.get(SESSION_COOKIE))
        await refuse_cross_site(request, session)
        if session is not None:
            # On the server, before the cookie goes: a copy of it is refused from now on, by every replica.
            sign_outs: SignOuts = request.app.state.sign_outs
            await sign_outs.end(session.session_id, session.expires_at)
            logger.info("signed out of the web page", extra={"fields": audit_fields(session.principal)})
        response = RedirectResponse("/ui/sign-in?signed_out=1", status_code=303, headers={"Cache-Control": "no-store"})
        clear_cookie(response, request, SESSION_COOKIE)
        return response

    @public("/static/{name:path}", "GET")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise StarletteHTTPException(404)
        return Response(
            pages.static[name],
            media_type=STATIC_FILES[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"},
        )
