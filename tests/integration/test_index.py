"""The pipeline index on the compose stack: lists, paging, filters, timelines, streams, and who sees what.

The index trails Resonate by a projection (docs/architecture.md, "The pipeline index"), so
a test waits for it to show a state rather than expecting it at once; what
it must never do is show a state the pipeline was not in, lose a pipeline,
or show one twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.stack import SERVICE_ROLES, Stack
from tests.support.stack_clients import (
    STEP_REPAIRED_BY_A_PERSON,
    Emulator,
    Gateway,
    MailSink,
    assert_timeline_tells,
    new_id,
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _traverse(gateway: Gateway, **params: Any) -> list[dict[str, Any]]:
    """Every item of every page, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = gateway.page(**params, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _wait_for_index(gateway: Gateway, expected: set[str], timeout: float = 30, **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = _traverse(gateway, limit=200, **params)
        if {item["id"] for item in items} >= expected:
            return items
        assert time.monotonic() < deadline, f"the index still lacks {expected - {i['id'] for i in items}}"
        time.sleep(0.2)


def _sse(response: httpx.Response, within: float = 60) -> Iterator[tuple[str, str | None, Any]]:
    """(event, id, data) for each message of a Server-Sent Events response; fails after ``within`` seconds.

    The deadline is checked at every line, keepalive comments included (one
    every 15 s), so a stream that never gets to what a test waits for fails it.
    """
    deadline = time.monotonic() + within
    event, last_id, data = "message", None, []
    for line in response.iter_lines():
        assert time.monotonic() < deadline, f"the stream did not get there within {within} s"
        if line == "":
            if data:
                yield event, last_id, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("id: "):
            last_id = line.removeprefix("id: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))


def test_paging_while_pipelines_start_misses_none_and_repeats_none(stack: Stack) -> None:
    """Cursor paging newest first: pipelines created meanwhile land before the cursor, never inside the pages."""
    lister = Gateway(stack.api_url, stack.keys.keys["lister"])
    since = _now()
    ids = [new_id("page") for _ in range(45)]
    started: list[str] = []

    def start_all() -> None:
        with ThreadPoolExecutor(max_workers=6) as pool:
            for pipeline_id, response in zip(ids, pool.map(lambda pid: lister.start(pid), ids), strict=True):
                assert response.status_code == 202, response.text
                started.append(pipeline_id)

    starter = threading.Thread(target=start_all)
    starter.start()
    traversals = 0
    while starter.is_alive() or traversals < 3:
        visible = {item["id"] for item in lister.page(limit=200, created_after=since)["items"]}
        items = _traverse(lister, limit=7, created_after=since)
        seen = [item["id"] for item in items]
        assert len(seen) == len(set(seen)), f"shown twice across pages: {sorted(seen)}"
        assert visible <= set(seen), f"missed across pages: {visible - set(seen)}"
        order = [(item["created_at"], item["id"]) for item in items]
        assert order == sorted(order, reverse=True), "not newest first"
        traversals += 1
    starter.join()

    final = _wait_for_index(lister, set(ids), created_after=since)
    assert sorted(item["id"] for item in final) == sorted(ids)
    assert lister.page(limit=7, created_after=since)["total"] == len(ids)
    assert traversals >= 3


def test_filters_by_state_job_and_creation_time(gateway: Gateway, emulator: Emulator) -> None:
    since = _now()
    succeeded = [new_id("flt-ok") for _ in range(3)]
    failing = [new_id("flt-bad") for _ in range(2)]
    for pipeline_id in failing:
        emulator.plan(pipeline_id, notebook="fail")
    for pipeline_id in succeeded + failing:
        assert gateway.start(pipeline_id).status_code == 202
    middle = _now()
    nightly = new_id("flt-night")
    assert gateway.start(nightly, job="nightly-refresh").status_code == 202
    for pipeline_id in [*succeeded, nightly]:
        gateway.wait_for(pipeline_id, "succeeded")
    for pipeline_id in failing:
        gateway.wait_for(pipeline_id, "awaiting_repair")
    everything = {*succeeded, *failing, nightly}
    _wait_for_index(gateway, everything, created_after=since)

    def ids_of(**params: Any) -> set[str]:
        page = gateway.page(limit=200, created_after=since, **params)
        assert page["total"] == len(page["items"])
        return {item["id"] for item in page["items"]}

    # The index trails Resonate by a projection: wait for it to show what Resonate already does.
    deadline = time.monotonic() + 30
    while (ids_of(state="awaiting_repair"), ids_of(state="succeeded")) != (set(failing), {*succeeded, nightly}):
        assert time.monotonic() < deadline, (ids_of(state="awaiting_repair"), ids_of(state="succeeded"))
        time.sleep(0.2)
    assert ids_of(state=["succeeded", "awaiting_repair"]) == everything
    assert ids_of(job="nightly-refresh") == {nightly}
    assert ids_of(job="csv-statistics", state="succeeded") == set(succeeded)
    assert ids_of(created_before=middle) == set(succeeded + failing)
    assert ids_of(state="cancelled") == set()
    for pipeline_id in failing:
        gateway.http.post(f"/pipelines/{pipeline_id}/abandon")
        gateway.wait_for(pipeline_id, "failed")


def test_a_timeline_tells_what_happened_in_order_and_streams_to_the_end(gateway: Gateway, mail: MailSink) -> None:
    pipeline_id = new_id("timeline")
    # A source that is not there: the notebook fails, and a repair with the right one succeeds.
    assert (
        gateway.start(pipeline_id, parameters={"source": "/Workspace/Shared/pipelines/samples/missing.csv"}).status_code
        == 202
    )
    gateway.wait_for(pipeline_id, "awaiting_repair")

    with gateway.http.stream("GET", f"/pipelines/{pipeline_id}/events", params={"follow": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = _sse(response)
        streamed: list[dict[str, Any]] = []
        for _, _, data in messages:
            streamed.append(data)
            if data["kind"] == "email_delivered":
                break
        # A person repairs it, with the source fixed; the stream goes on to the end.
        repaired = gateway.http.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": {"source": ""}})
        assert repaired.status_code == 202, repaired.text
        for event, position, data in messages:
            if event == "end":
                assert data == {"pipeline_id": pipeline_id, "state": "succeeded"}
                break
            assert event == "timeline"
            assert int(position) >= data["seq"]
            streamed.append(data)

    doc = gateway.status(pipeline_id)
    timeline = gateway.timeline(pipeline_id)
    assert timeline["events"] == streamed
    assert_timeline_tells(doc, streamed)
    kinds = [event["kind"] for event in streamed]
    assert kinds == STEP_REPAIRED_BY_A_PERSON, kinds
    assert streamed[0]["data"] == {
        "by": "key:dev",
        "job": "csv-statistics",
        "parameters": {"source": "/Workspace/Shared/pipelines/samples/missing.csv"},
    }
    assert streamed[2]["data"]["run_id"] == doc["databricks"]["run_id"]
    assert streamed[6]["data"]["by"] == "key:dev" and streamed[6]["data"]["parameters"] == {"source": ""}
    assert streamed[-2]["data"]["message_id"] == doc["notification"]["message_id"]
    # Both emails arrived, the last being the one the timeline names.
    assert [m["message_id"] for m in mail.messages(pipeline_id)][-1:] == [doc["notification"]["message_id"]]

    # Resuming after an event gives exactly the events after it.
    cut = streamed[5]["seq"]
    with gateway.http.stream(
        "GET", f"/pipelines/{pipeline_id}/events?follow=true", headers={"last-event-id": str(cut)}
    ) as response:
        resumed = [data for event, _, data in _sse(response) if event == "timeline"]
    assert resumed == [event for event in streamed if event["seq"] > cut]
    # Resuming after the last event of a finished pipeline just ends.
    last = {"last-event-id": str(max(event["seq"] for event in streamed))}
    with gateway.http.stream("GET", f"/pipelines/{pipeline_id}/events?follow=true", headers=last) as response:
        ending = [(event, data) for event, _, data in _sse(response, within=10)]
    assert ending == [("end", {"pipeline_id": pipeline_id, "state": "succeeded"})]


def test_the_list_stream_tells_each_change_of_the_callers_pipelines_only(stack: Stack, gateway: Gateway) -> None:
    other = Gateway(stack.api_url, stack.keys.keys["other"])
    mine, theirs = new_id("stream-mine"), new_id("stream-theirs")
    # Started before the stream opens: the page's position makes the stream tell everything since.
    position = gateway.page(limit=1)["stream_position"]
    assert other.start(theirs).status_code == 202
    assert gateway.start(mine).status_code == 202
    seen: list[tuple[str, str, str]] = []
    headers = {"last-event-id": str(position)}
    with gateway.http.stream("GET", "/pipelines", params={"follow": "true"}, headers=headers) as response:
        assert response.status_code == 200
        for event, position_now, data in _sse(response):
            assert int(position_now) > position
            seen.append((data["id"], data["state"], event))
            if (mine, "succeeded", "pipeline") in seen:
                break
    assert {event for _, _, event in seen} == {"pipeline"}, seen
    # Each message is the pipeline as it then was: its states come in the order it went through them.
    lifecycle = ["starting", "waiting", "notifying", "succeeded"]
    states = [lifecycle.index(state) for pipeline_id, state, _ in seen if pipeline_id == mine]
    assert states == sorted(states) and states[-1] == 3, seen
    assert all(pipeline_id != theirs for pipeline_id, _, _ in seen), seen


def test_another_principals_pipelines_are_not_listed_timelined_or_streamed(stack: Stack, gateway: Gateway) -> None:
    other = Gateway(stack.api_url, stack.keys.keys["other"])
    admin = Gateway(stack.api_url, stack.keys.keys["admin"])
    since = _now()
    theirs = new_id("owned")
    assert other.start(theirs).status_code == 202
    other.wait_for(theirs, "succeeded")
    _wait_for_index(other, {theirs}, created_after=since)

    assert theirs not in {item["id"] for item in _traverse(gateway, limit=200, created_after=since)}
    assert theirs in {item["id"] for item in _traverse(admin, limit=200, created_after=since)}
    for path in (f"/pipelines/{theirs}/events", f"/pipelines/{theirs}/events?follow=true"):
        refused = gateway.http.get(path)
        assert refused.status_code == 404 and theirs in refused.json()["message"], refused.text
    assert admin.wait_for_timeline(theirs, "succeeded")["pipeline_id"] == theirs
    reader = Gateway(stack.api_url, stack.keys.keys["reader"])
    assert reader.page(limit=200, created_after=since)["items"] == []


@pytest.mark.parametrize(
    ("params", "headers", "named"),
    [
        ({"cursor": "not-a-cursor"}, {}, "cursor"),
        ({"cursor": "W10"}, {}, "cursor"),
        ({"state": "exploded"}, {}, "state"),
        ({"limit": "0"}, {}, "limit"),
        ({"limit": "201"}, {}, "limit"),
        ({"created_after": "yesterday"}, {}, "created_after"),
        ({"created_after": "2026-12-01T10:00:00"}, {}, "created_after"),
        ({"job": "not a job!"}, {}, "job"),
        ({"follow": "true"}, {"last-event-id": "twelve"}, "Last-Event-ID"),
    ],
)
def test_bad_list_queries_are_422_naming_what_is_wrong(
    gateway: Gateway, params: dict[str, str], headers: dict[str, str], named: str
) -> None:
    response = gateway.http.get("/pipelines", params=params, headers=headers)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert named in json.dumps(body), body


def test_listing_needs_credentials_and_the_read_scope(stack: Stack) -> None:
    anonymous = httpx.get(f"{stack.api_url}/pipelines", timeout=10)
    assert anonymous.status_code == 401
    refused = Gateway(stack.api_url, stack.keys.keys["starter"]).http.get("/pipelines")
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope", refused.text


def test_the_index_is_fed_inside_resonates_own_transactions(stack: Stack, gateway: Gateway) -> None:
    """A promise write whose transaction rolls back leaves no note; one that commits always leaves one."""
    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM pipelines.changes WHERE pipeline_id = 'rolled-back'").fetchone()
        with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
            conn.execute(
                "INSERT INTO resonate.promises (id, tags, timeout_at, created_at) "
                "VALUES ('rolled-back', '{\"resonate:origin\": \"rolled-back\"}', 0, 0)"
            )
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
        after = conn.execute("SELECT count(*) FROM pipelines.changes WHERE pipeline_id = 'rolled-back'").fetchone()
        assert before == after == (0,)
        migrations = conn.execute("SELECT version, name FROM pipelines.schema_migrations ORDER BY version").fetchall()
        assert migrations[0] == (1, "0001_pipeline_index")


def test_the_cli_lists_watches_and_tells_the_timeline_of_a_pipeline(stack: Stack, gateway: Gateway) -> None:
    """`pipelines list`, `watch` and `events` against the stack's gateway, as a script would run them."""
    pipeline_id, since = new_id("cli-watch"), _now()
    assert gateway.start(pipeline_id).status_code == 202
    cli = [sys.executable, "-m", "pipeline_client.cli", "--gateway", stack.api_url, "--json"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=120, env=os.environ)

    watched = run("watch", pipeline_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert (lines[-1]["event"], lines[-1]["data"]) == ("end", {"pipeline_id": pipeline_id, "state": "succeeded"})
    told = run("events", pipeline_id)
    assert told.returncode == 0, told.stderr
    timeline = json.loads(told.stdout)
    assert [e["kind"] for e in timeline["events"]][-1] == "finished"
    assert [line["data"] for line in lines if line["event"] == "timeline"] == timeline["events"]
    listed = run("list", "--all", "--created-after", since)
    assert listed.returncode == 0, listed.stderr
    assert pipeline_id in {item["id"] for item in json.loads(listed.stdout)["items"]}
    missing = run("events", "no-such-pipeline")
    assert missing.returncode == 2 and json.loads(missing.stderr)["error"]["status"] == 404


def test_only_the_gateways_role_reads_the_index_and_only_one_pipeline_at_a_time(stack: Stack) -> None:
    api, worker = SERVICE_ROLES["api"], SERVICE_ROLES["worker"]
    with psycopg.connect(stack.resonate_dsn(*api), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM pipelines.pipeline").fetchone()
        assert conn.execute("SELECT count(*) FROM pipelines.promises_of('no-such-pipeline')").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM resonate.promises LIMIT 1")
    with psycopg.connect(stack.resonate_dsn(*worker), autocommit=True) as conn:
        for forbidden in ("SELECT * FROM pipelines.pipeline", "SELECT * FROM pipelines.promises_of('x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
