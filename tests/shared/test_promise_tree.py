"""The promise tree: each id built and recognised in one place, and one pipeline's promises read as one object.

The id examples are pinned: pipelines in flight hold promises under today's
ids, so a change of format would strand them (the gateway could no longer
find their records). The readings run real workflows on Resonate's
in-process server, one per shape a pipeline can end in.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from resonate.error import ApplicationError
from resonate.types import PromiseRecord, Value

from pipeline_shared import promise_tree
from pipeline_shared.models import PipelineOutcome, PipelineSpec, RunError
from pipeline_shared.promise_tree import (
    AttemptStep,
    Callback,
    Check,
    EmailStep,
    PipelineTree,
    RepairWindow,
    Trigger,
    read_pipeline_tree,
)
from tests.support.pipeline_harness import Harness, run_state

BUG = RunError(type="KeyError", message="'colum'")

#: Today's ids, as stored by pipelines in flight: each builder's call and what it must give.
PINNED = [
    (promise_tree.callback_promise_id("p-1"), "p-1:1"),
    (promise_tree.trigger_step_id("p-1"), "p-1:2"),
    (promise_tree.repair_window_id("p-1", 2), "p-1:await2"),
    (promise_tree.attempt_record_id("p-1", 3), "p-1:attempt3"),
    (promise_tree.check_id("p-1", 4), "p-1:watch4"),
    (promise_tree.check_id("p-1", 4, attempt=2), "p-1:r2watch4"),
    (promise_tree.hint_check_id("p-1", 0, "run_failed", 123), "p-1:hint-run_failed-123"),
    (promise_tree.hint_check_id("p-1", 2, "run_start", 123), "p-1:hint2-run_start-123"),
    (promise_tree.run_index_id(77), "databricks-run/77"),
    (promise_tree.run_index_id(77, 2), "databricks-run/77/2"),
]


@pytest.mark.parametrize(("built", "pinned"), PINNED, ids=[pinned for _, pinned in PINNED])
def test_the_ids_of_promises_in_flight_keep_their_format(built: str, pinned: str) -> None:
    assert built == pinned


@pytest.mark.parametrize("pipeline_id", ["p-1", "a.b_c-D9", "x" * 64, "await1", "attempt2", "databricks-run"])
def test_every_id_is_recognised_as_what_it_was_built_from(pipeline_id: str) -> None:
    tree = promise_tree
    for attempt in (1, 2, 17):
        assert tree.repair_window_of(pipeline_id, tree.repair_window_id(pipeline_id, attempt)) == attempt
        assert tree.attempt_record_of(pipeline_id, tree.attempt_record_id(pipeline_id, attempt)) == attempt
    for attempt, check in ((0, 1), (0, 12), (3, 1), (3, 40)):
        assert tree.check_of(pipeline_id, tree.check_id(pipeline_id, check, attempt)) == (attempt, check)
        hint = tree.hint_check_id(pipeline_id, attempt, "run_succeeded", 29_000_000)
        assert tree.hint_check_of(pipeline_id, hint) == (attempt, "run_succeeded")
    for run_id, attempt in ((1, 0), (9_007_199_254_740_993, 0), (5, 1), (5, 12)):
        assert tree.run_index_of(tree.run_index_id(run_id, attempt)) == (run_id, attempt)
    for promise_id in (tree.callback_promise_id(pipeline_id), f"{pipeline_id}:3", f"{pipeline_id}:120"):
        assert tree.callback_pipeline_of(promise_id) == pipeline_id
        assert tree.pipeline_id_of(promise_id) == pipeline_id


@pytest.mark.parametrize(
    "promise_id",
    [
        "other:await1",  # another pipeline's
        "p-1:await",
        "p-1:awaitx",
        "p-1:attempt1:1",  # a child of a child
        "p-1:watch",
        "p-1:rwatch1",
        "p-1:hint-RUN-1",
        "p-1:hint1-run_failed-",
        "p-1:1",
        "p-1",
        "databricks-run/77",
        " p-1:await1",
    ],
)
def test_ids_that_are_not_the_pipelines_are_not_read_as_its_own(promise_id: str) -> None:
    tree = promise_tree
    assert tree.repair_window_of("p-1", promise_id) is None
    assert tree.attempt_record_of("p-1", promise_id) is None
    assert tree.check_of("p-1", promise_id) is None
    assert tree.hint_check_of("p-1", promise_id) is None


@pytest.mark.parametrize(
    "promise_id",
    ["p-1", "p-1:", "p-1:0", "p-1:01", "p-1:2", "p-1:-3", "p-1:await1", "p-1:1:1", ":1", "p 1:1", "p-1:²", "1", "123"],
)
def test_what_cannot_be_a_callback_promise_is_refused(promise_id: str) -> None:
    assert promise_tree.callback_pipeline_of(promise_id) is None


@pytest.mark.parametrize("promise_id", ["databricks-run/", "databricks-run/x", "databricks-run/1/0", "p-1:1", "run/1"])
def test_what_is_not_a_run_index_is_refused(promise_id: str) -> None:
    assert promise_tree.run_index_of(promise_id) is None


# ── reading one pipeline's promises ──────────────────────────────────────────


async def promises_of(harness: Harness, pipeline_id: str) -> dict[str, PromiseRecord]:
    """Every promise of the pipeline, as the projector reads them (all those whose origin it is)."""
    return {pid: await harness.promises_get(pid) for pid in harness.promise_ids(pipeline_id)}


async def tree_of(harness: Harness, spec: PipelineSpec) -> PipelineTree:
    promises = await promises_of(harness, spec.id)
    return PipelineTree(promises[spec.id], promises)


async def finished(handle: Any) -> PipelineOutcome:
    return PipelineOutcome.model_validate(await asyncio.wait_for(handle.result(), 10))


def of_type[C](tree: PipelineTree, kind: type[C]) -> list[C]:
    return [child for child in tree.children() if isinstance(child, kind)]


@pytest.fixture
async def harness():
    h = Harness()
    yield h
    await h.stop()


@pytest.fixture
async def watched():
    """A harness whose watchdog checks the run every 50 ms."""
    h = Harness(watchdog_interval=0.05)
    yield h
    await h.stop()


async def awaiting_repair(harness: Harness) -> tuple[PipelineSpec, Any]:
    """A pipeline whose run failed, once its email saying it awaits repair is answered: a person decides once told."""
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    await harness.settle(spec, status="failure", error=BUG)
    async with asyncio.timeout(5):
        while not any(isinstance(c, EmailStep) and c.receipt for c in (await tree_of(harness, spec)).children()):
            await asyncio.sleep(0.01)
    return spec, handle


async def test_a_pipeline_that_succeeds_reads_as_its_spec_run_callback_and_email(harness: Harness) -> None:
    spec, handle = harness.start()
    run = await harness.wait_for_run(spec)
    await harness.settle(spec, status="success", result={"rows": 3})
    outcome = await finished(handle)

    tree = await tree_of(harness, spec)
    assert tree.spec == spec and tree.outcome == outcome and tree.owner is None
    [trigger] = of_type(tree, Trigger)
    assert trigger.outcome is not None and trigger.outcome.run == run
    [callback] = of_type(tree, Callback)
    assert callback.attempt == 0 and callback.settlement is not None and callback.settlement.result == {"rows": 3}
    [email] = of_type(tree, EmailStep)
    assert email.notification.kind == "outcome" and email.receipt is not None and email.receipt.delivered
    assert of_type(tree, RepairWindow) == [] and of_type(tree, AttemptStep) == []
    repairs = tree.repairs()
    assert repairs.attempts == [] and repairs.open_window is None
    assert repairs.current_callback_id == promise_tree.callback_promise_id(spec.id)


async def test_a_repaired_pipeline_reads_as_its_window_decision_attempt_and_both_callbacks(harness: Harness) -> None:
    spec, handle = await awaiting_repair(harness)

    # Awaiting: the gateway's spine read finds the open window and its pending decision.
    root = await harness.promises_get(spec.id)
    spine = await read_pipeline_tree(root, harness.promises_get)
    window = spine.repairs().open_window
    assert window is not None and window.attempt.number == 0 and window.attempt.outcome == "failure"
    assert spine.get(window.decision_promise_id).state == "pending"

    await harness.decide(spec, 1, "repair", parameters={"source": "/Workspace/Shared/pipelines/fixed.csv"})
    record = await harness.wait_for_record(promise_tree.attempt_record_id(spec.id, 1))
    await harness.settle(spec, record.callback_promise_id, status="success", result={"rows": 7})
    await finished(handle)

    tree = await tree_of(harness, spec)
    assert [(c.attempt, c.settlement.status) for c in of_type(tree, Callback)] == [(0, "failure"), (1, "success")]
    [waited] = of_type(tree, RepairWindow)
    assert waited.number == 1 and waited.decided is not None and waited.decided.action == "repair"
    [step] = of_type(tree, AttemptStep)
    assert step.number == 1 and step.record == record
    assert [e.notification.kind for e in of_type(tree, EmailStep)] == ["awaiting_repair", "outcome"]
    repairs = tree.repairs()
    assert [a.number for a in repairs.attempts] == [0, 1] and repairs.open_window is None
    assert repairs.current_callback_id == record.callback_promise_id


async def test_an_abandoned_pipeline_reads_as_its_window_and_the_decision_to_abandon(harness: Harness) -> None:
    spec, handle = await awaiting_repair(harness)
    await harness.decide(spec, 1, "abandon")
    outcome = await finished(handle)

    tree = await tree_of(harness, spec)
    [window] = of_type(tree, RepairWindow)
    assert window.decided is not None and window.decided.action == "abandon" and window.decided.by == "key:tester"
    assert of_type(tree, AttemptStep) == [] and tree.outcome == outcome
    assert outcome.error is not None and outcome.error.type == "Abandoned"


async def test_a_cancelled_pipeline_with_a_refused_email_reads_as_both(harness: Harness) -> None:
    harness.notifier_failure = ApplicationError("the notifier gave up: 550 mailbox unavailable")
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    await harness.settle(spec, status="cancelled", source="user", by="key:alice", error=BUG)
    await finished(handle)

    tree = await tree_of(harness, spec)
    [callback] = of_type(tree, Callback)
    assert callback.settlement is not None and (callback.settlement.source, callback.settlement.by) == (
        "user",
        "key:alice",
    )
    [email] = of_type(tree, EmailStep)
    assert email.promise.state.startswith("rejected") and email.receipt is None


async def test_a_timed_out_pipeline_reads_as_its_callback_timed_out_and_the_checks_it_made(watched: Harness) -> None:
    harness = watched
    spec, handle = harness.start(timeout_seconds=1)
    run = await harness.wait_for_run(spec)
    harness.jobs.states[run.run_id] = run_state("RUNNING")
    await asyncio.sleep(1.2)
    # Resonate's in-process model times a bare promise out when it is next touched.
    await harness.promises_get(promise_tree.callback_promise_id(spec.id))
    outcome = await finished(handle)

    tree = await tree_of(harness, spec)
    [callback] = of_type(tree, Callback)
    assert callback.promise.state == "rejected_timedout" and callback.settlement is None
    checks = of_type(tree, Check)
    assert checks and all(c.attempt == 0 and c.hint is None for c in checks)
    assert tree.outcome == outcome and outcome.state == "timed_out"


async def test_the_spine_read_for_the_status_holds_no_checks_or_emails(watched: Harness) -> None:
    harness = watched
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    spine = await read_pipeline_tree(await harness.promises_get(spec.id), harness.promises_get)
    assert set(spine.promises) == {
        spec.id,
        promise_tree.callback_promise_id(spec.id),
        promise_tree.trigger_step_id(spec.id),
    }
    assert {type(child) for child in spine.children()} == {Callback, Trigger}
    await harness.settle(spec, status="success", result={})
    await finished(handle)


@pytest.mark.parametrize("param", [{"func": "something_else", "args": [{}]}, {"func": "run_pipeline"}, None, "x"])
def test_a_root_that_is_not_a_pipelines_has_no_spec(param: Any) -> None:
    root = PromiseRecord(
        id="p-1",
        state="pending",
        param=Value(data=param),
        value=Value(),
        tags={},
        timeout_at=1,
        created_at=0,
        settled_at=None,
    )
    assert PipelineTree(root, {}).spec is None and list(PipelineTree(root, {"p-1": root}).children()) == []
