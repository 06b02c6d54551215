"""Pipelines run by their code (run_pipeline versions 3 and 2) on Resonate's in-process server."""

from __future__ import annotations

import asyncio
import gc
import json
import pathlib
from typing import Any

import pytest
from resonate.context import Context
from resonate.types import Value

import pipeline_worker
from pipeline_shared import ids, names, promise_tree
from pipeline_shared.callbacks import stored_settlement
from pipeline_shared.models import (
    ApprovalDecision,
    ApprovalRecord,
    JobStepRecord,
    PipelineOutcome,
    PipelineState,
    StepKind,
    StepState,
    WatchRequest,
)
from pipeline_shared.promise_tree import PipelineTree
from pipeline_worker.pipelines import Pipeline, Step
from pipeline_worker.steps import now_ms
from tests.support.pipeline_harness import CATALOGUE, Harness, run_state

ONBOARDING = "customer-onboarding"


def table(n: int) -> str:
    """A table ingest could have written (notebooks/onboarding_tables.py's rule)."""
    return f"/Volumes/main/onboarding/ingested/customers-{n:016x}.csv"


@pytest.fixture
async def harness():
    h = Harness(catalogue=CATALOGUE)
    yield h
    await h.stop()


async def outcome_of(handle: Any) -> PipelineOutcome:
    return PipelineOutcome.model_validate(await asyncio.wait_for(handle.result(), 10))


async def tree_of(harness: Harness, pipeline_id: str) -> PipelineTree:
    """Every promise of the pipeline, read as the gateway reads them."""
    records = {i: await harness.resonate.promises.get(i) for i in harness.promise_ids(pipeline_id)}
    return PipelineTree(records.pop(pipeline_id), records)


async def finish_step(harness: Harness, pipeline_id: str, step: str, result: dict, status: str = "success") -> None:
    await harness.wait_for_step_run(pipeline_id, step)
    base = promise_tree.step_base(pipeline_id, step)
    await harness.settle_id(pipeline_id, promise_tree.callback_promise_id(base), status=status, result=result)


async def open_gate(harness: Harness, pipeline_id: str, step: str) -> ApprovalRecord:
    record_id = promise_tree.approval_record_id(promise_tree.step_base(pipeline_id, step))
    async with asyncio.timeout(5):
        while (record := await harness.promises_get(record_id)) is None:
            await asyncio.sleep(0.01)
    return ApprovalRecord.model_validate(record.param.data)


async def decide_gate(harness: Harness, gate: ApprovalRecord, action: str, comment: str = "") -> None:
    decision = ApprovalDecision(action=action, by="key:approver", comment=comment, decided_at=now_ms())
    await harness.resonate.promises.resolve(gate.decision_promise_id, Value(data=decision.model_dump(mode="json")))


# ── a standalone job: the one-job pipeline ────────────────────────────────────


async def test_a_standalone_job_runs_as_one_job_step_and_reads_as_today(harness: Harness) -> None:
    spec, handle = harness.start_code("csv-statistics", parameters={"source": ""})
    run = await harness.wait_for_step_run(spec.id, "1")
    base = promise_tree.step_base(spec.id, "1")
    await harness.settle_id(spec.id, promise_tree.callback_promise_id(base), status="success", result={"rows": 3})

    outcome = await outcome_of(handle)

    assert (outcome.state, outcome.result, outcome.run) == (PipelineState.SUCCEEDED, {"rows": 3}, run)
    [sent] = harness.notifications
    assert (sent.kind, sent.state, sent.result, sent.run, sent.steps) == ("outcome", "succeeded", {"rows": 3}, run, [])
    # One run, keyed by the step, and the step's record where the gateway finds it.
    assert list(harness.jobs.runs_by_token) == [ids.idempotency_token("unit", base)]
    record = await harness.promises_get(promise_tree.job_step_record_id(base))
    assert JobStepRecord.model_validate(record.param.data).job == "csv-statistics"
    [step] = (await tree_of(harness, spec.id)).steps()
    assert (step.id, step.kind, step.name, step.state, step.run) == (
        "1",
        StepKind.JOB,
        "csv-statistics",
        "succeeded",
        run,
    )


@pytest.mark.parametrize(
    ("runner_version", "watch_step"),
    [(names.RUN_PIPELINE_VERSION, False), (names.RUN_PIPELINE_SEPARATE_WATCH_VERSION, True)],
)
async def test_a_job_step_writes_its_watch_record_in_its_trigger_at_version_3_and_apart_at_2(
    runner_version: int, watch_step: bool
) -> None:
    harness = Harness(watchdog_interval=60)
    try:
        spec, handle = harness.start_code("csv-statistics", runner_version=runner_version, parameters={"source": ""})
        run = await harness.wait_for_step_run(spec.id, "1")
        base = promise_tree.step_base(spec.id, "1")
        async with asyncio.timeout(5):
            while (record := await harness.promises_get(promise_tree.watch_record_id(base))) is None:
                await asyncio.sleep(0.01)
        watched = WatchRequest.model_validate(record.param.data)
        assert (watched.run_id, watched.job_id, watched.step) == (run.run_id, run.job_id, "1")
        assert record.tags[promise_tree.WATCH_TAG] == promise_tree.callback_promise_id(base)
        assert not [p for p in harness.promise_ids(spec.id) if promise_tree.check_of(base, p)], "no check is scheduled"
        # Version 2's children keep the order they were made in: the watch is its own step, P:1.3.
        watch = await harness.promises_get(promise_tree.join_id(base, "3"))
        assert (watch is not None) is watch_step
        await harness.settle_id(spec.id, promise_tree.callback_promise_id(base), status="success", result={"n": 1})

        outcome = await outcome_of(handle)

        assert (outcome.state, outcome.result) == (PipelineState.SUCCEEDED, {"n": 1})
        assert len(harness.jobs.runs_by_token) == 1
    finally:
        await harness.stop()


async def test_the_watchdog_settles_a_job_step_whose_run_ended_without_calling_back() -> None:
    harness = Harness(watchdog_interval=0.05)
    try:
        spec, handle = harness.start_code("nightly-refresh", parameters={"table": "sales"})
        run = await harness.wait_for_step_run(spec.id, "1")
        harness.jobs.states[run.run_id] = run_state("TERMINATED", "SUCCESS", "")
        harness.jobs.outputs[run.run_id] = json.dumps({"rows": 5})

        outcome = await outcome_of(handle)

        assert (outcome.state, outcome.result) == (PipelineState.SUCCEEDED, {"rows": 5})
        callback = promise_tree.callback_promise_id(promise_tree.step_base(spec.id, "1"))
        settled = stored_settlement(await harness.resonate.promises.get(callback))
        assert settled.stored is not None and settled.stored.source == "watchdog"
    finally:
        await harness.stop()


async def test_a_wait_ends_before_the_pipeline_does_so_its_outcome_is_still_told(harness: Harness) -> None:
    from datetime import timedelta

    from pipeline_worker.pipelines import FINISH_MARGIN_SECONDS

    spec, _ = harness.start_code("csv-statistics", lifetime=timedelta(seconds=600), timeout_seconds=3600)
    await harness.wait_for_step_run(spec.id, "1")
    callback = await harness.promises_get(promise_tree.callback_promise_id(promise_tree.step_base(spec.id, "1")))
    root = await harness.promises_get(spec.id)

    assert root.timeout_at - callback.timeout_at == pytest.approx(FINISH_MARGIN_SECONDS * 1000, abs=1500)


async def test_a_failed_standalone_job_fails_the_pipeline_with_its_cause(harness: Harness) -> None:
    spec, handle = harness.start_code("nightly-refresh")
    await harness.wait_for_step_run(spec.id, "1")
    base = promise_tree.step_base(spec.id, "1")
    error = {"type": "ValueError", "message": "bad table"}
    await harness.settle_id(spec.id, promise_tree.callback_promise_id(base), status="failure", error=error)

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error.type == "ValueError"
    assert harness.notifications[-1].state is PipelineState.FAILED


# ── the onboarding example ───────────────────────────────────────────────────


async def start_onboarding(harness: Harness, threshold: str = "70") -> tuple[Any, Any]:
    return harness.start_code(
        ONBOARDING,
        parameters={"upload": "/Workspace/Shared/pipelines/samples/customers.csv", "approval_threshold": threshold},
    )


async def test_onboarding_runs_the_pair_side_by_side_from_ingests_output(harness: Harness) -> None:
    spec, handle = await start_onboarding(harness)
    await finish_step(harness, spec.id, "1", {"table": table(1), "rows": 5})

    # Both of the pair are started before either ends, with ingest's output.
    score_run = await harness.wait_for_step_run(spec.id, "2")
    report_run = await harness.wait_for_step_run(spec.id, "3")
    assert score_run != report_run
    tables = [call["table"] for call in harness.jobs.run_now_calls[1:]]
    assert tables == [table(1), table(1)]

    await finish_step(harness, spec.id, "3", {"report": {"columns": 4}, "rows": 5})
    await finish_step(harness, spec.id, "2", {"score": 12, "rows": 5})
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED
    assert outcome.result == {"table": table(1), "score": 12, "report": {"columns": 4}}
    # Below the threshold: no gate. The summary email, then the outcome's, listing every step.
    kinds = [n.kind for n in harness.notifications]
    assert kinds == ["step", "outcome"]
    summary, ended = harness.notifications
    assert summary.step == "4" and [s.name for s in summary.steps] == ["ingest-upload", "risk-score", "report-build"]
    assert [(s.id, s.kind, s.state) for s in ended.steps] == [
        ("1", "job", "succeeded"),
        ("2", "job", "succeeded"),
        ("3", "job", "succeeded"),
        ("4", "email", "sent"),  # the summary
    ]
    steps = (await tree_of(harness, spec.id)).steps()
    assert [(s.id, s.kind, s.state) for s in steps] == [(s.id, s.kind, s.state) for s in ended.steps]
    assert len(harness.jobs.runs_by_token) == 3


async def test_a_high_score_waits_for_approval_holding_nothing_then_carries_on(harness: Harness) -> None:
    spec, handle = await start_onboarding(harness, threshold="50")
    await finish_step(harness, spec.id, "1", {"table": table(2), "rows": 5})
    await finish_step(harness, spec.id, "2", {"score": 80, "rows": 5})
    await finish_step(harness, spec.id, "3", {"report": {}, "rows": 5})

    gate = await open_gate(harness, spec.id, "4")
    assert (gate.name, gate.scopes, gate.notify) == ("high-risk", ["approve"], ["user@example.com"])
    assert gate.deadline - gate.opened_at == pytest.approx(2 * 24 * 3600 * 1000, abs=2000)
    async with asyncio.timeout(5):
        while not (requests := [n for n in harness.notifications if n.kind == "approval_request"]):
            await asyncio.sleep(0.01)
    [request] = requests
    assert request.approval == gate and request.step == "4"
    tree = await tree_of(harness, spec.id)
    assert [g.record.name for g in tree.open_gates()] == ["high-risk"]
    assert tree.steps()[-1].state is StepState.AWAITING_APPROVAL

    await decide_gate(harness, gate, "approve", comment="known customer")
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED and outcome.result["score"] == 80
    steps = (await tree_of(harness, spec.id)).steps()
    assert [(s.kind, s.state) for s in steps] == [
        ("job", "succeeded"),
        ("job", "succeeded"),
        ("job", "succeeded"),
        ("approval", "approved"),
        ("email", "sent"),
    ]
    assert steps[3].decision.comment == "known customer"


def held_by_the_worker() -> dict[str, int]:
    """What of a running pipeline is alive in this process: its handle, its steps, its contexts, coroutines, tasks."""
    gc.collect()
    ours = str(pathlib.Path(pipeline_worker.__file__).parent)
    counts = {"pipelines": 0, "steps": 0, "contexts": 0, "coroutines": 0}
    for obj in gc.get_objects():
        if isinstance(obj, Pipeline):
            counts["pipelines"] += 1
        elif isinstance(obj, Step):
            counts["steps"] += 1
        elif isinstance(obj, Context):
            counts["contexts"] += 1
        elif asyncio.iscoroutine(obj) and getattr(obj, "cr_code", None) and obj.cr_code.co_filename.startswith(ours):
            counts["coroutines"] += 1
    counts["tasks"] = len(asyncio.all_tasks())
    return counts


async def test_a_waiting_pipeline_holds_nothing_in_the_worker_whatever_it_waits_on(harness: Harness) -> None:
    """Suspended on a run, on the pair's runs or at a gate, a pipeline leaves no object of its own in the worker."""
    await asyncio.sleep(0.2)
    before = held_by_the_worker()
    started = []
    for n in range(10):
        one_job, _ = harness.start_code("csv-statistics", parameters={"source": ""})
        await harness.wait_for_step_run(one_job.id, "1")
        at_pair, _ = await start_onboarding(harness)
        await finish_step(harness, at_pair.id, "1", {"table": table(n), "rows": 5})
        await harness.wait_for_step_run(at_pair.id, "3")
        at_gate, _ = await start_onboarding(harness, threshold="0")
        for step, result in [("1", {"table": table(n), "rows": 5}), ("2", {"score": 1}), ("3", {"report": {}})]:
            await finish_step(harness, at_gate.id, step, result)
        await open_gate(harness, at_gate.id, "4")
        started += [one_job, at_pair, at_gate]
    async with asyncio.timeout(5):
        while not any(n.kind == "approval_request" and n.pipeline_id == at_gate.id for n in harness.notifications):
            await asyncio.sleep(0.01)

    # Each suspends once its last step before the wait is recorded; then nothing of it stays.
    deadline = asyncio.get_running_loop().time() + 10
    while (held := held_by_the_worker()) != before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)

    assert held == before
    # ... and every one of them still waits.
    assert {(await harness.promises_get(spec.id)).state for spec in started} == {"pending"}


async def test_a_rejection_ends_the_pipeline_failed_and_sends_no_summary(harness: Harness) -> None:
    spec, handle = await start_onboarding(harness, threshold="0")
    await finish_step(harness, spec.id, "1", {"table": table(3), "rows": 1})
    await finish_step(harness, spec.id, "2", {"score": 1, "rows": 1})
    await finish_step(harness, spec.id, "3", {"report": {}, "rows": 1})
    gate = await open_gate(harness, spec.id, "4")

    await decide_gate(harness, gate, "reject", comment="no")
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error.type == "Rejected"
    assert "no" in outcome.error.message
    assert [n.kind for n in harness.notifications] == ["approval_request", "outcome"]


async def test_a_failed_first_job_stops_the_pipeline_before_the_pair(harness: Harness) -> None:
    spec, handle = await start_onboarding(harness)
    await harness.wait_for_step_run(spec.id, "1")
    base = promise_tree.step_base(spec.id, "1")
    # A failure no person repairs: abandon it at once.
    error = {"type": "FileNotFoundError", "message": "no upload"}
    await harness.settle_id(spec.id, promise_tree.callback_promise_id(base), status="failure", error=error)
    window = await harness.wait_for_record(promise_tree.repair_window_id(base, 1))
    from pipeline_shared.models import RepairDecision

    decision = RepairDecision(action="abandon", by="key:tester", decided_at=now_ms())
    await harness.resonate.promises.resolve(window.decision_promise_id, Value(data=decision))
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error.type == "Abandoned"
    assert len(harness.jobs.runs_by_token) == 1
    assert [n.kind for n in harness.notifications] == ["awaiting_repair", "outcome"]


async def test_a_middle_job_repaired_by_a_person_carries_the_pipeline_on_without_rerunning_the_first(
    harness: Harness,
) -> None:
    spec, handle = await start_onboarding(harness)
    await finish_step(harness, spec.id, "1", {"table": table(4), "rows": 5})
    await finish_step(harness, spec.id, "3", {"report": {}, "rows": 5})
    score_run = await harness.wait_for_step_run(spec.id, "2")
    base = promise_tree.step_base(spec.id, "2")
    error = {"type": "RuntimeError", "message": "model not loaded"}
    await harness.settle_id(spec.id, promise_tree.callback_promise_id(base), status="failure", error=error)
    window = await harness.wait_for_record(promise_tree.repair_window_id(base, 1))
    assert (await tree_of(harness, spec.id)).steps()[1].state is StepState.AWAITING_REPAIR
    from pipeline_shared.models import RepairDecision

    decision = RepairDecision(action="repair", by="key:tester", decided_at=now_ms())
    await harness.resonate.promises.resolve(window.decision_promise_id, Value(data=decision))
    attempt = await harness.wait_for_record(promise_tree.attempt_record_id(base, 1))
    await harness.settle_id(spec.id, attempt.callback_promise_id, status="success", result={"score": 3, "rows": 5})
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED
    assert len(harness.jobs.runs_by_token) == 3 and list(harness.jobs.repairs) == [score_run.run_id]
    score = (await tree_of(harness, spec.id)).steps()[1]
    assert (score.state, score.attempts) == (StepState.SUCCEEDED, 2)


async def test_a_cancel_marker_stops_every_step_not_yet_started(harness: Harness) -> None:
    spec, handle = await start_onboarding(harness)
    await harness.wait_for_step_run(spec.id, "1")
    await harness.resonate.promises.create(
        promise_tree.cancel_marker_id(spec.id),
        timeout_at=now_ms() + 3_600_000,
        param=Value(data={"by": "key:owner", "at": now_ms()}),
        tags={"resonate:origin": spec.id},
    )
    # The gateway also settles the running step's callback as cancelled.
    base = promise_tree.step_base(spec.id, "1")
    await harness.settle_id(
        spec.id, promise_tree.callback_promise_id(base), status="cancelled", source="user", by="key:owner"
    )
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.CANCELLED and "key:owner" in outcome.error.message
    assert len(harness.jobs.runs_by_token) == 1 and len(harness.jobs.cancelled) == 1


async def test_a_parameter_the_catalogue_refuses_fails_the_step_and_never_reaches_databricks(harness: Harness) -> None:
    _, handle = harness.start_code("csv-statistics", parameters={"source": "/etc/passwd"})
    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error.type == "InvalidParameters"
    assert "source" in outcome.error.message and harness.jobs.run_now_calls == []


async def test_the_outcome_email_goes_once_even_when_the_code_raises(harness: Harness) -> None:
    from pipeline_worker.pipelines import pipeline

    @pipeline("test-raises")
    async def raises(p: Any) -> None:
        await p.job("not-listed")

    h = Harness(catalogue=_catalogue_with("test-raises", 1))
    try:
        _, handle = h.start_code("test-raises")
        outcome = await outcome_of(handle)
    finally:
        await h.stop()

    assert outcome.state is PipelineState.FAILED and outcome.error.type == "PipelineCodeError"
    assert "not-listed" in outcome.error.message
    assert [n.kind for n in h.notifications] == ["outcome"]


def test_results_are_json_of_bounded_size() -> None:
    from pipeline_worker.runner import MAX_RESULT_BYTES, _returned

    assert _returned({"a": 1}) == (PipelineState.SUCCEEDED, {"a": 1}, None)
    assert _returned(7)[1] == {"value": 7}
    state, _, error = _returned({"a": "x" * MAX_RESULT_BYTES})
    assert state is PipelineState.FAILED and error.type == "ResultTooLarge"
    state, _, error = _returned({"a": object()})
    assert state is PipelineState.FAILED and error.type == "ResultNotJSON"
    assert json.dumps(_returned(None)[1]) == "null"


# ── versions and a team's module ─────────────────────────────────────────────


def _catalogue_with(name: str, version: int):
    """The composed catalogue and pipeline ``name`` (its function's name too) at ``version``, running csv-statistics."""
    from pipeline_shared.catalogue import Catalogue

    document = CATALOGUE.model_dump(mode="json")
    document["pipelines"][name] = {
        "name": name,
        "title": name,
        "description": name,
        "version": version,
        "jobs": ["csv-statistics"],
    }
    return Catalogue.model_validate(document)


async def test_a_pipeline_started_on_one_version_finishes_on_it_after_the_next_is_deployed() -> None:
    from pipeline_worker.pipelines import pipeline

    @pipeline("test-versioned", version=1)
    async def first(p: Any) -> dict:
        await p.job("csv-statistics", {"source": ""})
        return {"finished_on": 1}

    h = Harness(catalogue=_catalogue_with("test-versioned", 1))
    try:
        old, old_handle = h.start_code("test-versioned", version=1)
        await h.wait_for_step_run(old.id, "1")

        # The next version is deployed: a second job first, then the same one. The catalogue now starts it.
        @pipeline("test-versioned", version=2)
        async def second(p: Any) -> dict:
            await p.email("before", ["a step version 1 never had"])
            await p.job("csv-statistics", {"source": ""})
            return {"finished_on": 2}

        new, new_handle = h.start_code("test-versioned", version=2)
        await h.wait_for_step_run(new.id, "2")
        for spec, step in ((old, "1"), (new, "2")):
            callback = promise_tree.callback_promise_id(promise_tree.step_base(spec.id, step))
            await h.settle_id(spec.id, callback, status="success", result={})

        assert (await outcome_of(old_handle)).result == {"finished_on": 1}
        assert (await outcome_of(new_handle)).result == {"finished_on": 2}
        assert len(h.jobs.runs_by_token) == 2
    finally:
        await h.stop()


def test_the_worker_loads_a_teams_module_and_refuses_a_catalogue_naming_a_missing_function() -> None:
    from pipeline_worker.pipelines import registered
    from pipeline_worker.registration import PipelinesNotLoaded, load_pipelines

    load_pipelines(["tests.support.team.team_pipelines"], _catalogue_with("team-hello", 1))
    assert registered("team-hello", 1) is not None

    with pytest.raises(PipelinesNotLoaded, match=r"team-hello needs 'team-hello' version 3 \(registered: 1\)"):
        load_pipelines([], _catalogue_with("team-hello", 3))
    with pytest.raises(
        PipelinesNotLoaded, match=r"'tests.support.no_such_module' does not import: ModuleNotFoundError"
    ):
        load_pipelines(["tests.support.no_such_module"], CATALOGUE)


def test_pipeline_code_mistakes_are_named() -> None:
    from pipeline_worker.pipelines import pipeline

    with pytest.raises(ValueError, match="must match"):
        pipeline("Not A Name")
    with pytest.raises(ValueError, match="version must be"):
        pipeline("fine", version=0)

    async def one(p: Any) -> None: ...

    async def other(p: Any) -> None: ...

    pipeline("test-twice")(one)
    with pytest.raises(ValueError, match="registered twice"):
        pipeline("test-twice")(other)
