"""The gateway's routes over ASGI, with the real workflow running in process.

Requests go through FastAPI exactly as over the network; Resonate is its
in-process server, Databricks and the notifier are the doubles of
tests.support.pipeline_harness.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline_shared import promise_tree
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.gateway_app import SETTINGS, Gateway, first_callback_id
from tests.support.pipeline_harness import SECRET


async def test_start_answers_202_with_the_status_document_and_location(gateway: Gateway) -> None:
    response = await gateway.start(
        id="nightly-1", parameters={"source": "/Workspace/Shared/pipelines/k.csv"}, timeout_seconds=90
    )

    assert response.status_code == 202
    assert response.headers["location"] == "/pipelines/nightly-1"
    doc = response.json()
    assert doc["id"] == "nightly-1" and doc["state"] in {"starting", "waiting"}
    assert (doc["email"], doc["parameters"], doc["timeout_seconds"]) == (
        "user@example.com",
        {"source": "/Workspace/Shared/pipelines/k.csv"},
        90,
    )
    waiting = await gateway.wait_for_state("nightly-1", "waiting")
    run = next(iter(gateway.harness.jobs.runs_by_token.values()))
    assert waiting["databricks"] == {
        "run_id": run.run_id,
        "run_page_url": run.run_page_url,
        "job_id": run.job_id,
        "report": None,
    }
    assert waiting["job"] == "csv-statistics"
    assert waiting["created_at"] <= waiting["updated_at"]


async def test_a_generated_id_when_none_is_given(gateway: Gateway) -> None:
    response = await gateway.client.post("/pipelines", json={"email": "a@example.com"})
    assert response.status_code == 202
    assert response.headers["location"] == f"/pipelines/{response.json()['id']}"
    assert response.json()["timeout_seconds"] == SETTINGS.catalogue.job(None).default_timeout_seconds


async def test_signed_callback_settles_the_pipeline(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")

    response = await gateway.callback(pipeline_id, {"result": {"rows": 3, "columns": 2}})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "promise_id": first_callback_id(pipeline_id),
        "pipeline_id": pipeline_id,
        "outcome": "accepted",
    }
    done = await gateway.wait_for_state(pipeline_id, "succeeded")
    assert done["result"] == {"rows": 3, "columns": 2}
    assert done["notification"]["delivered"] is True
    assert [n.pipeline_id for n in gateway.harness.notifications] == [pipeline_id]


async def test_failure_callback_fails_the_pipeline_with_the_cause(gateway: Gateway) -> None:
    # A job whose failed runs nobody waits to repair: a failure ends the pipeline.
    pipeline_id = (await gateway.start(job="nightly-refresh")).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    error = {"type": "ZeroDivisionError", "message": "division by zero"}

    response = await gateway.callback(pipeline_id, {"status": "failure", "result": None, "error": error})

    assert response.status_code == 200
    done = await gateway.wait_for_state(pipeline_id, "failed")
    assert done["error"] == error


async def test_a_failed_run_awaits_repair_and_a_repair_carries_the_same_pipeline_to_success(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start(parameters={"source": "/Workspace/Shared/pipelines/typo.csv"})).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    error = {"type": "KeyError", "message": "'colum'"}
    await gateway.callback(pipeline_id, {"status": "failure", "result": None, "error": error})

    awaiting = await gateway.wait_for_state(pipeline_id, "awaiting_repair")
    assert awaiting["error"] == error and awaiting["repair_deadline"]
    assert [a["outcome"] for a in awaiting["attempts"]] == ["failure"]
    cancel = await gateway.client.post(f"/pipelines/{pipeline_id}/cancel")
    assert (cancel.status_code, cancel.json()["code"]) == (409, "pipeline_awaiting_repair")
    bad = await gateway.client.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": {"colour": "red"}})
    assert bad.status_code == 422 and bad.json()["message"].startswith("body.parameters.colour: ")
    for source, rule in [("/etc/passwd", "must be a path under"), ("http://127.0.0.1:8080/x", "scheme 'http'")]:
        refused = await gateway.client.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": {"source": source}})
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_request", refused.text
        assert refused.json()["message"].startswith("body.parameters.source: ") and rule in refused.json()["message"]
    assert (await gateway.client.get(f"/pipelines/{pipeline_id}")).json()["state"] == "awaiting_repair"
    assert not gateway.harness.jobs.repairs

    repaired = await gateway.client.post(
        f"/pipelines/{pipeline_id}/repair", json={"parameters": {"source": "/Workspace/Shared/pipelines/ok.csv"}}
    )
    assert repaired.status_code == 202, repaired.text
    again = await gateway.client.post(f"/pipelines/{pipeline_id}/repair")
    assert (again.status_code, again.json()["code"]) == (409, "not_awaiting_repair")

    # The repair's attempt is recorded once its job step's workflow resumes;
    # until then the document reads waiting with the decision's parameters.
    async with asyncio.timeout(10):
        while len((waiting := await gateway.wait_for_state(pipeline_id, "waiting"))["attempts"]) < 2:
            await asyncio.sleep(0.02)
    record = waiting["attempts"][-1]
    assert (record["number"], record["by"], record["parameters"]) == (
        1,
        "key:dev",
        {"source": "/Workspace/Shared/pipelines/ok.csv"},
    )
    [run] = gateway.harness.jobs.runs_by_token.values()
    [repair] = gateway.harness.jobs.repairs[run.run_id]
    promise_id = repair["callback_promise_id"]
    assert promise_id != first_callback_id(pipeline_id)
    body = json.dumps({"promise_id": promise_id, "status": "success", "result": {"rows": 9}}).encode()
    signed = sign_callback(derive_callback_key(SECRET, promise_id), body) | {"content-type": "application/json"}
    assert (await gateway.client.post("/callbacks/databricks", content=body, headers=signed)).status_code == 200

    done = await gateway.wait_for_state(pipeline_id, "succeeded")
    assert done["result"] == {"rows": 9}
    assert [(a["number"], a["outcome"]) for a in done["attempts"]] == [(0, "failure"), (1, "success")]


async def fail_the_run(gateway: Gateway, promise_id: str) -> None:
    """The notebook of the run reporting on ``promise_id`` calls back a failure."""
    error = {"type": "FileNotFoundError", "message": "no such file"}
    body = json.dumps({"promise_id": promise_id, "status": "failure", "error": error}).encode()
    signed = sign_callback(derive_callback_key(SECRET, promise_id), body) | {"content-type": "application/json"}
    assert (await gateway.client.post("/callbacks/databricks", content=body, headers=signed)).status_code == 200


async def test_the_status_shows_the_parameters_a_repair_changed_and_a_repair_changing_nothing_keeps_them(
    gateway: Gateway,
) -> None:
    """Issue 20, finding 7: after a repair changed ``source`` the status document showed the start's."""
    started_with = {"source": "/Workspace/Shared/pipelines/typo.csv"}
    pipeline_id = (await gateway.start(parameters=started_with)).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    await fail_the_run(gateway, first_callback_id(pipeline_id))
    await gateway.wait_for_state(pipeline_id, "awaiting_repair")
    fixed = {"source": "/Workspace/Shared/pipelines/fixed.csv"}
    repaired = await gateway.client.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": fixed})

    assert repaired.status_code == 202, repaired.text
    assert (repaired.json()["parameters"], repaired.json()["parameters_at_start"]) == (fixed, started_with)
    assert repaired.json()["error"] is None, "the failed attempt's error is in attempts, not the pipeline's"
    waiting = await gateway.wait_for_state(pipeline_id, "waiting")
    assert (waiting["parameters"], waiting["parameters_at_start"]) == (fixed, started_with)

    # The repaired run fails too; a repair that names no parameter reruns with what it ran with.
    [run] = gateway.harness.jobs.runs_by_token.values()
    async with asyncio.timeout(5):
        while not gateway.harness.jobs.repairs.get(run.run_id):
            await asyncio.sleep(0.02)
    await fail_the_run(gateway, gateway.harness.jobs.repairs[run.run_id][0]["callback_promise_id"])
    again = await gateway.wait_for_state(pipeline_id, "awaiting_repair")
    assert (again["parameters"], again["parameters_at_start"]) == (fixed, started_with)
    assert (await gateway.client.post(f"/pipelines/{pipeline_id}/repair")).status_code == 202
    async with asyncio.timeout(5):
        while len(gateway.harness.jobs.repairs[run.run_id]) < 2:
            await asyncio.sleep(0.02)
    assert gateway.harness.jobs.repairs[run.run_id][1]["source"] == fixed["source"]
    second = gateway.harness.jobs.repairs[run.run_id][1]["callback_promise_id"]
    body = json.dumps({"promise_id": second, "status": "success", "result": {"rows": 9}}).encode()
    signed = sign_callback(derive_callback_key(SECRET, second), body) | {"content-type": "application/json"}
    assert (await gateway.client.post("/callbacks/databricks", content=body, headers=signed)).status_code == 200

    done = await gateway.wait_for_state(pipeline_id, "succeeded")
    assert (done["parameters"], done["parameters_at_start"]) == (fixed, started_with)
    assert [a["parameters"] for a in done["attempts"]] == [None, fixed, fixed]
    # Each email shows what the attempt it tells of ran with, as the status document does.
    told = [(n.kind, n.parameters) for n in gateway.harness.notifications]
    assert told == [("awaiting_repair", started_with), ("awaiting_repair", fixed), ("outcome", fixed)]


async def test_a_pipeline_never_repaired_shows_its_parameters_and_no_start_parameters(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start(parameters={"source": "/Workspace/Shared/pipelines/a.csv"})).json()["id"]
    waiting = await gateway.wait_for_state(pipeline_id, "waiting")
    assert (waiting["parameters"], waiting["parameters_at_start"]) == (
        {"source": "/Workspace/Shared/pipelines/a.csv"},
        None,
    )


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("/etc/passwd", "must be a path under /Workspace/Shared/pipelines/"),
        ("file:///etc/passwd", "is a URL of scheme 'file'"),
        ("https://example.com/a.csv", "names host 'example.com', which is not an allowed host"),
    ],
)
async def test_a_source_outside_the_rule_is_422_naming_it_and_nothing_starts(
    gateway: Gateway, source: str, rule: str
) -> None:
    response = await gateway.start(id="refused-1", parameters={"source": source})

    assert (response.status_code, response.json()["code"]) == (422, "invalid_request"), response.text
    assert response.json()["message"].startswith("body.parameters.source: ") and rule in response.json()["message"]
    assert (await gateway.client.get("/pipelines/refused-1")).status_code == 404
    assert gateway.harness.jobs.run_now_calls == []


async def test_abandon_ends_it_failed_and_only_a_pipeline_awaiting_repair_can_be_decided(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    early = await gateway.client.post(f"/pipelines/{pipeline_id}/abandon")
    assert (early.status_code, early.json()["code"]) == (409, "not_awaiting_repair")
    await gateway.callback(pipeline_id, {"status": "failure", "result": None, "error": {"type": "E", "message": "m"}})
    await gateway.wait_for_state(pipeline_id, "awaiting_repair")

    abandoned = await gateway.client.post(f"/pipelines/{pipeline_id}/abandon")

    assert abandoned.status_code == 202, abandoned.text
    done = await gateway.wait_for_state(pipeline_id, "failed")
    assert done["error"]["type"] == "Abandoned" and "key:dev" in done["error"]["message"]
    after = await gateway.client.post(f"/pipelines/{pipeline_id}/repair")
    assert (after.status_code, after.json()["code"]) == (409, "not_awaiting_repair")


async def test_same_request_again_is_the_same_pipeline(gateway: Gateway) -> None:
    first = await gateway.start(id="same-1", parameters={"source": "/Workspace/Shared/pipelines/1.csv"})
    again = await gateway.start(id="same-1", parameters={"source": "/Workspace/Shared/pipelines/1.csv"})

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == "same-1"
    await gateway.wait_for_state("same-1", "waiting")
    assert len(gateway.harness.jobs.runs_by_token) == 1


async def test_concurrent_identical_starts_give_one_pipeline_and_one_run(gateway: Gateway) -> None:
    responses = await asyncio.gather(*(gateway.start(id="burst-1") for _ in range(50)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [202], "exactly one request is told it created the pipeline"
    assert {r.json()["id"] for r in responses} == {"burst-1"}
    await gateway.wait_for_state("burst-1", "waiting")
    await asyncio.sleep(0.2)
    assert len(gateway.harness.jobs.runs_by_token) == 1


async def test_identical_starts_that_all_read_before_any_creates_get_one_202(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request's read finds nothing before any of them creates: the race
    # a busy gateway (or several) can meet. Only the creator may answer 202.
    racers = 20
    promises = gateway.harness.resonate.promises
    read = promises.get
    all_have_read = asyncio.Barrier(racers)
    first_reads = 0

    async def get(promise_id: str) -> Any:
        nonlocal first_reads
        first_reads += 1
        try:
            return await read(promise_id)
        finally:
            if first_reads <= racers:
                await all_have_read.wait()

    monkeypatch.setattr(promises, "get", get)
    responses = await asyncio.gather(*(gateway.start(id="race-1") for _ in range(racers)))

    assert all_have_read.n_waiting == 0 and first_reads >= racers
    assert sorted(r.status_code for r in responses) == [200] * (racers - 1) + [202]
    await gateway.wait_for_state("race-1", "waiting")
    assert len(gateway.harness.jobs.runs_by_token) == 1


async def test_same_id_with_a_different_request_is_a_conflict(gateway: Gateway) -> None:
    await gateway.start(id="taken-1", parameters={"source": "/Workspace/Shared/pipelines/1.csv"})

    response = await gateway.start(id="taken-1", parameters={"source": "/Workspace/Shared/pipelines/2.csv"})

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "pipeline_conflict" and "parameters" in body["message"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"id": "bad id!", "email": "a@example.com"}, "body.id"),
        ({"id": "x" * 65, "email": "a@example.com"}, "body.id"),
        ({"id": "a:b", "email": "a@example.com"}, "body.id"),
        ({"email": "not-an-email"}, "body.email"),
        # Addresses the notifier cannot deliver to (pipeline_shared.recipients).
        ({"email": "üser@exämple.com"}, "body.email"),
        ({"email": "a" * 65 + "@example.com"}, "body.email"),
        ({"email": "a@example.com\r\nBcc: b@example.com"}, "body.email"),
        ({"email": "Support <a@example.com>"}, "body.email"),
        ({}, "body.email"),
        ({"email": "a@example.com", "parameters": {"n": 1}}, "body.parameters.n"),
        ({"email": "a@example.com", "parameters": {"bad key": "v"}}, "body.parameters"),
        ({"email": "a@example.com", "parameters": {"callback_url": "http://evil"}}, "body.parameters"),
        ({"email": "a@example.com", "parameters": {"big": "x" * 9000}}, "body.parameters"),
        ({"email": "a@example.com", "timeout_seconds": 0}, "body.timeout_seconds"),
        ({"email": "a@example.com", "timeout_seconds": "soon"}, "body.timeout_seconds"),
        ({"email": "a@example.com", "colour": "blue"}, "body.colour"),
    ],
)
async def test_invalid_start_requests_are_422_naming_the_field(
    gateway: Gateway, body: dict[str, Any], where: str
) -> None:
    response = await gateway.client.post("/pipelines", json=body)

    assert response.status_code == 422
    doc = response.json()
    assert doc["code"] == "invalid_request"
    assert doc["message"].startswith(where), doc["message"]


async def test_non_json_start_is_422(gateway: Gateway) -> None:
    response = await gateway.client.post("/pipelines", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


async def test_unknown_pipeline_is_404(gateway: Gateway) -> None:
    response = await gateway.client.get("/pipelines/nobody-here")
    assert response.status_code == 404
    assert response.json() == {"code": "pipeline_not_found", "message": "no pipeline with id 'nobody-here'"}


async def test_unknown_route_is_json_404(gateway: Gateway) -> None:
    response = await gateway.client.get("/nope")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


async def test_repeated_callback_changes_nothing(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    first = await gateway.callback(pipeline_id)
    done = await gateway.wait_for_state(pipeline_id, "succeeded")

    again = await gateway.callback(pipeline_id)

    assert (first.json()["outcome"], again.status_code, again.json()["outcome"]) == ("accepted", 200, "duplicate")
    assert (await gateway.client.get(f"/pipelines/{pipeline_id}")).json() == done
    assert len(gateway.harness.notifications) == 1


async def test_contradicting_callback_is_409(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    await gateway.callback(pipeline_id)

    response = await gateway.callback(
        pipeline_id, {"status": "failure", "result": None, "error": {"type": "E", "message": "m"}}
    )

    assert response.status_code == 409 and response.json()["code"] == "settlement_conflict"


async def test_callback_before_the_workflow_suspends_still_works(gateway: Gateway) -> None:
    # The notebook calls back while run_now is still returning.
    async def notebook_calls_back(parameters: dict[str, str]) -> None:
        response = await gateway.callback(parameters["pipeline_id"], {"result": {"early": True}})
        assert response.status_code == 200

    gateway.harness.jobs.on_run_now = notebook_calls_back
    pipeline_id = (await gateway.start()).json()["id"]

    done = await gateway.wait_for_state(pipeline_id, "succeeded")
    assert done["result"] == {"early": True}


class TestRejectedCallbacksChangeNothing:
    @pytest.fixture
    async def waiting(self, gateway: Gateway) -> tuple[Gateway, str, dict[str, Any]]:
        pipeline_id = (await gateway.start()).json()["id"]
        return gateway, pipeline_id, await gateway.wait_for_state(pipeline_id, "waiting")

    async def assert_unchanged(self, gateway: Gateway, pipeline_id: str, before: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)
        assert (await gateway.client.get(f"/pipelines/{pipeline_id}")).json() == before
        assert gateway.harness.notifications == []

    async def test_tampered_body_is_401(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        promise_id = first_callback_id(pipeline_id)
        signed = json.dumps({"promise_id": promise_id, "status": "success", "result": {"rows": 1}}).encode()
        headers = sign_callback(derive_callback_key(SECRET, promise_id), signed)
        tampered = signed.replace(b'"rows": 1', b'"rows": 9')

        response = await gateway.client.post("/callbacks/databricks", content=tampered, headers=headers)

        assert response.status_code == 401 and response.json()["code"] == "invalid_signature"
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_missing_signature_is_401(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        body = {"promise_id": first_callback_id(pipeline_id), "status": "success", "result": {}}

        response = await gateway.client.post("/callbacks/databricks", json=body)

        assert response.status_code == 401 and "Missing required headers" in response.json()["message"]
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_expired_signature_is_401(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting

        response = await gateway.callback(pipeline_id, at=datetime.now(UTC) - timedelta(minutes=6))

        assert response.status_code == 401 and "too old" in response.json()["message"]
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_signature_from_the_future_is_401(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        response = await gateway.callback(pipeline_id, at=datetime.now(UTC) + timedelta(minutes=6))
        assert response.status_code == 401
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_another_pipelines_key_is_401(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        other_key = derive_callback_key(SECRET, promise_tree.callback_promise_id("some-other-pipeline"))

        response = await gateway.callback(pipeline_id, key=other_key)

        assert response.status_code == 401
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_oversized_body_is_413(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        response = await gateway.callback(pipeline_id, {"result": {"blob": "x" * (1024 * 1024)}})
        assert response.status_code == 413 and response.json()["code"] == "body_too_large"
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_non_json_body_is_422(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        signed = await gateway.callback(pipeline_id, raw=b"not json at all")
        binary = await gateway.client.post("/callbacks/databricks", content=b"\xff\xfe\x00garbage")
        for response in (signed, binary):
            assert response.status_code == 422 and response.json()["code"] == "invalid_callback"
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_signed_but_malformed_is_422(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        response = await gateway.callback(pipeline_id, {"status": "failure", "result": None})
        assert response.status_code == 422
        assert "error" in response.json()["message"]
        await self.assert_unchanged(gateway, pipeline_id, before)

    async def test_unknown_promise_is_404(self, waiting: tuple[Gateway, str, dict[str, Any]]) -> None:
        gateway, pipeline_id, before = waiting
        response = await gateway.callback("never-started")
        assert response.status_code == 404 and response.json()["code"] == "unknown_promise"
        await self.assert_unchanged(gateway, pipeline_id, before)

    # The job step's own promise (P:1) and its trigger (P:1.2) are pending or
    # settled children shaped like a callback; signed with the key derived for
    # their id, they are still not a callback.
    @pytest.mark.parametrize("not_a_callback", [promise_tree.trigger_step_id, lambda base: base])
    async def test_a_promise_that_is_not_a_callback_is_404(
        self, waiting: tuple[Gateway, str, dict[str, Any]], not_a_callback: Callable[[str], str]
    ) -> None:
        gateway, pipeline_id, before = waiting
        trigger_id = not_a_callback(promise_tree.step_base(pipeline_id, "1"))
        body = json.dumps({"promise_id": trigger_id, "status": "success", "result": {}}).encode()
        headers = sign_callback(derive_callback_key(SECRET, trigger_id), body)
        response = await gateway.client.post("/callbacks/databricks", content=body, headers=headers)
        assert response.status_code == 404
        await self.assert_unchanged(gateway, pipeline_id, before)


async def test_cancel_cancels_the_run_and_notifies(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    waiting = await gateway.wait_for_state(pipeline_id, "waiting")

    response = await gateway.client.post(f"/pipelines/{pipeline_id}/cancel")

    assert response.status_code == 202
    assert response.json()["state"] in {"notifying", "cancelled"}
    done = await gateway.wait_for_state(pipeline_id, "cancelled")
    assert done["error"]["type"] == "Cancelled"
    assert gateway.harness.jobs.cancelled == [waiting["databricks"]["run_id"]]
    assert gateway.harness.notifications[0].state == "cancelled"

    again = await gateway.client.post(f"/pipelines/{pipeline_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "pipeline_finished"


async def test_cancel_after_the_outcome_is_known_is_409(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    await gateway.callback(pipeline_id)
    await gateway.wait_for_state(pipeline_id, "succeeded")

    response = await gateway.client.post(f"/pipelines/{pipeline_id}/cancel")

    assert response.status_code == 409


async def test_cancel_unknown_pipeline_is_404(gateway: Gateway) -> None:
    response = await gateway.client.post("/pipelines/ghost/cancel")
    assert response.status_code == 404


async def test_callback_after_timeout_is_409(gateway: Gateway) -> None:
    pipeline_id = (await gateway.start(timeout_seconds=1)).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    await asyncio.sleep(1.2)

    response = await gateway.callback(pipeline_id)

    assert response.status_code == 409
    assert "timedout" in response.json()["message"].replace(" ", "")
    done = await gateway.wait_for_state(pipeline_id, "timed_out")
    assert gateway.harness.jobs.cancelled == [done["databricks"]["run_id"]]


async def test_readiness_and_metrics(gateway: Gateway) -> None:
    assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
    assert (await gateway.client.get("/readyz")).status_code == 200
    metrics = (await gateway.client.get("/metrics/")).text
    assert "pipelines_started_total" in metrics and "callback_rejections_total" in metrics


async def test_the_original_examples_run_endpoint_reads_but_never_starts(gateway: Gateway) -> None:
    assert (await gateway.client.get("/run", params={"id": "never-started"})).status_code == 404
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")

    working = await gateway.client.get("/run", params={"id": pipeline_id})
    await gateway.callback(pipeline_id)
    await gateway.wait_for_state(pipeline_id, "succeeded")
    done = await gateway.client.get("/run", params={"id": pipeline_id})

    assert working.json() == {"id": pipeline_id, "state": "waiting", "message": "working on it"}
    assert done.json() == {"id": pipeline_id, "state": "succeeded", "message": "I am done"}
    assert (await gateway.client.get("/run", params={"id": "bad id"})).status_code == 422


async def test_a_repeat_of_a_settled_callback_is_answered_without_resonate(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    assert (await gateway.callback(pipeline_id)).json()["outcome"] == "accepted"

    async def unreachable(*_: Any) -> None:
        raise AssertionError("a settled promise was asked about again")

    monkeypatch.setattr(gateway.harness.resonate.promises, "resolve", unreachable)
    repeat = await gateway.callback(pipeline_id)
    contradiction = await gateway.callback(
        pipeline_id, {"status": "failure", "result": None, "error": {"type": "E", "message": "m"}}
    )

    assert (repeat.status_code, repeat.json()["outcome"]) == (200, "duplicate")
    assert (contradiction.status_code, contradiction.json()["code"]) == (409, "settlement_conflict")


async def test_a_repair_that_fails_again_awaits_another_and_the_history_lists_each_attempt_once(
    gateway: Gateway,
) -> None:
    pipeline_id = (await gateway.start()).json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    error = {"type": "KeyError", "message": "'colum'"}
    await gateway.callback(pipeline_id, {"status": "failure", "result": None, "error": error})
    await gateway.wait_for_state(pipeline_id, "awaiting_repair")
    assert (await gateway.client.post(f"/pipelines/{pipeline_id}/repair")).status_code == 202
    [run] = gateway.harness.jobs.runs_by_token.values()
    async with asyncio.timeout(5):
        while not gateway.harness.jobs.repairs.get(run.run_id):
            await asyncio.sleep(0.02)
    repaired = gateway.harness.jobs.repairs[run.run_id][0]["callback_promise_id"]
    body = json.dumps({"promise_id": repaired, "status": "failure", "error": error}).encode()
    signed = sign_callback(derive_callback_key(SECRET, repaired), body) | {"content-type": "application/json"}
    assert (await gateway.client.post("/callbacks/databricks", content=body, headers=signed)).status_code == 200

    again = await gateway.wait_for_state(pipeline_id, "awaiting_repair")

    assert [(a["number"], a["outcome"]) for a in again["attempts"]] == [(0, "failure"), (1, "failure")]
    cancel = await gateway.client.post(f"/pipelines/{pipeline_id}/abandon")
    done = await gateway.wait_for_state(pipeline_id, "failed")
    assert cancel.status_code == 202 and [a["number"] for a in done["attempts"]] == [0, 1]
