"""``pipelines list``, ``events``, ``watch``: the CLI against a contract-faithful fake gateway on loopback.

The routes they read (issue 14's index) are built in parallel with the CLI;
tests/client/fake_gateway.py serves the contract's documents and real event
streams, checks the bearer key and records what the CLI asked for.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from pipeline_client.cli import commands as cli
from tests.client.fake_gateway import FAKE_KEY, FakeGateway, FakeTimeline, summary, timeline_events
from tests.support.cli_runner import run_cli
from tests.support.loopback_server import loopback_socket, serving, url_of

OUTCOMES = [("succeeded", 0), ("failed", 1), ("cancelled", 4), ("timed_out", 5)]


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeGateway, list[str]]]:
    """The fake gateway, served, and the CLI's arguments that reach it."""
    gateway = FakeGateway()
    sock = loopback_socket()
    async with serving(gateway.app(), sock):
        yield gateway, ["--gateway", url_of(sock)]


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ── list ─────────────────────────────────────────────────────────────────────


async def test_list_all_follows_every_cursor_verbatim_and_misses_nothing(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    gateway.pipelines = [summary(n) for n in range(1, 8)]

    as_json = await run_cli(monkeypatch, FAKE_KEY, *address, "list", "--all", "--limit", "3", "--json")
    document = json.loads(capsys.readouterr().out)
    sent_cursors = [dict(seen.query).get("cursor") for seen in gateway.seen]
    one_page = await run_cli(monkeypatch, FAKE_KEY, *address, "--json", "list", "--limit", "3")
    first_page = json.loads(capsys.readouterr().out)
    table = await run_cli(monkeypatch, FAKE_KEY, *address, "list", "--all", "--limit", "3")
    printed = capsys.readouterr().out

    assert as_json == 0 and one_page == 0 and table == 0
    assert document == {"items": gateway.pipelines, "next_cursor": None, "total": 7}
    assert sent_cursors == [None, *gateway.cursors_issued[:2]] == [None, "c/3/+x==", "c/6/+x=="]
    assert first_page["items"] == gateway.pipelines[:3] and first_page["next_cursor"] == "c/3/+x=="
    for pipeline in gateway.pipelines:
        assert len(re.findall(rf"^{pipeline['id']} .*succeeded .*{pipeline['run_id']}$", printed, re.M)) == 1
    assert "7 shown of 7 matching" in printed


async def test_list_sends_its_filters_as_the_contracts_query_parameters(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    gateway.pipelines = [summary(1, "failed"), summary(2, "succeeded"), summary(3, "timed_out", job="other")]
    argv = ["list", "--state", "failed", "--state", "timed_out", "--job", "csv-statistics", "--limit", "5"]
    since = "--created-after", "2026-11-30T12:00:00+01:00"

    listed = await run_cli(monkeypatch, FAKE_KEY, *address, *argv, *since, "--created-before", "2026-12-02", "--json")
    document = json.loads(capsys.readouterr().out)

    assert listed == 0
    query = gateway.seen[-1].query
    assert [value for name, value in query if name == "state"] == ["failed", "timed_out"]
    assert dict(query)["job"] == "csv-statistics" and dict(query)["limit"] == "5"
    assert dict(query)["created_after"] == "2026-11-30T11:00:00Z"
    local_midnight = datetime(2026, 12, 2).astimezone()
    assert datetime.fromisoformat(dict(query)["created_before"]) == local_midnight
    assert document["items"] == [gateway.pipelines[0]] and document["total"] == 1


@pytest.mark.parametrize(
    ("age", "delta"),
    [
        ("90s", timedelta(seconds=90)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w ago", timedelta(weeks=1)),
    ],
)
def test_an_age_is_an_instant_that_long_ago_in_utc(age: str, delta: timedelta) -> None:
    sent = cli.instant(age)

    assert sent.endswith("Z")
    assert abs(datetime.fromisoformat(sent) - (datetime.now(UTC) - delta)) < timedelta(seconds=5)


async def test_list_refuses_a_limit_outside_1_to_200_and_a_time_it_cannot_read(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    with pytest.raises(SystemExit) as too_many:
        await run_cli(monkeypatch, FAKE_KEY, *address, "list", "--limit", "201")
    big = capsys.readouterr().err
    with pytest.raises(SystemExit) as not_a_time:
        await run_cli(monkeypatch, FAKE_KEY, *address, "list", "--json", "--created-after", "last tuesday")
    unreadable = json.loads(capsys.readouterr().err)

    assert too_many.value.code == not_a_time.value.code == 2 and gateway.seen == []
    assert "--limit takes 1 to 200, got '201'" in big
    assert unreadable["error"]["code"] == "usage" and "'last tuesday' is not a time" in unreadable["error"]["message"]


async def test_list_follow_prints_each_change_as_a_json_line_and_exits_2_when_refused(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    gateway.list_changes = [summary(1, "waiting"), summary(1, "succeeded"), summary(2, "starting")]

    followed = await run_cli(monkeypatch, FAKE_KEY, *address, "list", "--follow", "--state", "waiting", "--json")
    out, err = capsys.readouterr()

    assert followed == 2
    assert [json.loads(line) for line in lines_of(out)] == [
        {"event": "pipeline", "id": str(500 + n), "data": change} for n, change in enumerate(gateway.list_changes)
    ]
    assert ("state", "waiting") in gateway.seen[0].query and ("follow", "true") in gateway.seen[0].query
    assert gateway.seen[1].last_event_id == "502", "the reconnection resumes after the last change"
    assert json.loads(err)["error"]["status"] == 401


# ── events ───────────────────────────────────────────────────────────────────


async def test_events_prints_the_timeline_in_order_with_the_elapsed_time(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    events = timeline_events("demo-1", "succeeded")
    gateway.timelines["demo-1"] = FakeTimeline(events, shown=len(events), state_shown="succeeded")

    printed = await run_cli(monkeypatch, FAKE_KEY, *address, "events", "demo-1")
    lines = lines_of(capsys.readouterr().out)
    as_json = await run_cli(monkeypatch, FAKE_KEY, *address, "events", "demo-1", "--json")
    document = json.loads(capsys.readouterr().out)

    assert printed == 0 and as_json == 0
    assert [line.split()[3] for line in lines[:-1]] == [event["kind"] for event in events]
    assert [line.split()[2] for line in lines[:-1]] == ["+0.0s", "+1.5s", "+3.0s", "+4.5s", "+6.0s", "+7.5s"]
    assert lines[0].endswith("started by key:dev (job csv-statistics)")
    assert lines[-1].startswith("demo-1: succeeded | took 7.5s | run http://localhost:8080/")
    assert document == {"pipeline_id": "demo-1", "state": "succeeded", "events": events}
    assert "\x1b[" not in "\n".join(lines)


@pytest.mark.parametrize("command", ["events --follow", "watch"])
@pytest.mark.parametrize(("state", "exit_status"), OUTCOMES)
async def test_following_a_timeline_ends_on_its_end_event_with_the_outcomes_exit_status(
    fake: tuple[FakeGateway, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    state: str,
    exit_status: int,
) -> None:
    gateway, address = fake
    events = timeline_events("demo-1", state)
    gateway.timelines["demo-1"] = FakeTimeline(events, shown=2, end_state=state)

    followed = await run_cli(monkeypatch, FAKE_KEY, *address, *command.split(), "demo-1", "--reconnect-for", "5")
    lines = lines_of(capsys.readouterr().out)

    assert followed == exit_status == cli.OUTCOME_EXIT[state]
    assert [line.split()[3] for line in lines[:-1]] == [event["kind"] for event in events]
    assert lines[-1].startswith(f"demo-1: {state} | took 7.5s")
    assert gateway.seen[-1].last_event_id == "101", "the stream resumes after the document's last event"


@pytest.mark.parametrize("command", ["events --follow", "watch"])
async def test_following_a_timeline_stops_at_awaiting_repair_with_exit_3(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command
) -> None:
    gateway, address = fake
    events = timeline_events("demo-2", "awaiting_repair")
    gateway.timelines["demo-2"] = FakeTimeline(events, shown=1, end_state=None)  # the stream stays open

    followed = await run_cli(monkeypatch, FAKE_KEY, *address, *command.split(), "demo-2")
    lines = lines_of(capsys.readouterr().out)

    assert followed == cli.AWAITING_REPAIR_EXIT == 3
    assert lines[-2].split()[3] == "awaiting_repair"
    assert "`pipelines repair demo-2`" in lines[-1]


async def test_watch_json_prints_one_json_line_per_event_then_the_end(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    events = timeline_events("demo-3", "failed")
    gateway.timelines["demo-3"] = FakeTimeline(events, shown=3, end_state="failed")

    watched = await run_cli(monkeypatch, FAKE_KEY, *address, "--json", "watch", "demo-3")
    printed = [json.loads(line) for line in lines_of(capsys.readouterr().out)]

    assert watched == 1
    assert printed == [{"event": "timeline", "id": str(e["seq"]), "data": e} for e in events] + [
        {"event": "end", "id": None, "data": {"pipeline_id": "demo-3", "state": "failed"}}
    ]


async def test_watch_on_a_terminal_draws_the_live_view_to_the_end(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    events = timeline_events("demo-6", "timed_out")
    gateway.timelines["demo-6"] = FakeTimeline(events, shown=2, end_state="timed_out")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.delenv("NO_COLOR", raising=False)

    watched = await run_cli(monkeypatch, FAKE_KEY, *address, "watch", "demo-6")
    drawn = capsys.readouterr().out

    assert watched == 5
    last_frame = drawn.rsplit("demo-6", 1)[1]
    assert "csv-statistics" in last_frame and "timed_out" in last_frame and "7.5s" in last_frame
    assert "run http://localhost:8080/?o=1#job/1001/run/77" in last_frame
    assert all(event["summary"] in last_frame for event in events)
    assert "\x1b[" in drawn, "a terminal gets colour"


async def test_a_dropped_stream_resumes_with_last_event_id_and_shows_no_event_twice(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    events = timeline_events("demo-4", "succeeded")
    # The first stream dies after two events, then the gateway "restarts": two 503s, then it is back.
    gateway.timelines["demo-4"] = FakeTimeline(events, shown=1, end_state="succeeded", drop_after=2, unavailable_for=2)

    watched = await run_cli(monkeypatch, FAKE_KEY, *address, "watch", "demo-4", "--json", "--reconnect-for", "10")
    printed = [json.loads(line) for line in lines_of(capsys.readouterr().out)]

    assert watched == 0
    assert [line["data"].get("seq") for line in printed[:-1]] == [event["seq"] for event in events]
    streams = [seen.last_event_id for seen in gateway.seen if ("follow", "true") in seen.query]
    assert streams == ["100", "102", "102", "102"], "each reconnection resumes after the last event received"


async def test_a_stream_that_does_not_come_back_is_given_up_with_a_clear_error(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake
    events = timeline_events("demo-5", "succeeded")
    gateway.timelines["demo-5"] = FakeTimeline(
        events, shown=1, end_state="succeeded", drop_after=1, unavailable_for=10**6
    )

    started = datetime.now(UTC)
    watched = await run_cli(monkeypatch, FAKE_KEY, *address, "events", "demo-5", "--follow", "--reconnect-for", "0.5")
    out, err = capsys.readouterr()

    assert watched == 2
    assert datetime.now(UTC) - started < timedelta(seconds=5)
    assert len(lines_of(out)) == 2, "what arrived before the drop was shown"
    assert "dropped (503 index_unavailable: the index is away) and could not be resumed within 0.5 s" in err


# ── refusals ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("argv", [["list"], ["events", "demo-1"], ["watch", "demo-1"], ["events", "--follow", "x"]])
async def test_a_wrong_key_exits_2_with_the_gateways_reason(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv
) -> None:
    _, address = fake

    refused = await run_cli(monkeypatch, FAKE_KEY + "x", *address, *argv)
    human = capsys.readouterr()
    refused_json = await run_cli(monkeypatch, FAKE_KEY + "x", *address, *argv, "--json")
    machine = capsys.readouterr()

    assert refused == refused_json == 2
    assert human.out == machine.out == ""
    assert human.err == "error: 401 invalid_token: the API key is not one of this gateway's\n"
    assert json.loads(machine.err) == {
        "error": {"status": 401, "code": "invalid_token", "message": "the API key is not one of this gateway's"}
    }


async def test_an_unknown_pipeline_exits_2_saying_so(
    fake: tuple[FakeGateway, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, address = fake

    watched = await run_cli(monkeypatch, FAKE_KEY, *address, "watch", "nobody", "--json")
    err = json.loads(capsys.readouterr().err)

    assert watched == 2
    assert err["error"]["status"] == 404 and err["error"]["code"] == "pipeline_not_found"
    assert not [seen for seen in gateway.seen if ("follow", "true") in seen.query], "no stream opened for a 404"
