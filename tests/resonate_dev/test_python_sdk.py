"""The Python SDK (resonate-sdk 0.8.1) running durable workflows on the stand-in.

Each worker and client is its own OS process talking HTTP + SSE to the
stand-in, as the product's services do. Every test ends by checking that each
frame the stand-in sent during it passes the TypeScript SDK's validators.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import jwt

from tests.resonate_dev.conftest import StandIn, unique, wait_until


def task_state(standin: StandIn, id: str) -> str | None:
    """The task's state as the stand-in reports it, None while it does not exist."""
    data = standin.post("task.get", {"id": id}).json()["data"]
    return data["task"]["state"] if isinstance(data, dict) else None


def test_workflow_rpcs_to_a_worker_in_another_group(standin, sdk, wire_check) -> None:
    orchestrators, greeters = unique("orchestrators"), unique("greeters")
    sdk.py_worker(standin.url, orchestrators, unique("orch"))
    greeter = unique("greeter")
    sdk.py_worker(standin.url, greeters, greeter)

    answer = sdk.call(
        standin.url, "rpc", unique("wf"), "orchestrate", orchestrators, f'["ada", "{greeters}"]'
    )

    assert answer["ok"], answer
    assert answer["value"]["reply"] == {"greeting": "hello ada", "servedBy": greeter}
    wire_check(standin)


def test_promise_settled_by_a_third_process_resumes_the_suspended_workflow(
    standin, sdk, wire_check
) -> None:
    group = unique("approvals")
    sdk.py_worker(standin.url, group, unique("approver"))
    workflow = unique("approval")
    waiting = sdk.py_client(standin.url, "rpc", workflow, "await_approval", group, "[60]")

    # The workflow's first durable child is its bare promise, `{id}:1`; once the
    # workflow has suspended on it, its task is suspended.
    approval = f"{workflow}:1"
    wait_until(
        lambda: task_state(standin, workflow) == "suspended",
        "the workflow to suspend on its approval",
    )
    assert (
        standin.post("promise.get", {"id": approval}).json()["data"]["promise"]["state"]
        == "pending"
    )

    settled = sdk.call(standin.url, "resolve", approval, '{"approved": true}')
    assert settled == {
        "ok": True,
        "value": {"id": approval, "state": "resolved", "value": {"approved": True}},
    }

    answer = sdk.answer(waiting)
    assert answer["ok"], answer
    assert answer["value"]["outcome"] == "settled"
    assert answer["value"]["value"] == {"approved": True}
    wire_check(standin)


def test_anycast_spreads_calls_over_the_members_of_a_group(standin, sdk, wire_check) -> None:
    group = unique("pool")
    members = [unique("member"), unique("member")]
    for member in members:
        sdk.py_worker(standin.url, group, member)

    clients = [
        sdk.py_client(standin.url, "rpc", unique("call"), "where_am_i", group, f"[{n}]")
        for n in range(4)
    ]
    answers = [sdk.answer(client) for client in clients]

    assert all(answer["ok"] for answer in answers), answers
    served = Counter(answer["value"]["servedBy"] for answer in answers)
    assert set(served) == set(members), served
    wire_check(standin)


def test_task_of_a_killed_worker_is_redelivered_to_another_member(
    standin, sdk, wire_check, tmp_path: Path
) -> None:
    group = unique("fragile")
    # A short lease, so the dead worker's claim lapses within seconds.
    workers = {
        pid: sdk.py_worker(standin.url, group, pid, ttl=2) for pid in (unique("w"), unique("w"))
    }
    marker = tmp_path / "markers"
    marker.mkdir()
    waiting = sdk.py_client(standin.url, "rpc", unique("job"), "start_once", group, f'["{marker}"]')

    started = marker / "started"
    first = wait_until(
        lambda: started.exists() and started.read_text(), "a worker to start the task"
    )
    workers[first].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    answer = sdk.answer(waiting)
    assert answer["ok"], answer
    (survivor,) = set(workers) - {first}
    assert answer["value"] == {"startedBy": first, "finishedBy": survivor}
    # Lease (2 s) plus a tick, not the 30 s retry: the dead stream was dropped at once.
    assert time.monotonic() - killed_at < 10
    wire_check(standin)


def test_targeted_promise_times_out(standin, sdk, wire_check) -> None:
    nobody = unique("nobody")
    call = unique("unserved")

    answer = sdk.call(standin.url, "rpc", call, "greet", nobody, '["x"]', "--timeout", "1")

    assert answer == {"ok": False, "error": "ResonateTimeoutError", "message": "timeout"}
    record = standin.post("promise.get", {"id": call}).json()["data"]["promise"]
    assert record["state"] == "rejected_timedout"
    assert record["settledAt"] == record["timeoutAt"]
    assert standin.post("task.get", {"id": call}).json()["data"]["task"]["state"] == "fulfilled"
    wire_check(standin)


def test_bare_promise_timeout_resumes_the_awaiting_workflow(standin, sdk, wire_check) -> None:
    group = unique("approvals")
    sdk.py_worker(standin.url, group, unique("approver"))
    workflow = unique("approval")

    answer = sdk.call(standin.url, "rpc", workflow, "await_approval", group, "[1]")

    assert answer["ok"], answer
    assert answer["value"]["outcome"] == "rejected"
    approval = standin.post("promise.get", {"id": f"{workflow}:1"}).json()["data"]["promise"]
    assert approval["state"] == "rejected_timedout"
    assert approval["tags"]["resonate:external"] == "true"
    assert "resonate:target" not in approval["tags"]
    wire_check(standin)


def test_sdk_runs_with_a_token_when_auth_is_on(start_standin, sdk, wire_check) -> None:
    standin = start_standin(RESONATE_AUTH__PUBLICKEY="none")
    token = jwt.encode({"role": "admin", "exp": int(time.time()) + 600}, key="", algorithm="none")
    env = {"RESONATE_TOKEN": token}
    orchestrators, greeters = unique("orchestrators"), unique("greeters")
    sdk.py_worker(standin.url, orchestrators, unique("orch"), env=env)
    sdk.py_worker(standin.url, greeters, unique("greeter"), env=env)

    answer = sdk.call(
        standin.url,
        "rpc",
        unique("wf"),
        "orchestrate",
        orchestrators,
        f'["bo", "{greeters}"]',
        env=env,
    )

    assert answer["ok"], answer
    assert answer["value"]["reply"]["greeting"] == "hello bo"
    refused = sdk.call(standin.url, "get", unique("anything"))
    assert refused["ok"] is False
    assert refused["error"] == "ServerError"
    assert "Unauthorized" in refused["message"]
    wire_check(standin)


def test_durable_sleep_and_a_detached_child(standin, sdk, wire_check) -> None:
    group = unique("sleepers")
    sdk.py_worker(standin.url, group, unique("sleeper"))

    started = time.monotonic()
    napped = sdk.call(standin.url, "rpc", unique("nap"), "nap", group, "[1]")
    assert napped["ok"], napped
    assert napped["value"]["rested"] == 1
    assert time.monotonic() - started >= 1

    spawned = sdk.call(
        standin.url, "rpc", unique("spawner"), "fire_and_forget", group, f'["{group}"]'
    )
    assert spawned["ok"], spawned
    child = spawned["value"]

    def child_state() -> str | None:
        data = standin.post("promise.get", {"id": child}).json()["data"]
        return data["promise"]["state"] if isinstance(data, dict) else None

    wait_until(lambda: child_state() == "resolved", "the detached child to finish")
    wire_check(standin)
