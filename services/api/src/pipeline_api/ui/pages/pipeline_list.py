"""The list of pipelines: filters from the address, a page of the index, the table's live fragment."""

# No `from __future__ import annotations`: the pages annotate with dependencies made by create_ui_app,
# which FastAPI could not resolve from a string.

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response

from pipeline_shared.catalogue import UnknownJob
from pipeline_shared.errors import InvalidListQuery
from pipeline_shared.models import PipelineState

from ...auth.principals import Scope
from ...index.cursor import ListQuery
from ...settings import GatewaySettings
from ..context import Ui
from ..rendering import RequestRefused, digest
from ..sessions import Session

logger = logging.getLogger("pipeline_api.ui")


#: Pipelines per page of the list, unless the address asks for another number (1-200).
PAGE_SIZE = 25
#: Longest cursor or filter value accepted from an address.
MAX_QUERY_VALUE_LENGTH = 512

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


def add_pages(ui: Ui) -> None:
    """Add these pages to the web page's app."""
    settings, pages, app, reader = ui.settings, ui.pages, ui.app, ui.reader

    # ── the list ──

    async def list_context(request: Request, session: Session) -> tuple[dict[str, Any], int]:
        filters, problems = _list_filters(request, settings)
        page = None if problems else await _pipeline_page(request, session, filters)
        items = page.items if page is not None else []
        version = digest([(p.id, p.state, p.updated_at) for p in items], page.total if page else None)
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
