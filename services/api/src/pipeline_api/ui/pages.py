"""The web page's routes: a FastAPI app of its own, mounted at ``/ui`` on the gateway's main listener only.

Why an app of its own: its pages authenticate by session cookie, not by
bearer credential, and every refusal is an HTML page for a person rather
than the JSON API's error document. It keeps the gateway's rules in its own
terms: every page needs a signed-in session (:func:`signed_in`, the app's
default dependency) unless it is made a :class:`PublicPage` (sign-in,
sign-out, the static files; the set is pinned by a test), and every other
page must name the scope it needs (checked when the app is built, by the
same check as the JSON API's). Access to a pipeline is decided exactly as
the JSON API decides it (:func:`pipeline_api.domain.access.visible`), and a start is
checked by the same code (:func:`pipeline_api.domain.access.checked_start`).

State-changing requests (start, cancel, repair, abandon, sign-out) are POSTs
and are refused before anything is read unless they carry the session's CSRF
token and do not come from another site (:mod:`.sessions`). Each records who
made it, exactly as the JSON API does. Sign-out is recorded on the server
(:mod:`.sign_outs`), and every request's session is checked against it. Every action
goes through a confirmation page of its own (a real page, so it works with
the keyboard and without JavaScript).

Live updates: the changing part of a page polls a fragment every
:data:`POLL_SECONDS` with htmx; the fragment's URL carries a digest of what
the page shows, and the server answers 204 (htmx swaps nothing) while it is
unchanged, so the page neither flickers nor loses the keyboard's focus. A
pipeline's page stops polling once it is final.
"""

# No `from __future__ import annotations`: the routes annotate with dependencies made inside create_ui_app,
# which FastAPI could not resolve from a string.

import contextlib
import hashlib
import importlib.resources
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pipeline_shared.catalogue import Job, UnknownJob
from pipeline_shared.errors import (
    AccessRefused,
    AuthenticationUnavailable,
    InsufficientScope,
    InvalidCredentials,
    InvalidListQuery,
    PipelineConflict,
    PipelineError,
)
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import PIPELINE_ID, PipelineState

from ..auth.authenticator import Authenticator, audit_fields, audit_refusal
from ..auth.principals import Principal, Scope
from ..domain.access import InvalidRequest, may_start, visible
from ..domain.access import checked_start as checked_by_the_domain
from ..domain.commands import OwnedPipeline, StartRequest
from ..domain.pipelines import Pipelines
from ..index.cursor import ListQuery
from ..schemas import PipelineEvent, PipelineRequest, PipelineStatus
from ..settings import GatewaySettings
from . import views
from .sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_FORM_SECONDS,
    Session,
    SessionCookies,
    clear_cookie,
    cross_site_problem,
    csrf_problem,
    set_cookie,
)
from .sign_outs import SignOuts

logger = logging.getLogger("pipeline_api.ui")

#: How often a live part of a page asks whether it changed.
POLL_SECONDS = 2
#: Pipelines per page of the list, unless the address asks for another number (1-200).
PAGE_SIZE = 25
#: Longer than any API key or OIDC access token; a longer one is refused unread.
MAX_CREDENTIAL_LENGTH = 8192
#: Longest cursor or filter value accepted from an address.
MAX_QUERY_VALUE_LENGTH = 512
#: A form has a few dozen fields at most.
MAX_FORM_FIELDS = 200
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
#: The actions a pipeline's page offers, what each needs, and how each is told.
ACTIONS = {
    "cancel": "Cancel",
    "repair": "Repair",
    "abandon": "Abandon",
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


def _page_allowed(signed_in: Callable[..., Awaitable[Session]], scope: Scope) -> Callable[..., Awaitable[Session]]:
    async def session_with_scope(request: Request, session: Annotated[Session, Depends(signed_in)]) -> Session:
        if not session.principal.allows(scope):
            refusal = InsufficientScope(scope.value)
            audit_refusal(request, refusal, session.principal, f"lacks the {scope.value} scope")
            raise RequestRefused(
                403,
                refusal.code,
                "Not allowed",
                f"This needs the {scope.value!r} scope, which {session.principal.id} does not have.",
            )
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


# ── the list ─────────────────────────────────────────────────────────────────


def _parse_moment(value: str, name: str, problems: dict[str, str]) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        problems[name] = f"“{value[:40]}” is not a date and time; use the picker, or e.g. 2026-12-01T15:00"
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _list_filters(request: Request, settings: GatewaySettings) -> tuple[dict[str, Any], dict[str, str]]:
    """The list's filters from the address, and a problem per filter that is not valid."""
    params = request.query_params
    problems: dict[str, str] = {}
    for name, value in params.multi_items():
        if len(value) > MAX_QUERY_VALUE_LENGTH:
            raise RequestRefused(
                422, "invalid_request", "This address is not valid", f"{name} is over {MAX_QUERY_VALUE_LENGTH} long"
            )
    known = {state.value for state in PipelineState}
    states = [s for s in params.getlist("state") if s]
    if unknown := [s for s in states if s not in known]:
        problems["state"] = f"no state {', '.join(unknown)}; the states are {', '.join(sorted(known))}"
    job = params.get("job", "").strip() or None
    if job is not None and job not in settings.catalogue.jobs:
        problems["job"] = str(UnknownJob(job, sorted(settings.catalogue.jobs)))
    after = _parse_moment(params.get("created_after", "").strip(), "created_after", problems)
    before = _parse_moment(params.get("created_before", "").strip(), "created_before", problems)
    limit_text = params.get("limit", "").strip()
    limit = PAGE_SIZE
    if limit_text:
        if limit_text.isdigit() and 1 <= int(limit_text) <= 200:
            limit = int(limit_text)
        else:
            problems["limit"] = "a page holds 1 to 200 pipelines"
    filters = {
        "states": [s for s in states if s in known],
        "job": job if "job" not in problems else None,
        "created_after": after,
        "created_before": before,
        "limit": limit,
        "cursor": params.get("cursor") or None,
    }
    return filters, problems


def _list_url(path: str, filters: dict[str, Any], **changes: Any) -> str:
    merged = filters | changes
    query: list[tuple[str, str]] = [("state", s) for s in merged["states"]]
    for name in ("job", "cursor"):
        if merged.get(name):
            query.append((name, merged[name]))
    for name in ("created_after", "created_before"):
        if merged.get(name):
            query.append((name, merged[name].isoformat()))
    if merged["limit"] != PAGE_SIZE:
        query.append(("limit", str(merged["limit"])))
    for name, value in changes.items():
        if name == "version" and value:
            query.append(("version", value))
    return path + ("?" + urlencode(query) if query else "")


async def _pipeline_page(request: Request, session: Session, filters: dict[str, Any]) -> Any | None:
    """A page of the index for the session's principal; None when there is no index."""
    index = request.app.state.index
    if index is None:
        return None
    query = ListQuery(
        states=frozenset(PipelineState(s) for s in filters["states"]),
        job=filters["job"],
        created_after=filters["created_after"],
        created_before=filters["created_before"],
        limit=filters["limit"],
        cursor=filters["cursor"],
    )
    try:
        return await index.page(session.principal, query)
    except InvalidListQuery as exc:
        # A cursor the index did not make, or filters that cannot hold together.
        raise RequestRefused(422, "invalid_request", "This list cannot be shown", exc.message) from None


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


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
    version = _digest(status.state, status.updated_at, [(e.seq, e.kind) for e in events or []])
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
        "live": not status.state.is_final,
    }


# ── starting ─────────────────────────────────────────────────────────────────


async def _visible(request: Request, principal: Principal, pipeline_id: str) -> OwnedPipeline:
    return await visible(request.app.state.pipelines, principal, pipeline_id, partial(audit_refusal, request))


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


# ── the app ──────────────────────────────────────────────────────────────────


def create_ui_app(gateway: FastAPI, status_of: Callable[[PipelineError], int]) -> FastAPI:
    """The web page, sharing the gateway's state (its Pipelines, Authenticator, settings and index)."""
    settings: GatewaySettings = gateway.state.settings
    pages = Pages()
    cookies = SessionCookies(settings.UI_SESSION_SECRET.get_secret_value())
    signed_in = _session_dependency(cookies)
    reader = Annotated[Session, Depends(_page_allowed(signed_in, Scope.READ))]
    starter = Annotated[Session, Depends(_page_allowed(signed_in, Scope.START))]
    canceller = Annotated[Session, Depends(_page_allowed(signed_in, Scope.CANCEL))]

    app = FastAPI(
        title="Pipelines web page",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(signed_in)],
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

    # ── the list ──

    async def list_context(request: Request, session: Session) -> tuple[dict[str, Any], int]:
        filters, problems = _list_filters(request, settings)
        page = None if problems else await _pipeline_page(request, session, filters)
        items = page.items if page is not None else []
        version = _digest([(p.id, p.state, p.updated_at) for p in items], page.total if page else None)
        context = {
            "filters": filters,
            "problems": problems,
            "page": page,
            "index_available": request.app.state.index is not None,
            "states": [state.value for state in PipelineState],
            "jobs": sorted(settings.catalogue.jobs),
            "next_url": _list_url("/ui/", filters, cursor=page.next_cursor) if page and page.next_cursor else None,
            "first_url": _list_url("/ui/", filters, cursor=None) if filters["cursor"] else None,
            "fragment_url": _list_url("/ui/fragments/pipelines", filters, version=version),
            "version": version,
            "admin": session.principal.allows(Scope.ADMIN),
        }
        return context, 422 if problems else 200

    @app.get("/")
    async def pipeline_list(request: Request, session: reader) -> Response:
        context, status = await list_context(request, session)
        return pages.render(request, "list.html", status, session, **context)

    @app.get("/fragments/pipelines")
    async def pipeline_list_fragment(request: Request, session: reader) -> Response:
        context, status = await list_context(request, session)
        if request.query_params.get("version") == context["version"]:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return pages.render(request, "_list_table.html", status, session, **context)

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

    return app
