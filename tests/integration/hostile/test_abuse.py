"""Abuse of the gateway on the compose stack: bursts, replays, races, late callbacks, lying bodies.

The in-process tests (tests/api/test_fuzz.py) prove the gateway's logic; these
prove that it holds across real processes and a real wire: the gateway, worker
and notifier coordinate only through the Resonate server, Databricks is the
emulator, email goes over SMTP to the mail sink, and HTTP is parsed by the
gateway's own server. What a user would observe is counted where it happens:
runs in the emulator's control API, emails in the mail sink.

Pipelines whose callbacks the tests send themselves run with the emulator plan
``drop_callback`` and a start delay, so the notebook's own callback can never
interfere.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.stack import API
from tests.support.stack_clients import AUTHENTICATED, SIGNING_SECRET, Emulator, Gateway, MailSink, new_id

#: Identical start requests sent at once.
BURST = 200
#: Identical signed callbacks sent at once.
DUPLICATES = 20
#: The notebook starts this late, so that only the test's callbacks reach the gateway.
QUIET_PLAN = {"notebook": "drop_callback", "start_delay_seconds": 30}
#: The gateway's callback body limit (docs/api.md: 413 over 1 MiB).
CALLBACK_LIMIT = 1024 * 1024
#: How long a second email about one pipeline is waited for: the notifier
#: sends right after the outcome, so a duplicate would arrive well within it.
SECOND_EMAIL_WAIT_SECONDS = 1

#: For requests that may leave their connection unusable (a 500, or a body
#: refused while still being sent): the server closes such a connection, and
#: no later request of the module's shared client must inherit it.
ONE_SHOT = {"connection": "close"}

SUCCESS = {"status": "success", "result": {"rows": 3}}
FAILURE = {"status": "failure", "result": None, "error": {"type": "ValueError", "message": "bad row 7"}}


@pytest.fixture(scope="module")
def gateway(stack) -> Gateway:  # type: ignore[no-untyped-def]
    return Gateway(stack.api_url)


@pytest.fixture(scope="module")
def emulator(stack) -> Emulator:  # type: ignore[no-untyped-def]
    return Emulator(stack.databricks_url)


@pytest.fixture(scope="module")
def mail(stack) -> MailSink:  # type: ignore[no-untyped-def]
    return MailSink(stack.mailsink_url)


def quiet_pipeline(gateway: Gateway, emulator: Emulator, label: str, **body: Any) -> str:
    """A pipeline waiting for a callback that only the test will send."""
    pipeline_id = new_id(label)
    emulator.plan(pipeline_id, **QUIET_PLAN)
    started = gateway.start(pipeline_id, **body)
    assert started.status_code == 202, started.text
    gateway.wait_for(pipeline_id, "waiting")
    return pipeline_id


def assert_one_email(mail: MailSink, pipeline_id: str, state: str) -> None:
    """Exactly one email about the pipeline, delivered once, saying how it ended."""
    email = mail.wait_for(pipeline_id)
    assert state.replace("_", " ") in email["subject"], email["subject"]
    # A second email, or a resend of this one, would follow right behind it.
    for more in ({"count": 2}, {"count": 1, "min_deliveries": 2}):
        params = {"pipeline_id": pipeline_id, "timeout": SECOND_EMAIL_WAIT_SECONDS} | more
        waited = mail.http.get("/messages/wait", params=params)
        assert waited.status_code == 408, f"more than one email for {pipeline_id}: {waited.text}"


async def test_a_burst_of_identical_starts_makes_one_pipeline_one_run_and_one_email(
    stack, emulator: Emulator, mail: MailSink
) -> None:  # type: ignore[no-untyped-def]
    pipeline_id = new_id("burst")
    body = {"id": pipeline_id, "email": f"{pipeline_id}@example.com", "parameters": {}}
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    started = time.monotonic()

    async with httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=60, headers=AUTHENTICATED) as client:
        responses = await asyncio.gather(*(client.post("/pipelines", json=body) for _ in range(BURST)))

    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 202}, [r.text for r in responses if r.status_code not in {200, 202}][:3]
    assert statuses.count(202) == 1, "only the request that created the pipeline is told 202"
    assert {r.json()["id"] for r in responses} == {pipeline_id}
    assert {r.headers["location"] for r in responses} == {f"/pipelines/{pipeline_id}"}
    print(f"{BURST} identical starts in {elapsed:.2f} s: {statuses.count(202)} x 202, {statuses.count(200)} x 200")
    Gateway(stack.api_url).wait_for(pipeline_id, "succeeded")
    counters = emulator.counters(pipeline_id)
    assert counters["runs"] == 1, counters
    assert_one_email(mail, pipeline_id, "succeeded")


class TestCallbacksAgainstALivePipeline:
    def test_duplicates_replays_and_a_contradiction_resume_it_once(
        self, gateway: Gateway, emulator: Emulator, mail: MailSink
    ) -> None:
        pipeline_id = quiet_pipeline(gateway, emulator, "dup")
        waiting = gateway.status(pipeline_id)

        # Refused while waiting: signed, but a failure with no cause.
        malformed = gateway.post_callback(*gateway.signed_callback(pipeline_id, {"status": "failure"}))
        assert malformed.status_code == 422 and malformed.json()["code"] == "invalid_callback"
        assert gateway.status(pipeline_id) == waiting

        body, headers = gateway.signed_callback(pipeline_id, SUCCESS)
        with ThreadPoolExecutor(DUPLICATES) as pool:
            duplicates = list(pool.map(lambda _: gateway.post_callback(body, headers), range(DUPLICATES)))

        assert [r.status_code for r in duplicates] == [200] * DUPLICATES, [r.text for r in duplicates]
        outcomes = sorted(r.json()["outcome"] for r in duplicates)
        assert outcomes == ["accepted"] + ["duplicate"] * (DUPLICATES - 1)
        done = gateway.wait_for(pipeline_id, "succeeded")
        assert done["result"] == SUCCESS["result"]

        replay = gateway.post_callback(body, headers)
        contradiction = gateway.post_callback(*gateway.signed_callback(pipeline_id, FAILURE))

        assert (replay.status_code, replay.json()["outcome"]) == (200, "duplicate")
        assert (contradiction.status_code, contradiction.json()["code"]) == (409, "settlement_conflict")
        assert gateway.status(pipeline_id) == done
        assert_one_email(mail, pipeline_id, "succeeded")
        assert emulator.counters(pipeline_id)["runs"] == 1

    def test_a_failure_reported_first_stands_against_a_later_success(
        self, gateway: Gateway, emulator: Emulator, mail: MailSink
    ) -> None:
        pipeline_id = quiet_pipeline(gateway, emulator, "reorder")

        first = gateway.post_callback(*gateway.signed_callback(pipeline_id, FAILURE))
        # The default job waits for a person to repair a failed run.
        done = gateway.wait_for(pipeline_id, "awaiting_repair")
        late = gateway.post_callback(*gateway.signed_callback(pipeline_id, SUCCESS))

        assert (first.status_code, first.json()["outcome"]) == (200, "accepted")
        assert (late.status_code, late.json()["code"]) == (409, "settlement_conflict")
        assert done["error"] == FAILURE["error"]
        assert gateway.status(pipeline_id) == done
        assert_one_email(mail, pipeline_id, "awaiting_repair")
        assert gateway.http.post(f"/pipelines/{pipeline_id}/abandon").status_code == 202
        assert gateway.wait_for(pipeline_id, "failed")["error"]["type"] == "Abandoned"

    def test_racing_contradicting_callbacks_let_exactly_one_outcome_win(
        self, gateway: Gateway, emulator: Emulator, mail: MailSink
    ) -> None:
        pipeline_id = quiet_pipeline(gateway, emulator, "race")
        reports = [SUCCESS, FAILURE] * (DUPLICATES // 2)
        signed = [gateway.signed_callback(pipeline_id, report) for report in reports]

        with ThreadPoolExecutor(len(signed)) as pool:
            responses = list(pool.map(lambda request: gateway.post_callback(*request), signed))

        winners = {report["status"] for report, r in zip(reports, responses, strict=True) if r.status_code == 200}
        assert len(winners) == 1, [r.text for r in responses]
        [winner] = winners
        for report, response in zip(reports, responses, strict=True):
            assert response.status_code == (200 if report["status"] == winner else 409), response.text
        # A failure of the default job waits for a person to repair it.
        state = "succeeded" if winner == "success" else "awaiting_repair"
        gateway.wait_for(pipeline_id, state)
        assert_one_email(mail, pipeline_id, state)
        if state == "awaiting_repair":
            gateway.http.post(f"/pipelines/{pipeline_id}/abandon")

    def test_a_callback_after_the_timeout_is_409_and_the_pipeline_stays_timed_out(
        self, gateway: Gateway, emulator: Emulator, mail: MailSink
    ) -> None:
        pipeline_id = new_id("late")
        emulator.plan(pipeline_id, notebook="hang")
        gateway.start(pipeline_id, timeout_seconds=3)
        timed_out = gateway.wait_for(pipeline_id, "timed_out", timeout=60)

        late = gateway.post_callback(*gateway.signed_callback(pipeline_id, SUCCESS))

        assert (late.status_code, late.json()["code"]) == (409, "settlement_conflict"), late.text
        assert gateway.status(pipeline_id) == timed_out
        assert_one_email(mail, pipeline_id, "timed_out")


class TestTheWire:
    """What only the real stack shows: bodies that lie about themselves, ids the gateway must keep from Resonate."""

    @pytest.mark.parametrize(
        "promise_id",
        ["é:1", "a/b:1", "../x:1", "%2e%2e:1", "x" * 198 + ":1", "🚀:1", "\u0000:1", "a\r\nb:1"],
        ids=["accent", "slash", "dots", "percent", "long", "emoji", "nul", "crlf"],
    )
    def test_signed_callbacks_for_odd_promise_ids_are_404_over_the_real_resonate_wire(
        self, gateway: Gateway, promise_id: str
    ) -> None:
        body = json.dumps({"promise_id": promise_id} | SUCCESS).encode()
        headers = sign_callback(derive_callback_key(SIGNING_SECRET, promise_id), body)

        response = gateway.post_callback(body, headers | {"content-type": "application/json"} | ONE_SHOT)

        assert (response.status_code, response.json()["code"]) == (404, "unknown_promise"), response.text

    def test_an_oversized_chunked_callback_is_413(self, gateway: Gateway, emulator: Emulator) -> None:
        pipeline_id = quiet_pipeline(gateway, emulator, "chunked")

        def chunks() -> Any:
            for _ in range(2 * CALLBACK_LIMIT // 65_536):
                yield b"x" * 65_536

        response = gateway.http.post("/callbacks/databricks", content=chunks(), headers=ONE_SHOT)

        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
        assert gateway.status(pipeline_id)["state"] == "waiting"

    def test_a_content_length_over_the_limit_is_refused_without_waiting_for_the_body(
        self, gateway: Gateway, stack
    ) -> None:  # type: ignore[no-untyped-def]
        host, port = stack.address(API)
        request = (
            f"POST /callbacks/databricks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 * CALLBACK_LIMIT}\r\nConnection: close\r\n\r\n{{}}"
        ).encode()
        started = time.monotonic()

        with socket.create_connection((host, port), timeout=10) as connection:
            connection.sendall(request)
            reply = _read_reply(connection)

        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b'"body_too_large"' in reply
        assert time.monotonic() - started < 5

    def test_deeply_nested_json_in_a_callback_is_422(self, gateway: Gateway) -> None:
        nested = b"[" * 100_000 + b"]" * 100_000
        body = b'{"promise_id": "x:1", "status": "success", "result": {"deep": ' + nested + b"}}"

        response = gateway.post_callback(body, {"content-type": "application/json"} | ONE_SHOT)

        assert (response.status_code, response.json()["code"]) == (422, "invalid_callback"), response.text


def _read_reply(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    reply = b""
    while chunk := connection.recv(65_536):
        reply += chunk
    return reply
