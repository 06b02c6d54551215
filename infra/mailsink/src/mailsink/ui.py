"""The sink's own web page: the mail received, read as a mail client shows it.

Development only, like the sink itself. Pages are rendered on the server from
the same store the JSON API reads, and the list and each message link their
JSON twin (``/messages`` and ``/messages/{number}``), so what a person sees
and what a test asserts are the same data. No JavaScript: lists, filters and threads are links and a
GET form, and live refresh is a ``<meta http-equiv="refresh">`` toggled by a
query parameter.

Mail is hostile input. Every value goes through Jinja's autoescaping, and an
HTML body is shown only inside ``<iframe sandbox srcdoc=...>``: an empty
``sandbox`` gives the frame an opaque origin and no scripts, forms, popups or
top-level navigation. The pages' Content-Security-Policy forbids scripts too,
and a ``srcdoc`` document inherits it, so an email's remote images and style
sheets are not fetched either (as a careful mail client would not).

What this module must not do: change the store, or read anything but it.

Refusals here are pages for a person (404, 422), with the same ``code`` the
JSON API would give; the API's own errors stay JSON.
"""

from __future__ import annotations

import base64
import importlib.resources
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Annotated
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from mailsink.api import validation_problems
from mailsink.store import (
    MESSAGE_ID_PATTERN,
    MailStore,
    MessageFilter,
    StoredMessage,
    message_ids,
    normalise_message_id,
)
from mailsink.threads import conversation_of, conversations

#: Scripts nowhere (the pages need none, and an email's never run); styles
#: inline too, because email HTML carries its styles inline; images only from
#: the email itself (data: URLs), never from a sender's server nor, through a
#: relative URL, from this one.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Sent with every page: the policy above, no MIME sniffing, no Referer
#: carrying a pipeline id or Message-ID away, and always the store as it is now.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: The sink's icon. Linked from each page as a data: URL, the only images the
#: policy above allows, and answered at /favicon.ico, where browsers look unasked.
ICON_FILE = "static/favicon.svg"
#: The one refresh interval the list offers; any other can be typed in the URL.
DEFAULT_REFRESH_SECONDS = 5
#: Longer than any pipeline id or header a test would filter by.
MAX_FILTER_LENGTH = 256
#: RFC 5322's line limit; no Message-ID is longer.
MAX_MESSAGE_ID_LENGTH = 998

PipelineQuery = Annotated[
    str | None, Query(max_length=MAX_FILTER_LENGTH, description="The X-Pipeline-Id header.")
]
RefreshQuery = Annotated[
    int | None, Query(ge=1, le=3600, description="Reload the page every so many seconds.")
]


def icon() -> bytes:
    return importlib.resources.files("mailsink").joinpath(ICON_FILE).read_bytes()


def sent_at(message: StoredMessage) -> datetime:
    """When ``message`` says it was sent (its Date header), in UTC; when it arrived if it says nothing readable."""
    try:
        moment = parsedate_to_datetime(message.header("Date") or "")
    except (TypeError, ValueError):
        return message.received_at.astimezone(UTC)
    # A Date without a zone (RFC 5322's -0000) is read as UTC, as the rest of the page is.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mailsink", "templates"),
        # Every template, whatever its name: a page that forgets to escape
        # is the one bug this page must not have.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["sent_at"] = sent_at
    environment.globals["icon_url"] = "data:image/svg+xml;base64," + base64.b64encode(icon()).decode()
    return environment


def _list_url(*, pipeline: str | None = None, refresh: int | None = None) -> str:
    query = urlencode({k: v for k, v in (("pipeline", pipeline), ("refresh", refresh)) if v})
    return f"/ui?{query}" if query else "/ui"


class Pages:
    """Renders the sink's pages from its templates, with the pages' headers."""

    def __init__(self) -> None:
        self._templates = _environment()
        self.stylesheet = (
            importlib.resources.files("mailsink").joinpath("static/ui.css").read_bytes()
        )

    def render(self, template: str, status: int = 200, **context: object) -> HTMLResponse:
        context.setdefault("refresh", None)
        html = self._templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def error(self, status: int, code: str, title: str, message: str) -> HTMLResponse:
        return self.render(
            "error.html", status, status_code=status, code=code, title=title, message=message
        )


def _page_route_class(pages: Pages) -> type[APIRoute]:
    class PageRoute(APIRoute):
        """A route whose invalid input is answered with a 422 page, not JSON."""

        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def page_handler(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return pages.error(
                        422,
                        "invalid_request",
                        "This address is not valid",
                        validation_problems(exc),
                    )

            return page_handler

    return PageRoute


def create_ui_router(store: MailStore) -> APIRouter:
    """The pages under ``/ui`` over one sink's store."""
    pages = Pages()
    router = APIRouter(prefix="/ui", route_class=_page_route_class(pages), include_in_schema=False)

    def missing(title: str, which: str) -> HTMLResponse:
        return pages.error(
            404,
            "message_not_found",
            title,
            f"No message {which} is stored. It may not have arrived yet, or have been "
            "dropped to keep the store within its limits.",
        )

    @router.get("")
    async def message_list(
        pipeline: PipelineQuery = None, refresh: RefreshQuery = None
    ) -> Response:
        pipeline = (pipeline or "").strip() or None
        shown = store.find(MessageFilter(pipeline_id=pipeline))
        return pages.render(
            "list.html",
            conversations=conversations(shown),
            count=len(shown),
            pipeline=pipeline,
            refresh=refresh,
            filter_url=_list_url,
            default_refresh=DEFAULT_REFRESH_SECONDS,
            refresh_url=_list_url(
                pipeline=pipeline, refresh=None if refresh else DEFAULT_REFRESH_SECONDS
            ),
            json_url="/messages" + (f"?{urlencode({'pipeline_id': pipeline})}" if pipeline else ""),
        )

    @router.get("/messages/{number}")
    async def message_page(number: int) -> Response:
        message = store.get(number)
        if message is None:
            return missing(f"No message {number}", str(number))

        def linked(header: str) -> list[tuple[str, int | None]]:
            """The Message-IDs in ``header``, each with its stored number if any."""
            return [
                (i, stored.id if (stored := store.get_by_message_id(i)) else None)
                for i in message_ids(message.header(header))
            ]

        conversation = conversation_of(message, store.all())
        return pages.render(
            "message.html",
            message=message,
            in_reply_to=linked("In-Reply-To"),
            references=linked("References"),
            thread=conversation.messages if conversation.is_thread else [],
            pipeline_url=_list_url(pipeline=message.pipeline_id) if message.pipeline_id else None,
        )

    @router.get("/by-message-id/{message_id:path}")
    async def by_message_id(message_id: str) -> Response:
        wanted = normalise_message_id(message_id)
        if len(wanted) > MAX_MESSAGE_ID_LENGTH or not MESSAGE_ID_PATTERN.fullmatch(wanted):
            given = message_id if len(message_id) <= 120 else f"{message_id[:120]}…"
            return pages.error(
                422,
                "invalid_message_id",
                "Not a Message-ID",
                f"“{given}” is not a Message-ID. One looks like <left@right> (angle brackets "
                "optional; URL-encoded %3Cleft%40right%3E), with no spaces, at most "
                f"{MAX_MESSAGE_ID_LENGTH} characters.",
            )
        message = store.get_by_message_id(wanted)
        if message is None:
            return missing("No such message", f"with Message-ID {wanted}")
        return RedirectResponse(
            f"/ui/messages/{message.id}", status_code=303, headers={"Cache-Control": "no-store"}
        )

    @router.get("/static/ui.css")
    async def stylesheet() -> Response:
        return Response(
            pages.stylesheet, media_type="text/css", headers={"X-Content-Type-Options": "nosniff"}
        )

    @router.get("/{rest:path}")
    async def unknown_page(rest: str, request: Request) -> Response:
        if not rest:  # /ui/, as people type it
            query = request.url.query
            return RedirectResponse(f"/ui?{query}" if query else "/ui", status_code=308)
        return pages.error(
            404, "page_not_found", "No such page", f"There is no page at /ui/{rest}."
        )

    return router


def create_icon_router() -> APIRouter:
    """``/favicon.ico``: the sink's icon, for a browser that asks for it unasked."""
    router = APIRouter(include_in_schema=False)
    served = icon()

    @router.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(
            served,
            media_type="image/svg+xml",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"},
        )

    return router
