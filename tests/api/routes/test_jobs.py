"""The catalogue at the gateway: GET /jobs, and starting any job by name (routes/jobs.py, routes/pipelines.py).

In process, on the real workflow (tests.support.pipeline_harness): Databricks
is the harness's fake workspace.
"""

from __future__ import annotations

import asyncio

import pytest

from pipeline_api.auth.keys import DEVELOPMENT_ADMIN_API_KEY
from tests.support.gateway_app import SETTINGS, Gateway
from tests.support.pipeline_harness import JOB_IDS

# ── the catalogue ────────────────────────────────────────────────────────────


async def test_jobs_lists_what_the_caller_may_start_with_its_parameters(gateway: Gateway) -> None:
    listed = (await gateway.client.get("/jobs")).json()["jobs"]

    names = [job["name"] for job in listed]
    # The development key holds start/read/cancel/approve; customer-report needs admin.
    # The onboarding jobs are not standalone: only their pipeline is startable.
    assert names == ["csv-statistics", "word-frequencies", "nightly-refresh", "customer-onboarding"]
    assert [job["kind"] for job in listed] == ["job", "job", "job", "pipeline"]
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


async def test_a_scheduled_pipeline_lists_its_cron_and_next_firing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from pipeline_api.settings import GatewaySettings
    from tests.support.gateway_app import serve
    from tests.support.pipeline_harness import CATALOGUE_FILE

    scheduled = tmp_path / "catalogue.toml"
    scheduled.write_text(
        CATALOGUE_FILE.read_text(encoding="utf-8")
        + '\n[pipelines.customer-onboarding.schedule]\ncron = "30 2 * * *"\nemail = "ops@example.com"\n',
        encoding="utf-8",
    )
    settings = GatewaySettings(**(SETTINGS.model_dump() | {"JOB_CATALOGUE_FILE": scheduled}))

    async with serve(settings) as gateway:
        listed = {job["name"]: job for job in (await gateway.client.get("/jobs")).json()["jobs"]}

    onboarding, csv = listed["customer-onboarding"], listed["csv-statistics"]
    assert (onboarding["schedule"], csv["schedule"], csv["next_firing_at"]) == ("30 2 * * *", None, None)
    firing = datetime.fromisoformat(onboarding["next_firing_at"])
    assert (firing.hour, firing.minute, firing.utcoffset()) == (2, 30, timedelta(0))
    assert datetime.now(UTC) < firing <= datetime.now(UTC) + timedelta(days=1)
