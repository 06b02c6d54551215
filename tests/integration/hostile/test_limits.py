"""Callers without limits, on the compose stack: each limit refuses, and the gateway serves others meanwhile.

The start limits are tried with principals that have small ones of their own
(tests/support/stack.py, ``PRINCIPAL_START_LIMITS``): ``limited`` may start 2
pipelines a minute, ``quota`` may have 1 waiting. The connection bounds are
tried on both listeners with raw sockets to 127.0.0.1, as a hostile client
would send: a 32 MB header, 100,000 headers, a body trickled a byte at a time,
more connections than a listener takes.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.stack import API, API_CALLBACKS, TEST_SETTINGS, Stack
from tests.support.stack_clients import Emulator, Gateway, MailSink, new_id

#: The test stack's bounds (tests/support/stack.py sets the timeouts and connections short).
CALLBACK_BODY_TIMEOUT = float(TEST_SETTINGS["CALLBACK_BODY_TIMEOUT_SECONDS"])
CALLBACK_MAX_CONNECTIONS = int(TEST_SETTINGS["CALLBACK_MAX_CONNECTIONS"])
#: The gateway's peak memory may grow by this much while refusing a 32 MB header (it reached 381 MB before).
RSS_GROWTH_BOUND_KB = 20 * 1024
#: How long a refused start is watched for a run or an email that should never come.
NOTHING_WAIT_SECONDS = 3


def assert_nothing_started(gateway: Gateway, emulator: Emulator, mail: MailSink, pipeline_id: str) -> None:
    assert gateway.http.get(f"/pipelines/{pipeline_id}").status_code == 404
    time.sleep(NOTHING_WAIT_SECONDS)
    assert emulator.runs(pipeline_id) == []
    assert mail.messages(pipeline_id) == []


# ── starts ───────────────────────────────────────────────────────────────────


def test_starts_over_the_rate_are_429_with_retry_after_while_others_start(
    stack: Stack, gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    limited = Gateway(stack.api_url, stack.keys.keys["limited"])
    first, second, refused_id = new_id("rate-a"), new_id("rate-b"), new_id("rate-c")
    assert limited.start(first).status_code == 202
    repeat = limited.start(first)
    assert limited.start(second).status_code == 202

    refused = limited.start(refused_id)
    meanwhile = gateway.start(new_id("rate-other"))

    assert repeat.status_code == 200, "a repeated start is the same start, not counted again"
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "start_rate_limited"
    assert "at most 2 pipelines a minute" in refused.json()["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert meanwhile.status_code == 202, meanwhile.text
    assert_nothing_started(limited, emulator, mail, refused_id)


def test_a_principal_at_its_waiting_quota_is_429_until_one_of_its_pipelines_ends(
    stack: Stack, gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    quota = Gateway(stack.api_url, stack.keys.keys["quota"])
    waiting, refused_id = new_id("quota-a"), new_id("quota-b")
    emulator.plan(waiting, notebook="hang")
    assert quota.start(waiting, timeout_seconds=300).status_code == 202

    refused = quota.start(refused_id)
    meanwhile = gateway.start(new_id("quota-other"))

    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "too_many_waiting"
    assert "at most 1 may be" in refused.json()["message"]
    assert refused.headers["retry-after"].isdigit()
    assert meanwhile.status_code == 202, meanwhile.text
    assert_nothing_started(quota, emulator, mail, refused_id)

    # Once its pipeline has ended (as the index shows it), the principal may start again.
    assert quota.http.post(f"/pipelines/{waiting}/cancel").status_code == 202
    quota.wait_for_timeline(waiting, "cancelled")
    assert quota.start(refused_id).status_code == 202


def test_a_recipient_outside_the_allowed_domains_is_422_naming_the_domain(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("elsewhere")

    refused = gateway.start(pipeline_id, email="someone@elsewhere.org")
    subdomain = gateway.start(new_id("subdomain"), email="someone@mail.example.com")

    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_request"
    assert "'elsewhere.org'" in refused.json()["message"]
    assert refused.json()["details"][0]["loc"] == ["body", "email"]
    assert subdomain.status_code == 202, subdomain.text
    assert_nothing_started(gateway, emulator, mail, pipeline_id)


def test_the_start_log_admits_the_rate_over_any_minute_and_counts_a_repeat_once(stack: Stack) -> None:
    """``pipelines.admit_start`` itself, at chosen instants: the rate, its Retry-After, repeats, the waiting gap."""
    rate, quota = new_id("sql-rate"), new_id("sql-quota")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def admit(principal: str, pipeline_id: str, per_minute: int, waiting: int, seconds: float) -> tuple[Any, ...]:
        row = conn.execute(
            "SELECT refused, retry_after_seconds, counted FROM pipelines.admit_start(%s, %s, %s, %s, %s)",
            (principal, pipeline_id, per_minute, waiting, t0 + timedelta(seconds=seconds)),
        ).fetchone()
        assert row is not None
        return tuple(row)

    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as conn:
        admitted = [admit(rate, f"p{n}", 3, 0, 10 * n)[0] for n in range(3)]
        over = admit(rate, "p3", 3, 0, 30)
        repeat = admit(rate, "p0", 3, 0, 30)
        logged = conn.execute("SELECT count(*) FROM pipelines.start_log WHERE principal = %s", (rate,)).fetchone()
        once_p0_left = admit(rate, "p3", 3, 0, 60)

        # Starts the index does not show yet count as waiting.
        waiting = [admit(quota, f"q{n}", 0, 2, n)[0] for n in range(2)]
        over_quota = admit(quota, "q2", 0, 2, 2)

    assert admitted == [None, None, None]
    assert over == ("rate", 30.0, 3)
    assert repeat[0] is None
    assert logged == (3,), "neither the refusal nor the repeat was logged"
    assert once_p0_left[0] is None
    assert waiting == [None, None]
    assert (over_quota[0], over_quota[2]) == ("waiting", 2)


# ── connections ──────────────────────────────────────────────────────────────


def gateway_memory_kb(stack: Stack) -> tuple[int, int]:
    """The gateway process's resident memory now and at its peak (VmRSS, VmHWM), in kB.

    The peak is what a request parsed whole would leave behind, though the
    memory is handed back once it is refused.
    """
    script = (
        "import pathlib\n"
        "def kb(text, name): return int(next(l for l in text.splitlines() if l.startswith(name)).split()[1])\n"
        "statuses = [p.read_text() for p in pathlib.Path('/proc').glob('[0-9]*/status')]\n"
        "gateway = max((s for s in statuses if 'VmRSS' in s), key=lambda s: kb(s, 'VmRSS'))\n"
        "print(kb(gateway, 'VmRSS'), kb(gateway, 'VmHWM'))"
    )
    now, peak = stack.compose("exec", "-T", "api", "python", "-c", script).stdout.split()
    return int(now), int(peak)


def send_until_answered(address: tuple[str, int], head: bytes, filler: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then ``filler`` up to ``total`` bytes, stopping once the server answers; (answer, bytes sent)."""
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(head)
        sent = len(head)
        conn.setblocking(False)
        answer = b""
        while sent < total and not answer:
            with suppress(BlockingIOError):
                answer = conn.recv(65536)
            try:
                sent += conn.send(filler)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
        conn.settimeout(10)
        with suppress(OSError):
            while chunk := conn.recv(65536):
                answer += chunk
        return answer, sent


def status_and_code(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    code = re.search(rb'"code": ?"([a-z_]+)"', answer)
    return status, code.group(1).decode() if code else ""


@pytest.mark.parametrize("listener", [API, API_CALLBACKS], ids=["gateway", "callbacks"])
def test_a_32_mb_header_is_refused_431_early_without_the_gateway_growing(stack: Stack, listener) -> None:  # type: ignore[no-untyped-def]
    before = gateway_memory_kb(stack)

    answer, sent = send_until_answered(
        stack.address(listener), b"POST /callbacks/databricks HTTP/1.1\r\nhost: x\r\nx-big: ", b"a" * 65536, 32 << 20
    )

    after = gateway_memory_kb(stack)
    print(
        f"32 MB header on {listener.port}: {sent} bytes sent before the answer; "
        f"gateway RSS {before[0]} -> {after[0]} kB, peak {before[1]} -> {after[1]} kB"
    )
    assert status_and_code(answer) == (431, "headers_too_large")
    assert after[1] - before[1] < RSS_GROWTH_BOUND_KB
    assert httpx.get(f"{stack.api_url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("listener", [API, API_CALLBACKS], ids=["gateway", "callbacks"])
def test_100000_headers_are_refused_431(stack: Stack, listener) -> None:  # type: ignore[no-untyped-def]
    headers = b"".join(b"x-%d: 1\r\n" % n for n in range(100_000))

    answer, _ = send_until_answered(
        stack.address(listener), b"GET /healthz HTTP/1.1\r\nhost: x\r\n", headers, len(headers)
    )

    assert status_and_code(answer)[0] == 431
    assert httpx.get(f"{stack.api_url}/healthz", timeout=5).status_code == 200


@contextmanager
def trickling(address: tuple[str, int]) -> Iterator[dict[str, float | bytes]]:
    """A client sending a callback's body a byte every 0.2 s, in a thread; what it met, once the block ends."""
    seen: dict[str, float | bytes] = {}

    def trickle() -> None:
        started = time.monotonic()
        with socket.create_connection(address, timeout=30) as conn:
            conn.sendall(b"POST /callbacks/databricks HTTP/1.1\r\nhost: x\r\ncontent-length: 10000\r\n\r\n")
            conn.settimeout(0.2)
            answer = b""
            for _ in range(150):
                try:
                    conn.sendall(b"{")
                    answer += conn.recv(65536)
                    if answer:
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            seen["held"], seen["answer"] = time.monotonic() - started, answer

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        yield seen
    finally:
        thread.join(timeout=60)


def test_a_trickled_body_is_dropped_within_the_bound_while_the_gateway_answers(stack: Stack) -> None:
    with trickling(stack.address(API_CALLBACKS)) as seen:
        time.sleep(1)
        meanwhile = httpx.get(f"{stack.api_url}/healthz", timeout=5)

    print(f"a trickling client was held {seen['held']:.2f} s (CALLBACK_BODY_TIMEOUT_SECONDS={CALLBACK_BODY_TIMEOUT:g})")
    assert meanwhile.status_code == 200
    assert status_and_code(seen["answer"]) == (408, "request_timeout")  # type: ignore[arg-type]
    assert seen["held"] < CALLBACK_BODY_TIMEOUT + 2  # type: ignore[operator]


def test_connections_over_the_bound_are_503_with_retry_after_while_the_other_listener_answers(stack: Stack) -> None:
    address = stack.address(API_CALLBACKS)
    held = [socket.create_connection(address, timeout=10) for _ in range(CALLBACK_MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        with socket.create_connection(address, timeout=10) as extra:
            extra.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = extra.recv(65536)
        meanwhile = httpx.get(f"{stack.api_url}/healthz", timeout=5)
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.3)
    after = httpx.get(f"{stack.callback_url}/", timeout=5)

    assert status_and_code(answer) == (503, "too_many_connections")
    assert re.search(rb"\r\nretry-after: \d+\r\n", answer.lower())
    assert meanwhile.status_code == 200
    assert (after.status_code, after.json()["code"]) == (404, "not_found")
