"""The web page: a FastAPI app of its own, mounted at ``/ui`` on the gateway's main listener only.

Why an app of its own: its pages authenticate by session cookie, not by
bearer credential, and every refusal is an HTML page for a person rather
than the JSON API's error document. It keeps the gateway's rules in its own
terms: every page needs a signed-in session (:func:`.asking._session_dependency`, the app's
default dependency) unless it is made a :class:`PublicPage` (sign-in,
sign-out, the static files; the set is pinned by a test), and every other
page must name the scope it needs (checked when the app is built, by the
same check as the JSON API's). Access to a pipeline is decided exactly as
the JSON API decides it (:func:`pipeline_api.domain.access.visible`), and a start is
checked by the same code (:func:`pipeline_api.domain.access.checked_start`).

State-changing requests (start, cancel, repair, abandon, approve, reject, sign-out) are POSTs
and are refused before anything is read unless they carry the session's CSRF
token and do not come from another site (:mod:`.sessions`). Each records who
made it, exactly as the JSON API does. Sign-out is recorded on the server
(:mod:`.sign_outs`), and every request's session is checked against it. Every action
goes through a confirmation page of its own (a real page, so it works with
the keyboard and without JavaScript).

Live updates: the changing part of a page polls a fragment every
:data:`.rendering.POLL_SECONDS` with htmx; the fragment's URL carries a digest of what
the page shows, and the server answers 204 (htmx swaps nothing) while it is
unchanged, so the page neither flickers nor loses the keyboard's focus. A
pipeline's page stops polling once it is final.

This module assembles the app; each page lives in a module of its own under :mod:`.pages`.
"""

# No `from __future__ import annotations`: the routes annotate with dependencies made inside create_ui_app,
# which FastAPI could not resolve from a string.

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pipeline_shared.errors import PipelineError
from pipeline_shared.tracing import FASTAPI_TELEMETRY

from ..auth.principals import Scope
from ..settings import GatewaySettings
from .asking import PublicPage, _page_allowed, _session_dependency, _to_sign_in
from .context import Ui
from .pages import approvals, pipeline, pipeline_list, sign_in, start
from .rendering import Pages, RequestRefused, SignInRequired
from .sessions import (
    Session,
    SessionCookies,
)

logger = logging.getLogger("pipeline_api.ui")


def _page_route_class(pages: Pages, status_of: Callable[[PipelineError], int]) -> type[APIRoute]:
    class PageRoute(APIRoute):
        """A page whose every failure is a page: a redirect to sign in, or an error page naming what was wrong."""

        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def page_handler(request: Request) -> Response:
                try:
                    return await handler(request)
                except (StarletteHTTPException, ClientDisconnect):
                    raise  # the app's handlers answer these: a 404 page, or nobody (the client went away)
                except SignInRequired as exc:
                    return _to_sign_in(request, exc.reason)
                except RequestRefused as exc:
                    return pages.error(request, exc.status, exc.code, exc.title, exc.message)
                except RequestValidationError as exc:
                    problems = "; ".join(
                        f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('path', 'query'))}: {e.get('msg')}"
                        for e in exc.errors()
                    )
                    return pages.error(request, 422, "invalid_request", "This address is not valid", problems)
                except PipelineError as exc:
                    status = status_of(exc)
                    titles = {404: "No such pipeline", 403: "Not allowed", 409: "Not possible now"}
                    title = titles.get(status, "The gateway cannot do this right now")
                    response = pages.error(request, status, exc.code, title, exc.message)
                    if status == 503:
                        response.headers["Retry-After"] = "5"
                    return response
                except Exception:
                    logger.exception("the web page failed unexpectedly")
                    return pages.error(
                        request,
                        500,
                        "internal_error",
                        "Something went wrong",
                        "The gateway failed unexpectedly; nothing was changed that you were not told about. "
                        "Reload the page to try again.",
                    )

            return page_handler

    return PageRoute


def create_ui_app(gateway: FastAPI, status_of: Callable[[PipelineError], int]) -> FastAPI:
    """The web page, sharing the gateway's state (its Pipelines, Authenticator, settings and index)."""
    settings: GatewaySettings = gateway.state.settings
    pages = Pages()
    cookies = SessionCookies(settings.UI_SESSION_SECRET.get_secret_value())
    signed_in = _session_dependency(cookies)
    reader = Annotated[Session, Depends(_page_allowed(signed_in, Scope.READ))]
    starter = Annotated[Session, Depends(_page_allowed(signed_in, Scope.START))]
    canceller = Annotated[Session, Depends(_page_allowed(signed_in, Scope.CANCEL))]
    # One pipeline's page: with read, or with approve while one of its open gates names a scope held.
    pipeline_reader = Annotated[Session, Depends(_page_allowed(signed_in, Scope.READ, Scope.APPROVE))]

    app = FastAPI(
        title="Pipelines web page",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(signed_in)],
        telemetry=FASTAPI_TELEMETRY,  # ours are the spans (see pipeline_shared.tracing)
    )
    app.state = gateway.state
    page_route = _page_route_class(pages, status_of)
    public_page = type("PublicPageRoute", (PublicPage, page_route), {})
    app.router.route_class = page_route

    def public(path: str, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            app.router.add_api_route(path, endpoint, methods=[method], route_class_override=public_page)
            return endpoint

        return add

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return pages.error(
                request, 404, "page_not_found", "No such page", f"There is no page at {request.url.path}."
            )
        return pages.error(request, exc.status_code, "http_error", "Request refused", str(exc.detail))

    app.add_exception_handler(StarletteHTTPException, not_found)

    ui = Ui(app, settings, pages, cookies, reader, starter, canceller, pipeline_reader, public, status_of)
    # In this order: a gate's decisions and a pipeline's live fragment before its actions' /pipelines/{id}/{action}.
    for page in (sign_in, pipeline_list, approvals, pipeline, start):
        page.add_pages(ui)
    return app
