"""The list's query and its cursor: which pipelines a principal may list, and where the next page starts.

A cursor is a position in the list's newest-first order, tied to the query it was given for (see
:func:`_query_check`); it grants nothing, since the principal's visibility and the filters apply
whatever it says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter, ValidationError

from pipeline_shared.errors import InvalidListQuery
from pipeline_shared.models import PIPELINE_ID, PipelineState, StepName

from ..auth.principals import Principal, Scope

#: Hex digits of a cursor's check (:func:`_query_check`): enough that a cursor made up or edited never passes by chance.
CURSOR_CHECK_LENGTH = 24


#: What ``awaiting`` may ask for: pipelines waiting at an approval gate, or with a run waiting for repair.
AWAITING = ("approval", "repair")
#: A step's name as a filter may give it: a name steps may have.
_STEP_NAME = TypeAdapter(StepName)


@dataclass(frozen=True)
class ListQuery:
    states: frozenset[PipelineState] = frozenset()
    job: str | None = None
    #: Only pipelines with a step of this name (a job step's name, a gate's, an email's subject).
    step: str | None = None
    #: Only pipelines waiting for a person: ``approval`` (a gate is open) or ``repair`` (a run awaits repair).
    awaiting: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def _filters(principal: Principal, query: ListQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE clause for what ``principal`` may see of ``query``'s filters."""
    clauses: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {}
    if Scope.ADMIN not in principal.scopes:
        clauses.append(sql.SQL("owner = %(owner)s"))
        params["owner"] = principal.id
    if query.states:
        clauses.append(sql.SQL("state = ANY(%(states)s)"))
        params["states"] = sorted(state.value for state in query.states)
    if query.job is not None:
        clauses.append(sql.SQL("job = %(job)s"))
        params["job"] = query.job
    if query.step is not None:
        try:
            _STEP_NAME.validate_python(query.step)
        except ValidationError:
            raise InvalidListQuery(
                "step: a step's name is 1 to 80 letters, digits, spaces, dots, underscores or hyphens"
            ) from None
        clauses.append(sql.SQL("steps @> %(step)s"))
        params["step"] = Jsonb([{"name": query.step}])
    if query.awaiting is not None:
        if query.awaiting not in AWAITING:
            raise InvalidListQuery(f"awaiting: one of {', '.join(AWAITING)}")
        waiting = f"awaiting_{query.awaiting}"
        # A pipeline's state names one wait; its steps tell every one (a run awaiting repair beside an open gate).
        clauses.append(sql.SQL("(state = %(awaiting)s OR steps @> %(awaiting_step)s)"))
        params |= {"awaiting": waiting, "awaiting_step": Jsonb([{"state": waiting}])}
    if query.created_after is not None:
        clauses.append(sql.SQL("created_at >= %(created_after)s"))
        params["created_after"] = query.created_after
    if query.created_before is not None:
        clauses.append(sql.SQL("created_at < %(created_before)s"))
        params["created_before"] = query.created_before
    return sql.SQL(" AND ").join(clauses), params


def _query_check(principal: Principal, query: ListQuery, created: str, pipeline_id: str) -> str:
    """What ties a cursor to the list it was issued for: whose, of which states, job and steps, after which row.

    A digest, not a signature: a cursor grants nothing (the principal's
    visibility and the filters apply whatever it says), so the check only has
    to tell a cursor this list was given from anything else (another list's,
    edited, or made up) and no secret is needed for that. The page size and
    the time window are left out: a client may change them between pages (the
    CLI turns ``--created-after 1h`` into a new time at every call), and a
    position in the newest-first order means the same whatever they are.
    """
    facts: list[Any] = [principal.id, sorted(state.value for state in query.states), query.job, created, pipeline_id]
    # Filters that came later count only when given, so a cursor given before them still reads.
    facts += [{"step": query.step}] if query.step is not None else []
    facts += [{"awaiting": query.awaiting}] if query.awaiting is not None else []
    document = json.dumps(facts, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()[:CURSOR_CHECK_LENGTH]


def _encode_cursor(principal: Principal, query: ListQuery, row: dict[str, Any]) -> str:
    """Where the next page starts: after this row, in the list's order. Opaque to clients."""
    created = row["created_at"].isoformat()
    check = _query_check(principal, query, created, row["id"])
    document = json.dumps([created, row["id"], check], separators=(",", ":"))
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def _decode_cursor(principal: Principal, query: ListQuery, cursor: str) -> tuple[datetime, str]:
    """The row a cursor this query was given starts after; InvalidListQuery for anything else.

    Checked whole before anything reaches the database: a NUL or a lone
    surrogate in a made-up cursor would otherwise fail there as a 500.
    """
    refusal = InvalidListQuery(
        "cursor: not a cursor this gateway gave for this query; pass next_cursor as it came, with the same filters"
    )
    try:
        created, pipeline_id, check = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise refusal from None
    if (
        not isinstance(pipeline_id, str)
        or not PIPELINE_ID.fullmatch(pipeline_id)
        or moment.tzinfo is None
        or not isinstance(check, str)
        or not hmac.compare_digest(check.encode(), _query_check(principal, query, created, pipeline_id).encode())
    ):
        raise refusal
    return moment, pipeline_id
