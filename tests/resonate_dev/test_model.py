"""The stand-in's state machine in process: timeouts, resumption and their cost.

Fast checks of the transitions the SDK-level tests rely on, driven with an
explicit clock instead of waiting for real time to pass.
"""

from __future__ import annotations

import time
from typing import Any

from resonate_dev.deadlines import DeadlineQueue
from resonate_dev.model import StandInState

T0 = 1_800_000_000_000
FAR = T0 + 86_400_000


def request(kind: str, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "corrId": "c", **data}


def create_action(id: str, timeout_at: int, **tags: str) -> dict[str, Any]:
    return {
        "kind": "promise.create",
        "head": {},
        "data": {"id": id, "timeoutAt": timeout_at, "tags": tags},
    }


def suspended_workflow(state: StandInState, id: str, child_timeout_at: int, now: int = T0) -> None:
    """A workflow task suspended on a bare promise (``ctx.promise``) it created."""
    created = state.apply(
        now,
        request(
            "task.create",
            pid="w",
            ttl=60_000,
            action=create_action(id, FAR, **{"resonate:target": "poll://any@wf"}),
        ),
    )
    assert created["status"] == 200, created
    child = f"{id}:1"
    fenced = state.apply(
        now,
        request(
            "task.fence",
            id=id,
            version=1,
            action=create_action(child, child_timeout_at, **{"resonate:external": "true"}),
        ),
    )
    assert fenced["action"]["head"]["status"] == 200, fenced
    callback = {
        "kind": "promise.register_callback",
        "head": {},
        "data": {"awaiter": id, "awaited": child},
    }
    suspended = state.apply(now, request("task.suspend", id=id, version=1, actions=[callback]))
    assert suspended["status"] == 200, suspended


def test_bare_promise_times_out_on_tick_and_resumes_its_awaiter() -> None:
    state = StandInState(server_url="http://resonate:8001")
    suspended_workflow(state, "wf", child_timeout_at=T0 + 1_000)

    state.outgoing = []
    state.tick(T0 + 999)
    assert state.promises["wf:1"].state == "pending"
    assert state.outgoing == []

    state.tick(T0 + 1_000)
    assert state.promises["wf:1"].state == "rejected_timedout"
    assert state.promises["wf:1"].settled_at == T0 + 1_000
    task = state.tasks["wf"]
    assert (task.state, task.version, task.resumes) == ("pending", 1, {"wf:1"})
    [message] = state.outgoing
    assert message.address == "poll://any@wf"
    assert message.message == {
        "kind": "execute",
        "head": {"serverUrl": "http://resonate:8001"},
        "data": {"task": {"id": "wf", "version": 1}},
    }


def test_lapsed_lease_sends_the_task_to_the_group_again() -> None:
    state = StandInState()
    state.apply(
        T0,
        request(
            "task.create",
            pid="w",
            ttl=2_000,
            action=create_action("job", FAR, **{"resonate:target": "poll://any@g"}),
        ),
    )
    state.outgoing = []
    state.tick(T0 + 1_999)
    assert state.tasks["job"].state == "acquired"
    state.tick(T0 + 2_000)
    assert state.tasks["job"].state == "pending"
    assert [m.message["data"]["task"] for m in state.outgoing] == [{"id": "job", "version": 1}]
    acquired = state.apply(
        T0 + 2_001, request("task.acquire", id="job", version=1, pid="w2", ttl=2_000)
    )
    assert acquired["task"]["version"] == 2


def test_deadline_queue_pops_due_ids_in_time_order_once() -> None:
    queue = DeadlineQueue()
    queue.arm("late", 30)
    queue.arm("early", 10)
    queue.arm("moved", 5)
    queue.arm("moved", 20)  # re-arming replaces
    queue.arm("gone", 1)
    queue.disarm("gone")
    assert [id for id, _ in queue.pop_due(25)] == ["early", "moved"]
    assert queue.pop_due(25) == []
    assert queue.next_due() == 30
    assert len(queue) == 1


def test_tick_with_ten_thousand_pending_visits_only_what_is_due() -> None:
    state = StandInState()
    for n in range(10_000):
        suspended_workflow(state, f"wf{n}", child_timeout_at=FAR - n)
    assert len(state.p_timeouts) == 20_000

    started = time.perf_counter()
    for step in range(100):
        state.tick(T0 + step)
    idle = (time.perf_counter() - started) / 100
    # The SDK's list-based model scans every timeout on every tick (several ms
    # at this size); here an idle tick only peeks at the heap.
    assert idle < 0.001, f"idle tick took {idle * 1000:.3f} ms"

    state.tick(FAR - 9_990)  # the ten earliest children time out
    assert len(state.outgoing) == 10
    assert sum(1 for t in state.tasks.values() if t.state == "pending") == 10
