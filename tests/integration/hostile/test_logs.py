"""Bad input and departing clients on the compose stack: never a 5xx, never a traceback, one quiet line.

Each probe is checked for its answer (a 4xx with a stable code, or a 404
page), for what it must not leave in the gateway's log (an ERROR line or a
traceback) and for what it must not change (the pipelines the index lists).
That no credential reaches a log line, wherever a client puts it, is tested
with the other access checks (tests/integration/hostile/test_access.py,
``test_no_secret_reaches_a_log_line``).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.stack import API_CALLBACKS, Stack
from tests.support.stack_clients import Gateway, UiBrowser, new_id


def api_log_lines(stack: Stack) -> list[dict[str, object]]:
    """The gateway's log as JSON lines (anything else it wrote, such as a plain-text traceback, as its text)."""
    lines = []
    for raw in stack.logs("api").splitlines():
        text = raw.split("|", 1)[1].strip() if "|" in raw else raw.strip()
        try:
            lines.append(json.loads(text))
        except ValueError:
            lines.append({"level": "TEXT", "msg": text})
    return lines


@pytest.fixture
def quiet_log(stack: Stack) -> Iterator[list[dict[str, object]]]:
    """What the gateway logs during the test; after it, no ERROR, no traceback and no plain-text line in it."""
    before = len(api_log_lines(stack))
    logged: list[dict[str, object]] = []
    yield logged
    time.sleep(0.5)
    logged[:] = api_log_lines(stack)[before:]
    noisy = [line for line in logged if line.get("level") in ("ERROR", "CRITICAL", "TEXT") or "exc" in line]
    assert not noisy, noisy[:3]


def encoded(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def listed(gateway: Gateway) -> str:
    """Two pipelines of the development key, so that a first page of one has a next_cursor; its cursor."""
    started = {new_id("hostile-cursor") for _ in range(2)}
    for pipeline_id in started:
        assert gateway.start(pipeline_id).status_code == 202
    deadline = time.monotonic() + 30
    # Once the index lists both, the probes' "nothing changed" counts a settled list.
    while not started <= {item["id"] for item in gateway.page(limit=200)["items"]}:
        assert time.monotonic() < deadline, "the index does not list the pipelines started"
        time.sleep(0.2)
    return gateway.page(limit=1)["next_cursor"]


CURSORS = {
    # As cursors were before they carried a check: what a client would edit an issued one into.
    "nul, as cursors were": lambda issued: encoded(["2026-12-01T09:30:00+00:00", "csv\x00"]),
    "lone surrogate, as cursors were": lambda issued: encoded(["2026-12-01T09:30:00+00:00", "\ud800"]),
    "nul": lambda issued: encoded(["2026-12-01T09:30:00+00:00", "csv\x00", "0" * 24]),
    "lone surrogate": lambda issued: encoded(["2026-12-01T09:30:00+00:00", "\ud800", "0" * 24]),
    "nul in the time": lambda issued: encoded(["2026-12-01T09:30:00\x00+00:00", "csv-1", "0" * 24]),
    "percent-encoded surrogate": lambda issued: "%ED%A0%80",
    "random base64": lambda issued: base64.urlsafe_b64encode(bytes(range(7, 60))).decode(),
    "garbage": lambda issued: "!!not*a*cursor~~",
    "tampered": lambda issued: issued[:-3] + ("AAA" if not issued.endswith("AAA") else "BBB"),
    "the format before checks": lambda issued: encoded(json.loads(base64.urlsafe_b64decode(issued + "=="))[:2]),
}


@pytest.mark.parametrize("cursor", CURSORS.values(), ids=CURSORS.keys())
def test_a_cursor_that_is_not_one_the_gateway_gave_is_a_422_on_the_api_and_the_page(
    stack: Stack, gateway: Gateway, listed: str, quiet_log: list[dict[str, object]], cursor: object
) -> None:
    before = gateway.page(limit=200)["total"]
    value = cursor(listed)  # type: ignore[operator]
    # Sent as written: the percent-encoded one must reach the gateway undecoded by the client.
    query = f"limit=1&cursor={value}" if "%" in value else urlencode({"limit": 1, "cursor": value})

    api = gateway.http.get(f"/pipelines?{query}")
    assert (api.status_code, api.json()["code"]) == (422, "invalid_request"), api.text
    assert api.json()["message"].startswith("cursor: not a cursor this gateway gave"), api.text

    assert gateway.page(limit=200)["total"] == before, "nothing changed"
    assert gateway.http.get("/pipelines", params={"limit": 1, "cursor": listed}).status_code == 200


def test_another_querys_or_principals_cursor_is_refused(
    stack: Stack, gateway: Gateway, listed: str, quiet_log: list[dict[str, object]]
) -> None:
    other = gateway.http.get("/pipelines", params={"limit": 1, "cursor": listed, "state": "failed"})
    assert (other.status_code, other.json()["code"]) == (422, "invalid_request"), other.text
    admin = Gateway(stack.api_url, stack.keys.keys["admin"])
    stolen = admin.http.get("/pipelines", params={"limit": 1, "cursor": listed})
    assert (stolen.status_code, stolen.json()["code"]) == (422, "invalid_request"), stolen.text


def test_the_page_refuses_a_bad_cursor_with_a_422_page(
    stack: Stack, listed: str, quiet_log: list[dict[str, object]]
) -> None:
    browser = UiBrowser(stack.api_url)
    browser.sign_in()
    for cursor in (CURSORS["nul"](listed), CURSORS["lone surrogate"](listed), CURSORS["tampered"](listed)):
        page = browser.http.get("/ui/", params={"cursor": cursor})
        assert page.status_code == 422 and "not a cursor this gateway gave" in page.text, page.text[:300]
    assert browser.http.get("/ui/", params={"cursor": listed}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "signed_in"),
    [
        ("GET", "/ui/static/nope", False),
        ("GET", "/ui/static/nope", True),
        ("GET", "/ui/static/vendor/%2e%2e/%2e%2e/ui.css", True),
        ("GET", "/ui/pipelines/x/bogus", True),
        ("GET", "/ui/pipelines/{waiting}/bogus", True),
        ("POST", "/ui/pipelines/{waiting}/bogus", True),
        ("GET", "/ui/nowhere", True),
    ],
)
def test_unknown_static_files_and_actions_are_404_pages(
    stack: Stack, gateway: Gateway, quiet_log: list[dict[str, object]], method: str, path: str, signed_in: bool
) -> None:
    pipeline_id = new_id("hostile-404")
    assert gateway.start(pipeline_id).status_code == 202
    browser = UiBrowser(stack.api_url)
    if signed_in:
        browser.sign_in()
    data = {"csrf_token": browser.csrf} if method == "POST" else None

    response = browser.http.request(method, path.format(waiting=pipeline_id), data=data)

    assert response.status_code == 404 and "No such page" in response.text, (response.status_code, response.text[:300])
    events = [event["kind"] for event in gateway.timeline(pipeline_id)["events"]] if signed_in else []
    assert "cancel_requested" not in events


def test_a_client_that_goes_away_mid_body_on_the_public_listener_is_one_info_line(
    stack: Stack, gateway: Gateway, quiet_log: list[dict[str, object]]
) -> None:
    host, port = stack.address(API_CALLBACKS)
    probes = 5
    for _ in range(probes):
        with socket.create_connection((host, port), timeout=5) as client:
            client.sendall(
                b"POST /callbacks/databricks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 4000\r\n\r\n{"promise_id": "nobody'
            )
            time.sleep(0.1)

    deadline = time.monotonic() + 10
    while len(gone := [line for line in api_log_lines(stack) if "went away" in str(line.get("msg"))]) < probes:
        assert time.monotonic() < deadline, gone
        time.sleep(0.2)
    assert {(line["level"], "exc" in line) for line in gone} == {("INFO", False)}
    assert httpx.get(stack.api_url + "/healthz").status_code == 200
