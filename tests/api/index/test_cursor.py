"""The index's list cursors, in process: what a cursor must be before any of it reaches the database.

Paging itself is tested on the stack (tests/integration/test_index.py); a
cursor is refused here before a query is made, so no database is needed.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from pipeline_api.auth.principals import Principal, Scope
from pipeline_api.index.cursor import ListQuery, _decode_cursor, _encode_cursor
from pipeline_shared.errors import InvalidListQuery
from pipeline_shared.models import PipelineState

ALICE = Principal("key", "alice", frozenset({Scope.READ}), key_id="alice")
BOB = Principal("key", "bob", frozenset({Scope.READ}), key_id="bob")
QUERY = ListQuery(states=frozenset({PipelineState.FAILED}), limit=10)
ROW = {"created_at": datetime(2026, 12, 1, 9, 30, tzinfo=UTC), "id": "csv-1"}


def encoded(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def test_a_cursor_leads_back_to_its_row_whatever_the_page_size_and_time_window() -> None:
    cursor = _encode_cursor(ALICE, QUERY, ROW)
    # As the CLI asks for `--created-after 1h` on two calls a few seconds apart.
    moved = ListQuery(states=QUERY.states, limit=50, created_after=datetime(2026, 12, 1, 8, 0, 5, tzinfo=UTC))

    assert _decode_cursor(ALICE, QUERY, cursor) == (ROW["created_at"], ROW["id"])
    assert _decode_cursor(ALICE, moved, cursor) == (ROW["created_at"], "csv-1")


def tampered() -> str:
    created, _, check = json.loads(base64.urlsafe_b64decode(_encode_cursor(ALICE, QUERY, ROW) + "=="))
    return encoded([created, "csv-2", check])


@pytest.mark.parametrize(
    ("what", "cursor", "principal", "query"),
    [
        ("a NUL in the id", lambda: encoded(["2026-12-01T09:30:00+00:00", "csv\x00", "0" * 24]), ALICE, QUERY),
        ("a lone surrogate", lambda: encoded(["2026-12-01T09:30:00+00:00", "\ud800", "0" * 24]), ALICE, QUERY),
        ("a NUL in the time", lambda: encoded(["2026-12-01T09:30:00\x00", "csv-1", "0" * 24]), ALICE, QUERY),
        ("random base64", lambda: base64.urlsafe_b64encode(bytes(range(40))).decode(), ALICE, QUERY),
        ("not base64", lambda: "!!!~~~", ALICE, QUERY),
        ("the format before checks", lambda: encoded(["2026-12-01T09:30:00+00:00", "csv-1"]), ALICE, QUERY),
        ("a naive time", lambda: encoded(["2026-12-01T09:30:00", "csv-1", "0" * 24]), ALICE, QUERY),
        ("a number for the id", lambda: encoded(["2026-12-01T09:30:00+00:00", 7, "0" * 24]), ALICE, QUERY),
        ("an edited row", tampered, ALICE, QUERY),
        ("another query's", lambda: _encode_cursor(ALICE, ListQuery(job="word-frequencies"), ROW), ALICE, QUERY),
        ("another principal's", lambda: _encode_cursor(BOB, QUERY, ROW), ALICE, QUERY),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_cursor_this_query_was_not_given_is_refused_before_the_database(
    what: str, cursor: object, principal: Principal, query: ListQuery
) -> None:
    with pytest.raises(InvalidListQuery) as refused:
        _decode_cursor(principal, query, cursor())  # type: ignore[operator]

    assert refused.value.code == "invalid_request"
    assert refused.value.message.startswith("cursor: not a cursor this gateway gave for this query")
