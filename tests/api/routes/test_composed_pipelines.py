"""Pipelines run by their code, through the gateway: their steps read back, gates decided, steps repaired, cancels.

Each pipeline's promises are written as the contract's tree has them
(tests.support.step_promises.py), with no worker running, and read back
through the real app; principals come from a keys file of their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from resonate.types import Value

from pipeline_api.auth.keys import mint
from pipeline_api.auth.principals import Scope
from pipeline_api.settings import GatewaySettings
from pipeline_shared import promise_tree
from pipeline_shared.models import (
    DatabricksRun,
    PipelineSpec,
    PipelineState,
    RepairDecision,
    Settlement,
    TriggerOutcome,
)
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.gateway_app import in_process_app
from tests.support.keys_files import write_keys
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET, UNUSED_DATABASE_URL, Harness
from tests.support.step_promises import ComposedPipeline

#: The catalogue of the tests, with a pipeline of two of its jobs beside them.
PIPELINE_TABLE = """
[pipelines.onboarding]
title = "Onboarding"
description = "Statistics, then words, then a person approves."
version = 3
jobs = ["csv-statistics", "word-frequencies"]

[pipelines.onboarding.schedule]
cron = "0 6 * * 1"
email = "ops@example.com"
"""

OWNER = "owner"
WHO = {
    OWNER: frozenset({Scope.START, Scope.READ, Scope.CANCEL}),
    "approver": frozenset({Scope.APPROVE}),
    "other": frozenset({Scope.START, Scope.READ, Scope.CANCEL}),
    "admin": frozenset({Scope.ADMIN}),
}


@dataclass
class Composed:
    harness: Harness
    clients: dict[str, httpx.AsyncClient]

    def pipeline(self, **kwargs: Any) -> ComposedPipeline:
        return ComposedPipeline(self.harness.resonate.promises, f"key:{OWNER}", **kwargs)

    async def read(self, promise_id: str) -> Any:
        return await self.harness.promises_get(promise_id)


@pytest.fixture
async def composed(tmp_path: Path) -> AsyncIterator[Composed]:
    catalogue_file = tmp_path / "catalogue.toml"
    catalogue_file.write_text(CATALOGUE_FILE.read_text() + PIPELINE_TABLE)
    keys = {name: mint(name, scopes) for name, scopes in WHO.items()}
    write_keys(tmp_path / "keys.toml", *(entry for _, entry in keys.values()))
    settings = GatewaySettings(
        RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
        CALLBACK_SIGNING_SECRET=SECRET,
        API_KEYS_FILE=tmp_path / "keys.toml",
        RECIPIENT_DOMAINS=("*",),
        JOB_CATALOGUE_FILE=catalogue_file,
    )
    harness = Harness(autostart=False)
    app = in_process_app(settings, harness)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        clients = {
            name: httpx.AsyncClient(
                transport=transport, base_url="http://gateway", headers={"authorization": f"Bearer {key}"}
            )
            for name, (key, _) in keys.items()
        }
        yield Composed(harness, clients)
        for client in clients.values():
            await client.aclose()


# ── starting ─────────────────────────────────────────────────────────────────


async def test_a_pipeline_entry_starts_run_pipeline_at_version_3_with_its_own_version(composed: Composed) -> None:
    answer = await composed.clients[OWNER].post("/pipelines", json={"job": "onboarding", "email": "o@example.com"})
    assert answer.status_code == 202, answer.text
    root = await composed.read(answer.json()["id"])
    assert root.param.data["version"] == 3
    spec = PipelineSpec.model_validate(root.param.data["args"][0])
    assert (spec.job, spec.version) == ("onboarding", 3)
    assert answer.json()["version"] == 3


async def test_a_standalone_job_starts_as_its_one_job_pipeline_at_version_3(composed: Composed) -> None:
    body = {"id": "standalone-1", "job": "word-frequencies", "email": "o@example.com", "parameters": {"text": "a"}}
    answer = await composed.clients[OWNER].post("/pipelines", json=body)
    assert answer.status_code == 202, answer.text
    root = await composed.read("standalone-1")
    assert root.param.data["version"] == 3
    assert PipelineSpec.model_validate(root.param.data["args"][0]).version == 1
    again = await composed.clients[OWNER].post("/pipelines", json=body)
    assert again.status_code == 200 and again.json()["id"] == "standalone-1"


async def test_jobs_lists_pipelines_beside_jobs_with_their_kind_jobs_version_and_schedule(composed: Composed) -> None:
    listed = {job["name"]: job for job in (await composed.clients[OWNER].get("/jobs")).json()["jobs"]}
    assert listed["onboarding"] | {"parameters": []} == listed["onboarding"]
    assert (listed["onboarding"]["kind"], listed["onboarding"]["jobs"]) == (
        "pipeline",
        ["csv-statistics", "word-frequencies"],
    )
    assert (listed["onboarding"]["version"], listed["onboarding"]["schedule"]) == (3, "0 6 * * 1")
    assert (listed["csv-statistics"]["kind"], listed["csv-statistics"]["jobs"]) == ("job", ["csv-statistics"])
    assert listed["csv-statistics"]["schedule"] is None


# ── reading ──────────────────────────────────────────────────────────────────


async def test_a_composed_pipeline_reads_each_step_and_awaits_approval(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step_ended("1", "stats", {"rows": 3})
    await pipeline.job_step("2", "words", job="word-frequencies")
    await pipeline.email_step("3", "Halfway", name="halfway")
    await pipeline.gate("4", "go-live")
    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert doc["state"] == "awaiting_approval" and doc["version"] == 1
    assert [(s["id"], s["kind"], s["name"], s["state"]) for s in doc["steps"]] == [
        ("1", "job", "stats", "succeeded"),
        ("2", "job", "words", "running"),
        ("3", "email", "halfway", "starting"),
        ("4", "approval", "go-live", "awaiting_approval"),
    ]
    assert doc["steps"][3]["approval"]["scopes"] == ["approve"]


async def test_a_pipeline_with_one_job_step_reads_as_a_one_job_pipeline_did(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    assert (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()["state"] == "starting"
    # Its step recorded, its run not triggered yet: starting still, as the one-job workflow read.
    await pipeline.job_step("1", "stats", run_id=42, triggered=False)
    assert (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()["state"] == "starting"
    await pipeline.promises.resolve(
        promise_tree.trigger_step_id(promise_tree.step_base(pipeline.id, "1")),
        Value(data=TriggerOutcome(run=DatabricksRun(run_id=42)).model_dump(mode="json")),
    )
    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert doc["state"] == "waiting"
    assert doc["databricks"]["run_id"] == 42


async def test_a_step_awaiting_repair_makes_the_pipeline_await_repair(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step_failed("1", "stats")
    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert doc["state"] == "awaiting_repair" and doc["repair_deadline"] is not None
    assert doc["error"]["type"] == "KeyError"


async def test_what_follows_a_shown_repair_window_leaves_the_document_as_it_was(composed: Composed) -> None:
    # CI saw updated_at move by 182 ms between two reads of an unchanged document: the step that wrote the
    # window's record settled just after the window was read.
    pipeline = composed.pipeline()
    await pipeline.root()
    decision = await pipeline.job_step_failed("1", "stats")
    shown = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    await asyncio.sleep(0.01)

    await pipeline.after_the_window("1")

    assert (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json() == shown
    abandon = RepairDecision(action="abandon", by="key:owner", decided_at=1)
    await pipeline.promises.resolve(decision, Value(data=abandon.model_dump(mode="json")))
    decided = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert datetime.fromisoformat(decided["updated_at"]) > datetime.fromisoformat(shown["updated_at"]), "news"


async def test_once_its_function_returned_the_pipeline_is_notifying_until_its_outcome_email_is_sent(
    composed: Composed,
) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step_ended("1", "stats", {"rows": 3})
    await pipeline.outcome_email("2")
    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert doc["state"] == "notifying"
    assert [s["name"] for s in doc["steps"]] == ["stats"]


async def test_a_finished_composed_pipeline_keeps_its_steps(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step_ended("1", "stats", {"rows": 3})
    await pipeline.finish(PipelineState.SUCCEEDED, {"rows": 3})
    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert doc["state"] == "succeeded" and doc["result"] == {"rows": 3}
    assert [s["state"] for s in doc["steps"]] == ["succeeded"]


async def test_a_pipeline_started_before_pipelines_were_code_reads_as_today(composed: Composed) -> None:
    pipeline = composed.pipeline(version=None)
    await pipeline.root()
    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()
    assert (doc["state"], doc["version"], doc["steps"]) == ("starting", None, [])
    named = await composed.clients[OWNER].post(f"/pipelines/{pipeline.id}/abandon", json={"step": "1"})
    assert (named.status_code, named.json()["code"]) == (409, "not_awaiting_repair")
    assert "has no steps" in named.json()["message"]
    cancelled = await composed.clients[OWNER].post(f"/pipelines/{pipeline.id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    settled = await composed.read(promise_tree.callback_promise_id(pipeline.id))
    assert Settlement.model_validate(settled.value.data).status == "cancelled"
    assert await composed.read(promise_tree.cancel_marker_id(pipeline.id)) is None


# ── approvals ────────────────────────────────────────────────────────────────


async def test_a_holder_of_the_gates_scope_sees_the_pipeline_and_approves_once(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    decision = await pipeline.gate("1", "go-live")
    approver = composed.clients["approver"]
    assert (await approver.get(f"/pipelines/{pipeline.id}")).status_code == 200
    # Reading is not enough: only a scope the gate names lets a stranger see the pipeline.
    assert (await composed.clients["other"].get(f"/pipelines/{pipeline.id}")).status_code == 404
    answer = await approver.post(f"/pipelines/{pipeline.id}/approve", json={"comment": "fine by me"})
    assert answer.status_code == 202, answer.text
    step = answer.json()["steps"][0]
    assert step["state"] == "approved"
    assert (step["decision"]["by"], step["decision"]["comment"]) == ("key:approver", "fine by me")
    assert (await composed.read(decision)).value.data["action"] == "approve"
    again = await approver.post(f"/pipelines/{pipeline.id}/reject", json={"gate": "go-live"})
    assert (again.status_code, again.json()["code"]) == (409, "not_awaiting_approval")
    # The gate is closed: the pipeline is no more the approver's to read.
    assert (await approver.get(f"/pipelines/{pipeline.id}")).status_code == 404


async def test_an_admin_rejects_at_a_gate_named_by_its_step_id(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.gate("1", "go-live")
    answer = await composed.clients["admin"].post(f"/pipelines/{pipeline.id}/reject", json={"gate": "1"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["steps"][0]["state"] == "rejected"


async def test_who_may_not_decide_is_told_so_and_changes_nothing(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    decision = await pipeline.gate("1", "go-live")
    owner = await composed.clients[OWNER].post(f"/pipelines/{pipeline.id}/approve")
    assert (owner.status_code, owner.json()["code"]) == (403, "may_not_decide")
    stranger = await composed.clients["other"].post(f"/pipelines/{pipeline.id}/approve")
    assert (stranger.status_code, stranger.json()["code"]) == (404, "pipeline_not_found")
    unknown = await composed.clients["approver"].post("/pipelines/no-such-pipeline/approve")
    assert unknown.status_code == 404
    assert (await composed.read(decision)).state == "pending"


async def test_several_open_gates_must_be_named(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.gate("1", "legal")
    await pipeline.gate("2", "finance")
    approver = composed.clients["approver"]
    ambiguous = await approver.post(f"/pipelines/{pipeline.id}/approve")
    assert (ambiguous.status_code, ambiguous.json()["code"]) == (409, "gate_ambiguous")
    unknown = await approver.post(f"/pipelines/{pipeline.id}/approve", json={"gate": "<script>"})
    assert (unknown.status_code, unknown.json()["code"]) == (409, "not_awaiting_approval")
    named = await approver.post(f"/pipelines/{pipeline.id}/approve", json={"gate": "finance"})
    assert named.status_code == 202
    assert [s["state"] for s in named.json()["steps"]] == ["awaiting_approval", "approved"]


async def test_a_gate_is_named_by_its_step_id_before_any_gate_of_that_name(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.gate("1", "2")
    await pipeline.gate("2", "legal")
    named = await composed.clients["approver"].post(f"/pipelines/{pipeline.id}/approve", json={"gate": "2"})
    assert named.status_code == 202, named.text
    assert [(s["name"], s["state"]) for s in named.json()["steps"]] == [
        ("2", "awaiting_approval"),
        ("legal", "approved"),
    ]


async def test_a_gate_past_its_deadline_cannot_be_decided(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.gate("1", "go-live", deadline_ms=50)
    await asyncio.sleep(0.2)
    late = await composed.clients["admin"].post(f"/pipelines/{pipeline.id}/approve", json={"gate": "go-live"})
    assert (late.status_code, late.json()["code"]) == (409, "not_awaiting_approval")
    assert "deadline" in late.json()["message"]


async def test_no_gate_open_and_a_long_comment_are_refused(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step("1", "stats")
    none_open = await composed.clients["admin"].post(f"/pipelines/{pipeline.id}/approve")
    assert (none_open.status_code, none_open.json()["code"]) == (409, "not_awaiting_approval")
    long = await composed.clients["admin"].post(f"/pipelines/{pipeline.id}/approve", json={"comment": "x" * 2001})
    assert long.status_code == 422


# ── callbacks ────────────────────────────────────────────────────────────────


async def signed_callback(composed: Composed, promise_id: str) -> httpx.Response:
    """A success callback for ``promise_id``, signed with the key derived for it (as if that key had leaked)."""
    body = json.dumps({"promise_id": promise_id, "status": "success", "result": {"rows": 1}}).encode()
    headers = sign_callback(derive_callback_key(SECRET, promise_id), body) | {"content-type": "application/json"}
    return await composed.clients[OWNER].post("/callbacks/databricks", content=body, headers=headers)


async def test_only_a_job_steps_callback_promise_is_settled_by_a_callback(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    repair_decision = await pipeline.job_step_failed("1", "stats")
    running = await pipeline.job_step("2", "words", job="word-frequencies", run_id=8)
    gate_decision = await pipeline.gate("3", "go-live")
    untagged = await pipeline.job_step("4", "again", run_id=9, external=False)
    # Each is shaped like a callback (P:N.M, P:N) but is a decision, a step's own promise, a
    # trigger, or a promise no workflow made to be settled from outside.
    for promise_id in (
        repair_decision,
        gate_decision,
        running,
        promise_tree.trigger_step_id(running),
        promise_tree.callback_promise_id(untagged),
    ):
        before = await composed.read(promise_id)
        answer = await signed_callback(composed, promise_id)
        assert (answer.status_code, answer.json()["code"]) == (404, "unknown_promise"), promise_id
        after = await composed.read(promise_id)
        assert (after.state, after.value) == (before.state, before.value), promise_id

    answer = await signed_callback(composed, promise_tree.callback_promise_id(running))

    assert (answer.status_code, answer.json()["outcome"]) == (200, "accepted"), answer.text
    settled = await composed.read(promise_tree.callback_promise_id(running))
    assert Settlement.model_validate(settled.value.data).result == {"rows": 1}


# ── repair, abandon, cancel ──────────────────────────────────────────────────


async def test_with_several_steps_awaiting_repair_the_step_is_named(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step_failed("1", "stats")
    words = await pipeline.job_step_failed("2", "words", job="word-frequencies", run_id=8, parameters={"text": "a b"})
    owner = composed.clients[OWNER]
    ambiguous = await owner.post(f"/pipelines/{pipeline.id}/repair")
    assert (ambiguous.status_code, ambiguous.json()["code"]) == (409, "step_ambiguous")
    assert (await owner.post(f"/pipelines/{pipeline.id}/abandon")).json()["code"] == "step_ambiguous"
    repaired = await owner.post(f"/pipelines/{pipeline.id}/repair", json={"step": "words", "parameters": {"top": "5"}})
    assert repaired.status_code == 202, repaired.text
    decision = RepairDecision.model_validate((await composed.read(words)).value.data)
    assert (decision.action, decision.by, decision.parameters["top"]) == ("repair", "key:owner", "5")
    abandoned = await owner.post(f"/pipelines/{pipeline.id}/abandon", json={"step": "1"})
    assert abandoned.status_code == 202, abandoned.text
    again = await owner.post(f"/pipelines/{pipeline.id}/abandon", json={"step": "1"})
    assert (again.status_code, again.json()["code"]) == (409, "not_awaiting_repair")


async def test_cancel_marks_the_pipeline_and_settles_running_steps_and_open_gates(composed: Composed) -> None:
    pipeline = composed.pipeline()
    await pipeline.root()
    running = await pipeline.job_step("1", "stats")
    decision = await pipeline.gate("2", "go-live")
    owner = composed.clients[OWNER]
    answer = await owner.post(f"/pipelines/{pipeline.id}/cancel")
    assert answer.status_code == 202, answer.text
    marker = await composed.read(promise_tree.cancel_marker_id(pipeline.id))
    assert marker.param.data["by"] == "key:owner" and marker.param.data["at"] > 0
    settled = Settlement.model_validate((await composed.read(promise_tree.callback_promise_id(running))).value.data)
    assert (settled.status, settled.source, settled.by) == ("cancelled", "user", "key:owner")
    assert (await composed.read(decision)).value.data["action"] == "cancel"
    assert [s["state"] for s in answer.json()["steps"]] == ["running", "cancelled"]
    assert (await owner.post(f"/pipelines/{pipeline.id}/cancel")).status_code == 202
    await pipeline.finish(PipelineState.CANCELLED)
    finished = await owner.post(f"/pipelines/{pipeline.id}/cancel")
    assert (finished.status_code, finished.json()["code"]) == (409, "pipeline_finished")


async def test_a_step_made_as_the_cancel_comes_has_its_run_cancelled_too(
    composed: Composed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker makes a step (and finds no cancel marker) after the gateway first read the pipeline.

    Seen in CI as a hanging pipeline cancelled right after its start that ran to its timeout: the
    gateway settled the steps it had read before writing the marker, and the step the worker had
    made in between, whose run it then started, was settled by nobody.
    """
    pipeline = composed.pipeline()
    await pipeline.root()
    promises = composed.harness.resonate.promises
    create = promises.create
    made: list[str] = []

    async def the_worker_first(promise_id: str, *args: Any, **kwargs: Any) -> Any:
        if promise_id == promise_tree.cancel_marker_id(pipeline.id) and not made:
            made.append(await pipeline.job_step("1", "stats"))
        return await create(promise_id, *args, **kwargs)

    monkeypatch.setattr(promises, "create", the_worker_first)
    answer = await composed.clients[OWNER].post(f"/pipelines/{pipeline.id}/cancel")

    assert answer.status_code == 202, answer.text
    settled = Settlement.model_validate((await composed.read(promise_tree.callback_promise_id(made[0]))).value.data)
    assert (settled.status, settled.source, settled.by) == ("cancelled", "user", "key:owner")


async def test_a_pipeline_a_schedule_started_says_when_it_fired(composed: Composed) -> None:
    pipeline = composed.pipeline()
    fired_at = 1_796_000_000_000
    pipeline.spec = pipeline.spec.model_copy(update={"scheduled_at": fired_at})
    await pipeline.root()

    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()

    assert datetime.fromisoformat(doc["scheduled_at"]).timestamp() * 1000 == fired_at
    started_by_a_client = composed.pipeline()
    await started_by_a_client.root()
    assert (await composed.clients[OWNER].get(f"/pipelines/{started_by_a_client.id}")).json()["scheduled_at"] is None


async def test_a_pipeline_of_one_job_step_is_notifying_once_its_runs_outcome_is_known(composed: Composed) -> None:
    # As the one-job workflow read: the callback accepted while no worker has taken it up yet.
    pipeline = composed.pipeline()
    await pipeline.root()
    await pipeline.job_step("1", "stats", run_id=42)
    assert (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()["state"] == "waiting"
    settled = Settlement(status="success", result={"rows": 1}, source="callback", received_at=1)
    callback = promise_tree.callback_promise_id(promise_tree.step_base(pipeline.id, "1"))
    await pipeline.promises.resolve(callback, Value(data=settled.model_dump(mode="json")))

    doc = (await composed.clients[OWNER].get(f"/pipelines/{pipeline.id}")).json()

    assert doc["state"] == "notifying" and doc["result"] == {"rows": 1}
