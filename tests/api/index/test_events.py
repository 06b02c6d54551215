"""A pipeline's timeline, derived from its promises, on Resonate's in-process server.

The same pure function (:func:`pipeline_api.index.events.timeline_of`) runs in the
gateway's projector over a snapshot of ``resonate.promises``; here it runs
over the in-process server's promises after real workflows, so each kind of
history is checked in milliseconds. The stack tests
(tests/integration/test_index.py) check the projection itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from resonate.codec import Codec, NoopEncryptor
from resonate.error import ApplicationError
from resonate.types import PromiseRecord, Value

from pipeline_api.index.events import Event, timeline_of
from pipeline_shared import promise_tree
from pipeline_shared.models import PipelineOutcome, PipelineSpec, RunError
from pipeline_shared.promise_tree import PipelineTree
from tests.support.pipeline_harness import Harness, run_state
from tests.support.stack_clients import REPAIRED_BY_A_PERSON

BUG = RunError(type="KeyError", message="'colum'")


def promises_of(harness: Harness, pipeline_id: str) -> dict[str, PromiseRecord]:
    """Every promise of the pipeline, decoded, as the projector reads them from resonate.promises."""
    codec = Codec(NoopEncryptor())
    server = harness.resonate._network.state  # the in-process server's tables
    records = (codec.decode_promise(_record(p.to_record())) for p in server.promises.values())
    return {r.id: r for r in records if r.tags.get("resonate:origin") == pipeline_id}


def _record(raw: dict[str, Any]) -> PromiseRecord:
    # A pending promise has no value yet (None in the in-process server; an empty one on the wire).
    return msgspec.convert({**raw, "param": raw["param"] or {}, "value": raw["value"] or {}}, PromiseRecord)


def timeline(harness: Harness, pipeline_id: str) -> list[Event]:
    promises = promises_of(harness, pipeline_id)
    return timeline_of(PipelineTree(promises[pipeline_id], promises))


async def finished(handle: Any) -> PipelineOutcome:
    return PipelineOutcome.model_validate(await asyncio.wait_for(handle.result(), 10))


def kinds(events: list[Event]) -> list[str]:
    return [event.kind for event in events]


async def a_succeeded_pipeline(harness: Harness) -> tuple[PipelineSpec, dict[str, PromiseRecord]]:
    """A pipeline run to success by its callback, and its promises, to tamper with."""
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    await harness.settle(spec, status="success", result={})
    await finished(handle)
    return spec, promises_of(harness, spec.id)


async def told(harness: Harness, pipeline_id: str) -> None:
    """Until the email saying it awaits repair is delivered: a person decides once told (a test could be quicker)."""
    async with asyncio.timeout(5):
        while "email_delivered" not in kinds(timeline(harness, pipeline_id)):
            await asyncio.sleep(0.01)


async def test_a_pipeline_that_succeeds_tells_its_start_run_callback_email_and_end() -> None:
    harness = Harness()
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="success", result={"rows": 3})
        outcome = await finished(handle)

        events = timeline(harness, spec.id)
        assert kinds(events) == ["started", "run_triggered", "callback_received", "email_delivered", "finished"]
        started, triggered, called, emailed, end = events
        assert started.data == {"by": None, "job": spec.job, "parameters": spec.parameters}
        assert triggered.data["run_id"] == run.run_id and triggered.data["run_page_url"] == run.run_page_url
        assert called.data == {"status": "success", "attempt": 0}
        assert emailed.data == {"message_id": outcome.notification.message_id, "kind": "outcome", "to": spec.email}
        assert end.data == {"state": "succeeded", "error": None}
        assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
        # The same promises give the same events under the same keys: the index stores each once.
        assert timeline(harness, spec.id) == events and len({e.key for e in events}) == len(events)
    finally:
        await harness.stop()


async def test_a_failed_run_repaired_by_a_person_tells_the_wait_the_decision_and_the_repair() -> None:
    harness = Harness()
    try:
        spec, handle = harness.start(parameters={"source": "/Workspace/Shared/pipelines/typo.csv"})
        await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)
        await told(harness, spec.id)
        await harness.decide(spec, 1, "repair", parameters={"source": "/Workspace/Shared/pipelines/fixed.csv"})
        record = await harness.wait_for_record(promise_tree.attempt_record_id(spec.id, 1))
        await harness.settle(spec, record.callback_promise_id, status="success", result={"rows": 7})
        await finished(handle)

        events = timeline(harness, spec.id)
        assert kinds(events) == REPAIRED_BY_A_PERSON
        by_kind = {e.kind: e for e in events}
        assert by_kind["awaiting_repair"].data["repair_deadline"].endswith("Z")
        assert by_kind["repair_requested"].data == {
            "by": "key:tester",
            "parameters": {"source": "/Workspace/Shared/pipelines/fixed.csv"},
            "attempt": 1,
        }
        assert by_kind["repaired"].data["by"] == "key:tester" and by_kind["repaired"].data["attempt"] == 1
        assert [e.data for e in events if e.kind == "callback_received"] == [
            {"status": "failure", "attempt": 0},
            {"status": "success", "attempt": 1},
        ]
        assert [e.data["kind"] for e in events if e.kind == "email_delivered"] == ["awaiting_repair", "outcome"]
    finally:
        await harness.stop()


async def test_a_repair_names_only_the_parameters_it_changes() -> None:
    """Issue 20, finding 7: a repair changing nothing read "asked for a repair, changing source".

    The gateway's decision carries every parameter the repair reruns with, so
    the changed ones are those differing from what the failed attempt ran with.
    """
    harness = Harness()
    try:
        started = {"text": "to be or not to be", "top": "3"}
        spec, handle = harness.start(job="word-frequencies", parameters=started)
        await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)
        await told(harness, spec.id)
        fixed = started | {"text": "to be or not to be, that is the question"}
        await harness.decide(spec, 1, "repair", parameters=fixed)
        first = await harness.wait_for_record(promise_tree.attempt_record_id(spec.id, 1))
        await harness.settle(spec, first.callback_promise_id, status="failure", error=BUG)
        await harness.wait_for_record(promise_tree.repair_window_id(spec.id, 2))
        await harness.decide(spec, 2, "repair", parameters=fixed)
        second = await harness.wait_for_record(promise_tree.attempt_record_id(spec.id, 2))
        await harness.settle(spec, second.callback_promise_id, status="success", result={"rows": 7})
        await finished(handle)

        asked = [e.summary for e in timeline(harness, spec.id) if e.kind == "repair_requested"]
        assert asked == [
            "key:tester asked for a repair, changing text",
            "key:tester asked for a repair with the same parameters",
        ]
    finally:
        await harness.stop()


async def test_abandoned_cancelled_and_refused_emails_are_told_with_who_and_why() -> None:
    harness = Harness()
    try:
        abandoned, handle = harness.start()
        await harness.wait_for_run(abandoned)
        await harness.settle(abandoned, status="failure", error=BUG)
        await told(harness, abandoned.id)
        await harness.decide(abandoned, 1, "abandon")
        await finished(handle)
        events = timeline(harness, abandoned.id)
        assert kinds(events)[-3:] == ["abandoned", "email_delivered", "finished"]
        assert events[-3].data == {"by": "key:tester", "attempt": 1}
        assert events[-1].data["state"] == "failed" and events[-1].data["error"]["type"] == "Abandoned"

        harness.notifier_failure = ApplicationError("the notifier gave up: 550 mailbox unavailable")
        cancelled, handle = harness.start()
        await harness.wait_for_run(cancelled)
        await harness.settle(cancelled, status="cancelled", source="user", by="key:alice", error=BUG)
        await finished(handle)
        events = timeline(harness, cancelled.id)
        assert kinds(events) == ["started", "run_triggered", "cancel_requested", "email_refused", "finished"]
        assert events[2].data == {"by": "key:alice"} and "key:alice" in events[2].summary
        assert "550 mailbox unavailable" in events[3].data["error"] and events[3].data["kind"] == "outcome"
    finally:
        await harness.stop()


async def test_the_watchdogs_reading_of_a_run_that_ended_is_the_databricks_state_seen() -> None:
    harness = Harness(watchdog_interval=0.05)
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        # The fake workspace lists the run as active: a few sweeps pass it by, reading nothing; then it ends.
        callback = promise_tree.callback_promise_id(spec.id)
        async with asyncio.timeout(5):
            while harness.watched.claims < 4:
                await asyncio.sleep(0.02)
        assert not [e for e in timeline(harness, spec.id) if e.kind == "databricks_state"], "an active run is not read"
        harness.jobs.states[run.run_id] = run_state("TERMINATED", "SUCCESS")
        await finished(handle)

        events = timeline(harness, spec.id)
        seen = [(e.data["life_cycle_state"], e.data["result_state"]) for e in events if e.kind == "databricks_state"]
        # The reading that found the end settled the pipeline from it: it shows once (issue 20, finding 7).
        assert seen == [("TERMINATED", "SUCCESS")], seen
        assert {e.data["source"] for e in events if e.kind == "databricks_state"} == {"watchdog"}
        assert "outcome_read_from_run" in kinds(events) and "callback_received" not in kinds(events)
        assert (await harness.resonate.promises.get(callback)).state == "resolved"
    finally:
        await harness.stop()


async def test_a_promise_it_cannot_read_gives_no_event_rather_than_a_wrong_one() -> None:
    harness = Harness()
    try:
        spec, promises = await a_succeeded_pipeline(harness)
        trigger = promises[promise_tree.trigger_step_id(spec.id)]
        promises[trigger.id] = msgspec.structs.replace(trigger, value=Value(data={"run": "not a run"}))
        window = promise_tree.repair_window_id(spec.id, 1)
        promises[window] = msgspec.structs.replace(trigger, id=window, param=Value(data=[1]))
        events = timeline_of(PipelineTree(promises[spec.id], promises))
        assert kinds(events) == ["started", "callback_received", "email_delivered", "finished"]
    finally:
        await harness.stop()


async def test_a_run_recorded_after_its_callback_shows_as_triggered_by_then_and_late_readings_are_left_out() -> None:
    """After a worker crash the trigger step can record its run after the run called back; a late check reads moot."""
    harness = Harness()
    try:
        spec, promises = await a_succeeded_pipeline(harness)
        root, trigger = promises[spec.id], promises[promise_tree.trigger_step_id(spec.id)]
        called_at = next(e.at_ms for e in timeline(harness, spec.id) if e.kind == "callback_received")
        late = {**trigger.value.data, "started_at": called_at + 5_000}
        promises[trigger.id] = msgspec.structs.replace(trigger, value=Value(data=late))
        check = msgspec.structs.replace(
            trigger,
            id=f"{spec.id}:watch9",
            value=Value(data={"note": "x", "life_cycle_state": "TERMINATED", "read_at": root.settled_at + 1}),
        )
        promises[check.id] = check

        events = timeline_of(PipelineTree(root, promises))
        assert kinds(events) == ["started", "run_triggered", "callback_received", "email_delivered", "finished"]
        assert events[1].at_ms == called_at and events[1].data["recorded_at"].endswith("Z")
    finally:
        await harness.stop()


async def test_a_notification_after_the_pipeline_finished_is_left_out() -> None:
    """Prompted before the gateway ignored such notifications, or in the moment the pipeline finished."""
    harness = Harness()
    try:
        spec, promises = await a_succeeded_pipeline(harness)
        root, trigger = promises[spec.id], promises[promise_tree.trigger_step_id(spec.id)]
        hint = msgspec.structs.replace(
            trigger,
            id=f"{spec.id}:hint-on_failure-1",
            created_at=root.settled_at + 1,
            value=Value(data={"note": "callback promise settled"}),
        )
        promises[hint.id] = hint

        events = timeline_of(PipelineTree(root, promises))
        assert kinds(events) == ["started", "run_triggered", "callback_received", "email_delivered", "finished"]
    finally:
        await harness.stop()
