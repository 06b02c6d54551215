"""The catalogue at the gateway (GET /jobs, starting any job) and Databricks' job notifications.

In process, on the real workflow (tests.support.pipeline_harness): Databricks
is the harness's fake workspace, whose run states the tests set.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from pipeline_api.auth.keys import DEVELOPMENT_ADMIN_API_KEY
from pipeline_shared import promise_tree
from tests.support.gateway_app import SETTINGS, Gateway, serve
from tests.support.pipeline_harness import JOB_IDS, run_state

NOTIFICATION_USER = SETTINGS.DATABRICKS_NOTIFICATION_USERNAME
NOTIFICATION_PASSWORD = SETTINGS.DATABRICKS_NOTIFICATION_PASSWORD.get_secret_value()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with serve() as gateway:
        yield gateway


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


# ── the catalogue ────────────────────────────────────────────────────────────


async def test_jobs_lists_what_the_caller_may_start_with_its_parameters(gateway: Gateway) -> None:
    listed = (await gateway.client.get("/jobs")).json()["jobs"]

    names = [job["name"] for job in listed]
    # The development key holds start/read/cancel; customer-report needs admin.
    assert names == ["csv-statistics", "word-frequencies", "nightly-refresh"]
    words = listed[1]
    assert (words["default"], words["completion"], listed[0]["default"]) == (False, "callback", True)
    assert {p["name"]: (p["required"], p["default"], p["integer"]) for p in words["parameters"]} == {
        "text": (True, None, None),
        "top": (False, "10", {"minimum": 1, "maximum": 100}),
    }
    [source] = listed[0]["parameters"]
    assert (source["url"], source["path"], source["allow_empty"]) == (
        {"schemes": ["https"], "hosts": []},
        {"prefixes": ["/Workspace/Shared/pipelines/"]},
        True,
    ), "a client sees what the parameter may be"


async def test_a_job_is_started_by_name_with_its_parameters_resolved(gateway: Gateway) -> None:
    started = await gateway.start(job="word-frequencies", parameters={"text": "to be or not to be"})

    assert started.status_code == 202, started.text
    doc = started.json()
    assert (doc["job"], doc["parameters"]) == ("word-frequencies", {"text": "to be or not to be", "top": "10"})
    assert doc["timeout_seconds"] == SETTINGS.catalogue.job("word-frequencies").default_timeout_seconds
    await gateway.wait_for_state(doc["id"], "waiting")
    [call] = gateway.harness.jobs.run_now_calls
    assert (call["text"], call["top"]) == ("to be or not to be", "10")
    assert gateway.harness.jobs.run_now_jobs == [JOB_IDS["word-frequencies"]]


async def test_a_job_that_never_calls_back_gets_only_its_own_parameters(gateway: Gateway) -> None:
    started = await gateway.start(job="nightly-refresh", parameters={"table": "inventory"})
    await gateway.wait_for_state(started.json()["id"], "waiting")

    assert gateway.harness.jobs.run_now_calls == [{"table": "inventory"}]


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"job": "nope"}, "body.job", "no job 'nope' in the catalogue; known: csv-statistics"),
        ({"job": "Bad Name"}, "body.job", "String should match pattern"),
        ({"job": "word-frequencies"}, "body.parameters.text", "is required (job 'word-frequencies')"),
        (
            {"job": "word-frequencies", "parameters": {"text": "x", "top": "0"}},
            "body.parameters.top",
            "is 0; it must be from 1 to 100",
        ),
        ({"parameters": {"colour": "blue"}}, "body.parameters.colour", "its parameters: source"),
        ({"job": "nightly-refresh", "parameters": {"table": "payroll"}}, "body.parameters.table", "must be one of"),
        ({"job": "nightly-refresh", "timeout_seconds": 86401}, "body.timeout_seconds", "at most 86400"),
    ],
)
async def test_a_request_that_does_not_fit_its_job_is_422_naming_it(
    gateway: Gateway, body: dict, where: str, says: str
) -> None:
    response = await gateway.start(**body)

    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(f"{where}: "), response.text
    assert says in response.text
    assert gateway.harness.jobs.run_now_calls == []


async def test_a_job_reserved_to_admins_is_403_for_others_and_nothing_starts(gateway: Gateway) -> None:
    response = await gateway.start(job="customer-report", parameters={"customer": "C-1"})

    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope" and "'customer-report'" in response.json()["message"]
    assert 'scope="admin"' in response.headers["www-authenticate"]
    await asyncio.sleep(0.1)
    assert gateway.harness.jobs.run_now_calls == []


async def test_the_development_admin_key_starts_the_job_reserved_to_admins(gateway: Gateway) -> None:
    """Issue 20, finding 10: customer-report, the example of `poll`, could not be tried on the development stack."""
    admin = {"authorization": f"Bearer {DEVELOPMENT_ADMIN_API_KEY}"}
    listed = (await gateway.client.get("/jobs", headers=admin)).json()["jobs"]
    started = await gateway.client.post(
        "/pipelines",
        json={"email": "ops@example.com", "job": "customer-report", "parameters": {"customer": "C-1042"}},
        headers=admin,
    )

    assert "customer-report" in [job["name"] for job in listed]
    assert started.status_code == 202, started.text
    async with asyncio.timeout(5):
        while not gateway.harness.jobs.run_now_calls:
            await asyncio.sleep(0.02)
    assert gateway.harness.jobs.run_now_calls == [{"customer": "C-1042", "period": "month"}]


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
