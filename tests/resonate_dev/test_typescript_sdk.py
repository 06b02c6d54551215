"""The official TypeScript SDK (@resonatehq/sdk 0.11.5 from npm) as a second client.

It validates every response and message against its own type guards and
refuses anything that does not match ("response did not match request"), so
it running at all is a check on the stand-in's wire format; each test also
checks every frame of the run with those guards explicitly.
"""

from __future__ import annotations

from tests.resonate_dev.conftest import unique


def test_typescript_durable_workflow_with_a_step_and_a_sleep(standin, sdk, wire_check) -> None:
    workflow = unique("ts-flow")

    outcome = sdk.ts_run_workflow(standin.url, unique("ts-group"), unique("ts-pid"), workflow, 600)

    assert outcome["ok"], outcome
    assert outcome["result"]["greeting"] == "hello durable"
    assert outcome["result"]["slept"] >= 600
    record = standin.post("promise.get", {"id": workflow}).json()["data"]["promise"]
    assert record["state"] == "resolved"
    timers = standin.post("promise.search", {"tags": {"resonate:origin": workflow}}).json()["data"][
        "promises"
    ]
    sleeps = [p for p in timers if p["tags"].get("resonate:timer") == "true"]
    assert len(sleeps) == 1
    assert sleeps[0]["state"] == "resolved"
    checked = wire_check(standin)
    # The sleep's wake-up reached the workflow's process as an execute message.
    assert checked["message"] >= 1


def test_python_workflow_rpcs_to_a_typescript_worker(standin, sdk, wire_check) -> None:
    ts_group, ts_pid = unique("ts-workers"), unique("ts-worker")
    sdk.ts_worker(standin.url, ts_group, ts_pid)
    py_group = unique("py-orchestrators")
    sdk.py_worker(standin.url, py_group, unique("py-orch"))

    answer = sdk.call(
        standin.url, "rpc", unique("cross"), "call_typescript", py_group, f'["py", "{ts_group}"]'
    )

    assert answer["ok"], answer
    assert answer["value"]["reply"] == {"greeting": "hello py, from typescript", "servedBy": ts_pid}
    wire_check(standin)
