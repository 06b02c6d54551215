"""The stand-in on the raw wire: routes, status codes, routing rules and auth.

Requests are plain HTTP envelopes and messages are read straight off
``GET /poll/{group}/{pid}``, so what is asserted is exactly what an SDK sees.
Where the real server answers with a particular status and message
(resonatehq/resonate ``src/server.rs``), these tests hold the stand-in to it.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import threading
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.resonate_dev.conftest import StandIn, unique, wait_until

FAR = 4_000_000_000_000  # a timeoutAt far in the future (ms)


class PollReader:
    """One ``GET /poll/{group}/{pid}`` stream, read on a thread into a queue."""

    def __init__(
        self, standin: StandIn, group: str, pid: str, headers: dict[str, str] | None = None
    ) -> None:
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: int | None = None
        self._opened = threading.Event()
        self._client = httpx.Client(trust_env=False, timeout=httpx.Timeout(5, read=None))
        self._url = f"{standin.url}/poll/{group}/{pid}"
        self._headers = headers or {}
        threading.Thread(target=self._read, daemon=True).start()
        assert self._opened.wait(10), f"no response from {self._url}"

    def _read(self) -> None:
        try:
            with self._client.stream("GET", self._url, headers=self._headers) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self._opened.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.messages.put(json.loads(line[5:]))
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self._opened.set()

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message on {self._url} within {timeout}s")

    def nothing_pending(self) -> bool:
        return self.messages.empty()

    def close(self) -> None:
        self._client.close()


def drain(
    readers: list[PollReader], count: int, timeout: float = 5.0
) -> list[tuple[PollReader, dict[str, Any]]]:
    """The next ``count`` messages across ``readers``, with who received each."""
    received: list[tuple[PollReader, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while len(received) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"only {len(received)} of {count} messages arrived within {timeout}s")
        for reader in readers:
            try:
                received.append((reader, reader.messages.get(timeout=0.02)))
            except queue.Empty:
                continue
    return received


def create(standin: StandIn, id: str, target: str | None = None, **tags: str) -> httpx.Response:
    all_tags = dict(tags)
    if target is not None:
        all_tags["resonate:target"] = target
    return standin.post(
        "promise.create", {"id": id, "timeoutAt": FAR, "param": {}, "tags": all_tags}
    )


def task_create(
    standin: StandIn, id: str, *, timeout_at: int = FAR, pid: str = "p"
) -> httpx.Response:
    action = {
        "kind": "promise.create",
        "head": {"corrId": "inner", "version": "2026-04-01"},
        "data": {
            "id": id,
            "timeoutAt": timeout_at,
            "param": {},
            "tags": {"resonate:target": "poll://any@g"},
        },
    }
    return standin.post("task.create", {"pid": pid, "ttl": 60_000, "action": action})


def status_and_data(response: httpx.Response) -> tuple[int, Any]:
    body = response.json()
    assert response.status_code == body["head"]["status"], "HTTP status must equal head.status"
    return body["head"]["status"], body["data"]


def test_health_ready_and_retired_paths(standin) -> None:
    for path in ("/health", "/ready"):
        response = standin.http.get(standin.url + path)
        assert response.status_code == 200
        assert response.content == b""
    gone = standin.http.get(standin.url + "/promises/abc")
    assert gone.status_code == 410
    assert "no longer supported" in gone.json()["error"]


def test_envelope_errors_are_400_with_a_message(standin) -> None:
    # No wire check here: an answer about an unknown or missing kind cannot pass
    # the SDK's validators, which know only the kinds an SDK sends.
    def post_raw(body: Any) -> tuple[int, Any]:
        return status_and_data(standin.http.post(standin.url + "/", content=json.dumps(body)))

    assert post_raw({"head": {"corrId": "c", "version": "2026-04-01"}, "data": {}})[0] == 400
    assert post_raw({"kind": "promise.get", "head": {"corrId": "c"}, "data": {}})[0] == 400
    status, message = post_raw(
        {"kind": "promise.get", "head": {"corrId": "c", "version": "1999-01-01"}, "data": {}}
    )
    assert (status, message.startswith("Unsupported protocol version '1999-01-01'")) == (400, True)
    status, message = post_raw(
        {"kind": "promise.get", "head": {"corrId": "c", "version": "2026-04-01"}, "data": []}
    )
    assert (status, message) == (400, "Invalid 'data' field — must be an object")
    response = standin.http.post(standin.url + "/", content=b"{not json")
    assert status_and_data(response)[0] == 400
    assert status_and_data(standin.post("promise.frobnicate", {})) == (
        400,
        "Unknown operation: promise.frobnicate",
    )


def test_request_data_is_validated_like_the_server(standin, wire_check) -> None:
    cases = [
        ("promise.create", {"id": "", "timeoutAt": FAR}),
        ("promise.create", {"id": "a", "timeoutAt": 1.5}),
        ("promise.create", {"id": "a", "timeoutAt": FAR, "tags": {"n": 1}}),
        ("promise.create", {"id": "a", "timeoutAt": FAR, "param": {"data": 5}}),
        ("promise.create", {"id": "a:1", "timeoutAt": FAR, "tags": {"resonate:origin": "b"}}),
        ("promise.create", {"id": "a", "timeoutAt": FAR, "tags": {"resonate:target": "no scheme"}}),
        ("promise.settle", {"id": "a", "state": "sideways"}),
        ("promise.register_listener", {"awaited": "a", "address": "not an address"}),
        ("task.acquire", {"id": "a", "version": 0, "pid": "p"}),
        ("task.suspend", {"id": "a", "version": 1, "actions": []}),
        ("task.heartbeat", {"pid": "p", "tasks": []}),
        (
            "task.fulfill",
            {
                "id": "a",
                "version": 1,
                "action": {"kind": "promise.settle", "data": {"id": "b", "state": "resolved"}},
            },
        ),
        ("promise.search", {"limit": 5000}),
        (
            "schedule.create",
            {
                "id": "s",
                "cron": "* * * * *",
                "promiseId": "p",
                "promiseTimeout": 1,
                "promiseTags": {},
            },
        ),
    ]
    for kind, data in cases:
        status, message = status_and_data(standin.post(kind, data))
        assert status == 400, (kind, data, message)
        assert isinstance(message, str) and message
    action = {
        "kind": "promise.create",
        "head": {},
        "data": {"id": "x", "timeoutAt": FAR, "tags": {}},
    }
    status, message = status_and_data(
        standin.post("task.create", {"pid": "p", "ttl": 1, "action": action})
    )
    assert (status, message) == (400, "Invalid request: Action must have a resonate:target tag")
    wire_check(standin)


def test_task_lifecycle_statuses_and_versions(standin, wire_check) -> None:
    id = unique("task")
    status, data = status_and_data(task_create(standin, id))
    # Creates answer 200 (the SDK's model said 201); the task starts acquired at version 1.
    assert status == 200
    assert data["task"] == {
        "id": id,
        "state": "acquired",
        "version": 1,
        "resumes": 0,
        "ttl": 60_000,
        "pid": "p",
    }
    assert data["promise"]["param"] == {} and data["promise"]["value"] == {}
    assert status_and_data(task_create(standin, id))[1] == "Already exists"
    assert status_and_data(standin.post("task.release", {"id": id, "version": 7})) == (
        409,
        "Version mismatch",
    )
    assert status_and_data(standin.post("task.release", {"id": id, "version": 1}))[0] == 200
    assert status_and_data(standin.post("task.release", {"id": id, "version": 1})) == (
        409,
        "Task is not acquired",
    )
    # Released keeps the version; acquiring bumps it.
    status, data = status_and_data(
        standin.post("task.acquire", {"id": id, "version": 1, "pid": "q", "ttl": 60_000})
    )
    assert (status, data["task"]["version"], data["task"]["pid"]) == (200, 2, "q")
    stale = standin.post("task.acquire", {"id": id, "version": 1, "pid": "q", "ttl": 60_000})
    assert status_and_data(stale) == (409, "Task is not pending")

    child = f"{id}:1"
    fence = {
        "id": id,
        "version": 2,
        "action": {
            "kind": "promise.create",
            "head": {"corrId": "f", "version": "2026-04-01"},
            "data": {"id": child, "timeoutAt": FAR, "param": {"data": "e30="}, "tags": {}},
        },
    }
    status, data = status_and_data(standin.post("task.fence", fence))
    assert status == 200
    assert data["action"]["kind"] == "promise.create"
    assert data["action"]["head"]["status"] == 200
    assert data["action"]["data"]["promise"]["param"] == {"data": "e30="}
    assert status_and_data(standin.post("task.fence", {**fence, "version": 1})) == (
        409,
        "Version mismatch",
    )

    callback = {
        "kind": "promise.register_callback",
        "head": {"corrId": "s", "version": "2026-04-01"},
        "data": {"awaiter": id, "awaited": f"{id}:9"},
    }
    suspend = {"id": id, "version": 2, "actions": [callback]}
    assert status_and_data(standin.post("task.suspend", suspend)) == (
        422,
        "Awaited promise not found",
    )
    callback["data"]["awaited"] = child
    assert status_and_data(standin.post("task.suspend", suspend)) == (200, {})
    assert status_and_data(standin.post("task.get", {"id": id}))[1]["task"]["state"] == "suspended"
    settled = standin.post(
        "promise.settle", {"id": child, "state": "resolved", "value": {"data": "InllcyI="}}
    )
    assert status_and_data(settled)[1]["promise"]["value"] == {"data": "InllcyI="}
    task = status_and_data(standin.post("task.get", {"id": id}))[1]["task"]
    assert (task["state"], task["version"], task["resumes"]) == ("pending", 2, 1)
    assert status_and_data(standin.post("task.get", {"id": "nope"})) == (404, "Task not found")
    wire_check(standin)


def test_callbacks_searches_halts_and_schedules(standin, wire_check) -> None:
    root = unique("root")
    assert status_and_data(task_create(standin, root))[0] == 200
    assert status_and_data(create(standin, f"{root}:1"))[0] == 200
    register = {"awaited": f"{root}:1", "awaiter": root}
    status, data = status_and_data(standin.post("promise.register_callback", register))
    assert (status, data["promise"]["id"]) == (200, f"{root}:1")
    bad = {"awaited": f"{root}:1", "awaiter": f"{root}:nope"}
    assert status_and_data(standin.post("promise.register_callback", bad)) == (
        422,
        "Awaiter promise not found",
    )

    status, data = status_and_data(
        standin.post("promise.search", {"tags": {"resonate:target": "poll://any@g"}, "limit": 1})
    )
    assert status == 200 and len(data["promises"]) == 1
    status, data = status_and_data(standin.post("task.search", {"state": "acquired"}))
    assert status == 200 and [t["id"] for t in data["tasks"]] == [root]
    assert "cursor" not in data

    assert status_and_data(standin.post("task.halt", {"id": root})) == (200, {})
    assert status_and_data(standin.post("task.continue", {"id": root})) == (200, {})
    assert status_and_data(standin.post("task.continue", {"id": root})) == (
        409,
        "Task is not halted",
    )

    schedule = unique("every-second")
    body = {
        "id": schedule,
        "cron": "* * * * * *",
        "promiseId": "{{.id}}-{{.timestamp}}",
        "promiseTimeout": 60_000,
        "promiseParam": {},
        "promiseTags": {"resonate:target": f"poll://any@{unique('nobody')}"},
    }
    status, data = status_and_data(standin.post("schedule.create", body))
    assert status == 200 and data["schedule"]["nextRunAt"] > 0
    assert "lastRunAt" not in data["schedule"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = status_and_data(
            standin.post("promise.search", {"tags": {"resonate:schedule": schedule}})
        )[1]
        if found["promises"]:
            break
        time.sleep(0.1)
    assert found["promises"], "the schedule never fired"
    assert found["promises"][0]["id"].startswith(f"{schedule}-")
    assert status_and_data(standin.post("schedule.delete", {"id": schedule})) == (200, {})
    assert status_and_data(standin.post("schedule.get", {"id": schedule})) == (
        404,
        "Schedule not found",
    )
    wire_check(standin)


def test_messages_route_by_unicast_and_anycast(standin, wire_check) -> None:
    group = unique("group")
    a, b = PollReader(standin, group, "a"), PollReader(standin, group, "b")
    assert (a.status, b.status) == (200, 200)
    assert a.content_type.startswith("text/event-stream")

    create(standin, unique("uni"), f"poll://uni@{group}/b")
    message = b.next()
    assert message["kind"] == "execute"
    assert message["head"] == {"serverUrl": standin.url.replace("127.0.0.1", "localhost")}
    assert message["data"]["task"]["version"] == 0

    create(standin, unique("prefer"), f"poll://any@{group}/a")
    assert a.next()["kind"] == "execute"

    # Nobody named c is connected: unicast drops it, anycast falls back to the group.
    create(standin, unique("uni-c"), f"poll://uni@{group}/c")
    create(standin, unique("any-c"), f"poll://any@{group}/c")
    for _ in range(4):
        create(standin, unique("spread"), f"poll://any@{group}")
    # Messages are routed in request order, so once the last five have arrived
    # the dropped one would have been there too.
    received = drain([a, b], count=5)
    ids = [m["data"]["task"]["id"] for _, m in received]
    assert not any(i.startswith("uni-c") for i in ids), ids
    assert a.nothing_pending() and b.nothing_pending()
    assert sum(1 for reader, _ in received if reader is a) >= 2
    assert sum(1 for reader, _ in received if reader is b) >= 2

    # Listeners get unblock with an empty head.
    awaited = unique("awaited")
    create(standin, awaited)
    standin.post(
        "promise.register_listener", {"awaited": awaited, "address": f"poll://uni@{group}/a"}
    )
    standin.post(
        "promise.settle", {"id": awaited, "state": "rejected", "value": {"data": "Im5vIg=="}}
    )
    unblock = a.next()
    assert unblock["kind"] == "unblock" and unblock["head"] == {}
    assert unblock["data"]["promise"]["state"] == "rejected"
    a.close()
    b.close()
    wire_check(standin)


def test_message_for_an_empty_group_is_dropped_and_resent_on_retry(
    start_standin, wire_check
) -> None:
    standin = start_standin(RESONATE_TASKS__RETRY_TIMEOUT="700")
    group = unique("late")
    id = unique("job")
    create(standin, id, f"poll://any@{group}")  # its execute goes out now, to nobody
    reader = PollReader(standin, group, "late-joiner")
    started = time.monotonic()
    message = reader.next(timeout=5)
    assert message["data"]["task"] == {"id": id, "version": 0}
    assert time.monotonic() - started < 2
    reader.close()
    wire_check(standin)


def test_closed_stream_stops_receiving_at_once(standin) -> None:
    group = unique("group")
    port = int(standin.url.rsplit(":", 1)[1])
    # A stream whose client vanishes, as when a worker is killed: open it on a
    # raw socket, read the response head, and close the socket.
    with socket.create_connection(("127.0.0.1", port)) as doomed:
        doomed.sendall(f"GET /poll/{group}/doomed HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert doomed.recv(4096).startswith(b"HTTP/1.1 200")
    wait_until(
        lambda: re.search(rf"closed: group={group} pid=doomed", standin.log()),
        "the stand-in to drop the closed stream",
    )
    survivor = PollReader(standin, group, "survivor")
    for _ in range(3):
        create(standin, unique("after"), f"poll://any@{group}")
    for _ in range(3):
        assert survivor.next()["kind"] == "execute"
    survivor.close()


def test_auth_checks_tokens_and_prefixes(start_standin, wire_check) -> None:
    standin = start_standin(RESONATE_AUTH__PUBLICKEY="none")

    def token(**claims: Any) -> str:
        return jwt.encode({"exp": int(time.time()) + 600, **claims}, key="", algorithm="none")

    scoped = token(prefix="tenant-a")
    assert status_and_data(standin.post("promise.get", {"id": "x"})) == (401, "Unauthorized")
    expired = jwt.encode({"exp": int(time.time()) - 10, "role": "admin"}, key="", algorithm="none")
    assert status_and_data(standin.post("promise.get", {"id": "x"}, auth=expired)) == (
        401,
        "Unauthorized",
    )
    assert status_and_data(standin.post("promise.get", {"id": "x"}, auth=token()))[0] == 403
    assert status_and_data(standin.post("promise.get", {"id": "tenant-b"}, auth=scoped)) == (
        403,
        "Forbidden",
    )
    assert status_and_data(standin.post("promise.get", {"id": "tenant-a1"}, auth=scoped)) == (
        404,
        "Promise not found",
    )
    assert status_and_data(standin.post("promise.search", {}, auth=scoped))[0] == 403
    assert status_and_data(standin.post("promise.search", {}, auth=token(role="Admin")))[0] == 200

    assert PollReader(standin, "g", "p").status == 401
    authorized = PollReader(standin, "g", "p", headers={"Authorization": f"Bearer {scoped}"})
    assert authorized.status == 200
    authorized.close()
    wire_check(standin)
