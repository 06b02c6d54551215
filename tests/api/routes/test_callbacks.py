"""Databricks' job notifications at the gateway (routes/callbacks.py): a hint that prompts a read of the run.

In process, on the real workflow (tests.support.pipeline_harness): Databricks
is the harness's fake workspace, whose run states the tests set.
"""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from pipeline_shared import promise_tree
from tests.support.gateway_app import SETTINGS, Gateway, serve
from tests.support.pipeline_harness import run_state

NOTIFICATION_USER = SETTINGS.DATABRICKS_NOTIFICATION_USERNAME
NOTIFICATION_PASSWORD = SETTINGS.DATABRICKS_NOTIFICATION_PASSWORD.get_secret_value()


def basic(user: str = NOTIFICATION_USER, password: str = NOTIFICATION_PASSWORD) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def notify(gateway: Gateway, run_id: int | str, event: str = "jobs.on_success", **headers: str) -> httpx.Response:
    payload = {
        "event_type": event,
        "workspace_id": "1234567890123456",
        "run": {"run_id": run_id},
        "job": {"job_id": 1003, "name": "Nightly refresh"},
    }
    return await gateway.client.post("/notifications/databricks", json=payload, headers=headers or basic())


# ── notifications ────────────────────────────────────────────────────────────


async def waiting_refresh(gateway: Gateway) -> tuple[str, int]:
    pipeline_id = (await gateway.start(job="nightly-refresh")).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    async with asyncio.timeout(5):  # the worker indexes the run as it starts watching it
        while await gateway.harness.promises_get(promise_tree.run_index_id(run_id := _run_of(gateway))) is None:
            await asyncio.sleep(0.01)
    return pipeline_id, run_id


def _run_of(gateway: Gateway) -> int:
    [run] = gateway.harness.jobs.runs_by_token.values()
    return run.run_id


async def test_a_notification_prompts_a_read_of_the_run_which_alone_decides(gateway: Gateway) -> None:
    pipeline_id, run_id = await waiting_refresh(gateway)

    # Databricks says the run succeeded; the run itself is still going: nothing changes.
    early = await notify(gateway, run_id, "jobs.on_success")
    assert (early.status_code, early.json()) == (202, {"run_id": run_id, "outcome": "scheduled"})
    await asyncio.sleep(0.3)
    assert (await gateway.client.get(f"/pipelines/{pipeline_id}")).json()["state"] == "waiting"

    # The run ends; a notification of another event gets its own check, which settles it.
    gateway.harness.jobs.states[run_id] = run_state("TERMINATED", "SUCCESS")
    gateway.harness.jobs.outputs[run_id] = json.dumps({"table": "sales", "rows": 12})
    ended = await notify(gateway, str(run_id), "jobs.on_failure")  # the event is a hint too
    assert ended.json()["outcome"] == "scheduled"

    done = await gateway.wait_for_state(pipeline_id, "succeeded")
    assert done["result"] == {"table": "sales", "rows": 12}
    [task] = done["databricks"]["report"]["tasks"]
    assert (task["result_state"], task["exit_value"]) == ("SUCCESS", '{"table": "sales", "rows": 12}')


async def test_notifications_are_rate_limited_per_pipeline_and_event(gateway: Gateway) -> None:
    _, run_id = await waiting_refresh(gateway)

    answers = [(await notify(gateway, run_id, "jobs.on_start")).json()["outcome"] for _ in range(20)]

    # One check per event per window (10 s by default), however many arrive.
    assert answers.count("scheduled") in (1, 2) and answers.count("already_scheduled") >= 18


async def test_a_notification_for_a_run_nobody_waits_on_is_ignored(gateway: Gateway) -> None:
    for run_id in (424242, "424243"):
        response = await notify(gateway, run_id)
        assert (response.status_code, response.json()["outcome"]) == (202, "ignored")


async def test_a_notification_about_a_finished_pipeline_is_acknowledged_and_ignored(gateway: Gateway) -> None:
    pipeline_id, run_id = await waiting_refresh(gateway)
    gateway.harness.jobs.states[run_id] = run_state("TERMINATED", "SUCCESS")
    gateway.harness.jobs.outputs[run_id] = json.dumps({"table": "sales", "rows": 12})
    assert (await notify(gateway, run_id, "jobs.on_success")).json()["outcome"] == "scheduled"
    done = await gateway.wait_for_state(pipeline_id, "succeeded")
    checks_before = [p for p in gateway.harness.promise_ids(pipeline_id) if ":hint" in p]

    # Databricks retries a notification it got no 2xx for; one that comes after the end is acknowledged.
    late = [await notify(gateway, run_id, event) for event in ("jobs.on_failure", "jobs.on_start")]

    assert [(r.status_code, r.json()["outcome"]) for r in late] == [(202, "ignored")] * 2
    assert (await gateway.client.get(f"/pipelines/{pipeline_id}")).json() == done
    # Nothing acted on: no check of the run, so nothing for the timeline (tests/api/index/test_events.py).
    assert [p for p in gateway.harness.promise_ids(pipeline_id) if ":hint" in p] == checks_before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(password="wrong"),
        basic(user="someone-else"),
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Bearer " + NOTIFICATION_PASSWORD},
    ],
)
async def test_a_notification_without_the_destinations_credentials_is_401(gateway: Gateway, headers: dict) -> None:
    _, run_id = await waiting_refresh(gateway)
    headers = headers or {"authorization": ""}

    response = await notify(gateway, run_id, **headers)

    assert response.status_code == 401 and response.json()["code"] == "invalid_notification_credentials"
    assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"event_type": "jobs.on_start"}', b'{"event_type": "x", "run": {"run_id": "12a"}}'],
)
async def test_a_body_that_is_not_a_notification_is_422(gateway: Gateway, body: bytes) -> None:
    response = await gateway.client.post(
        "/notifications/databricks", content=body, headers=basic() | {"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_notification"


async def test_without_a_password_the_gateway_takes_no_notifications() -> None:
    async with serve(SETTINGS.model_copy(update={"DATABRICKS_NOTIFICATION_PASSWORD": None})) as gateway:
        response = await notify(gateway, 1)
    assert response.status_code == 404 and "DATABRICKS_NOTIFICATION_PASSWORD" in response.json()["message"]
