"""One trace per pipeline (pipeline_shared.tracing), received over OTLP/HTTP by an in-process receiver.

The gateway app over ASGI, the worker's workflow on Resonate's in-process
server and the notifier's own function over an in-process SMTP sink all run
in this process, with tracing switched on by OTEL_EXPORTER_OTLP_ENDPOINT as a
deployment does; their spans are exported to tests.support.otlp_receiver and
read back from the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace

from mailsink import MailSink
from pipeline_notifier.notify import NotifierDeps, send_pipeline_email
from pipeline_notifier.smtp import RetryPolicy, SmtpConfig
from pipeline_shared import tracing
from pipeline_shared.logs import JsonFormatter
from pipeline_shared.signing import derive_callback_key
from tests.support.gateway_app import Gateway, first_callback_id, serve
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, tracing_to
from tests.support.pipeline_harness import SECRET, Harness
from tests.support.stack_clients import AUTHENTICATED

#: A parameter's value, which no span may carry: parameters are the user's and may hold anything.
HOSTILE_SOURCE = "/Workspace/Shared/pipelines/private-7f3a9c.csv"
RECIPIENT = "owner.of.pipeline@example.com"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def provider(receiver: OtlpReceiver) -> Iterator[Any]:
    with tracing_to(receiver) as installed:
        yield installed


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    async with MailSink(serve_http=False) as running:
        yield running


@pytest.fixture
async def gateway(provider: Any, sink: MailSink) -> AsyncIterator[Gateway]:
    """The gateway and worker in process, emailing through the notifier's own function (not the double)."""
    async with serve() as gateway:
        smtp = SmtpConfig(host=sink.smtp_host, port=sink.smtp_port, security="none", retry=RetryPolicy(max_attempts=1))
        resonate = gateway.harness.resonate
        resonate.with_dependency(
            NotifierDeps(
                smtp=smtp, sender="pipelines@example.test", message_id_domain="example.test", promises=resonate.promises
            )
        )
        gateway.harness.real_notifier = send_pipeline_email
        yield gateway


def _only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    [span] = [s for s in spans if s.name == name]
    return span


async def test_one_pipeline_is_one_whole_trace_across_gateway_worker_and_notifier(
    gateway: Gateway, provider: Any, receiver: OtlpReceiver, sink: MailSink
) -> None:
    started = await gateway.start(email=RECIPIENT, parameters={"source": HOSTILE_SOURCE})
    assert started.status_code == 202, started.text
    pipeline_id = started.json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    assert (await gateway.callback(pipeline_id)).status_code == 200
    await gateway.wait_for_state(pipeline_id, "succeeded")
    assert provider.force_flush(5000)

    [start] = [s for s in receiver.named("pipeline.start") if s.attributes.get("pipeline.id") == pipeline_id]
    spans = receiver.trace_of(start.trace_id)

    # Every service's spans, in the one trace.
    assert {(s.scope, s.name) for s in spans} == {
        ("pipeline_api", "pipeline.start"),
        ("pipeline_worker", "pipeline.trigger"),
        ("pipeline_api", "pipeline.callback"),
        ("pipeline_worker", "pipeline.step"),
        ("pipeline_worker", "pipeline.wait"),
        ("pipeline_notifier", "pipeline.email"),
        ("pipeline_worker", "pipeline.finish"),
    }
    assert all(s.attributes["pipeline.id"] == pipeline_id for s in spans)
    # Whole: one root, the gateway's start; every other span's parent is in the trace.
    ids = {s.span_id for s in spans}
    assert [s.name for s in spans if s.parent_span_id is None] == ["pipeline.start"]
    assert all(s.parent_span_id in ids for s in spans if s is not start)
    step = _only(spans, "pipeline.step")
    wait = _only(spans, "pipeline.wait")
    assert wait.parent_span_id == step.span_id
    assert {s.parent_span_id for s in spans if s not in (start, wait)} == {start.span_id}
    # In order: started, triggered, called back (ending the wait), emailed, finished.
    trigger, callback = _only(spans, "pipeline.trigger"), _only(spans, "pipeline.callback")
    email, finish = _only(spans, "pipeline.email"), _only(spans, "pipeline.finish")
    assert start.start_ns <= trigger.start_ns <= trigger.end_ns <= callback.start_ns
    assert trigger.end_ns - 1_000_000 <= wait.start_ns <= wait.end_ns <= callback.end_ns  # recorded in whole ms
    assert callback.end_ns <= email.start_ns <= email.end_ns <= finish.start_ns
    assert all(s.start_ns <= s.end_ns for s in spans)
    # What they say.
    assert start.attributes == {"pipeline.id": pipeline_id, "pipeline.job": "csv-statistics", "pipeline.created": True}
    assert (
        trigger.attributes["databricks.run_id"]
        == step.attributes["databricks.run_id"]
        == wait.attributes["databricks.run_id"]
    )
    assert callback.attributes["callback.outcome"] == "accepted"
    assert (step.attributes["pipeline.step.kind"], step.attributes["pipeline.state"]) == ("job", "succeeded")
    assert (email.attributes["email.kind"], email.attributes["email.delivered"]) == ("outcome", True)
    assert finish.attributes["pipeline.state"] == "succeeded"
    assert {s.status for s in spans} == {0}
    assert len(sink.store.all()) == 1

    # No secret: not the recipient, a parameter's value, a key, a URL, in any name, attribute or event.
    secrets = [
        RECIPIENT,
        "@",
        HOSTILE_SOURCE,
        "private-7f3a9c",
        SECRET,
        derive_callback_key(SECRET, first_callback_id(pipeline_id)),
        AUTHENTICATED["authorization"].split()[1],
        "http",
    ]
    said = _said(spans)
    assert [secret for secret in secrets if secret in said] == []
    assert all(set(s.attributes) <= tracing.ATTRIBUTES for s in spans)


def _said(spans: list[ReceivedSpan]) -> str:
    """Everything the spans say, as one text to search for secrets."""
    return json.dumps([[s.name, s.attributes, s.events, s.status_message] for s in spans])


async def test_a_repaired_pipeline_traces_each_callback_the_repair_and_both_emails_in_its_one_trace(
    gateway: Gateway, provider: Any, receiver: OtlpReceiver
) -> None:
    fixed = "/Workspace/Shared/pipelines/fixed-e41b.csv"
    started = await gateway.start(email=RECIPIENT, parameters={"source": HOSTILE_SOURCE})
    pipeline_id = started.json()["id"]
    await gateway.wait_for_state(pipeline_id, "waiting")
    # The notebook's error text can quote anything: an address, a value.
    error = {"type": "FileNotFoundError", "message": f"{HOSTILE_SOURCE} not found; mail {RECIPIENT}"}
    await gateway.callback(pipeline_id, {"status": "failure", "result": None, "error": error})
    await gateway.wait_for_state(pipeline_id, "awaiting_repair")
    repaired = await gateway.client.post(f"/pipelines/{pipeline_id}/repair", json={"parameters": {"source": fixed}})
    assert repaired.status_code == 202, repaired.text
    [run] = gateway.harness.jobs.runs_by_token.values()
    async with asyncio.timeout(5):
        while not gateway.harness.jobs.repairs.get(run.run_id):
            await asyncio.sleep(0.02)
    promise_id = gateway.harness.jobs.repairs[run.run_id][0]["callback_promise_id"]
    answer = await gateway.callback(
        pipeline_id, {"promise_id": promise_id}, key=derive_callback_key(SECRET, promise_id)
    )
    assert answer.status_code == 200, answer.text
    await gateway.wait_for_state(pipeline_id, "succeeded")
    assert provider.force_flush(5000)

    [start] = [s for s in receiver.named("pipeline.start") if s.attributes.get("pipeline.id") == pipeline_id]
    spans = receiver.trace_of(start.trace_id)
    # The step and its wait are recorded in whole ms: from the run's start (in the trigger) to the last callback.
    step, trigger = _only(spans, "pipeline.step"), _only(spans, "pipeline.trigger")
    assert trigger.start_ns - 1_000_000 <= step.start_ns <= trigger.end_ns
    assert [s.name for s in spans if s.name not in ("pipeline.step", "pipeline.wait")] == [
        "pipeline.start",
        "pipeline.trigger",
        "pipeline.callback",
        "pipeline.email",
        "pipeline.repair",
        "pipeline.callback",
        "pipeline.email",
        "pipeline.finish",
    ]
    repair = _only(spans, "pipeline.repair")
    assert (repair.attributes["pipeline.attempt"], repair.attributes["databricks.run_id"]) == (1, run.run_id)
    assert [s.attributes["email.kind"] for s in spans if s.name == "pipeline.email"] == ["awaiting_repair", "outcome"]
    assert {s.parent_span_id for s in spans if s.name != "pipeline.wait"} == {None, start.span_id}
    last_callback = [s for s in spans if s.name == "pipeline.callback"][-1]
    assert last_callback.start_ns - 1_000_000 <= step.end_ns <= last_callback.end_ns
    assert step.attributes["pipeline.attempts"] == 2
    said = _said(spans)
    assert [secret for secret in (RECIPIENT, "@", HOSTILE_SOURCE, fixed, "not found") if secret in said] == []


async def test_a_pipeline_started_before_tracing_gets_traces_of_its_own_and_ends(
    provider: Any, receiver: OtlpReceiver
) -> None:
    harness = Harness()
    try:
        # Started as a pipeline in flight was, before the gateway recorded a trace context with it.
        spec, handle = harness.start_code("csv-statistics")
        await harness.wait_for_step_run(spec.id, "1")
        await harness.settle_step(spec.id, "1", status="success")
        outcome = await handle.result()
    finally:
        await harness.stop()
    assert outcome.state == "succeeded"
    assert provider.force_flush(5000)

    ours = [s for s in receiver.spans if s.attributes.get("pipeline.id") == spec.id]
    assert {s.name for s in ours} >= {"pipeline.trigger", "pipeline.step", "pipeline.finish"}
    assert [s.name for s in ours if s.parent_span_id is not None] == ["pipeline.wait"]


async def test_a_resumed_step_restores_the_context_from_the_root_promise_not_from_memory(provider: Any) -> None:
    with tracing.span("tests", "pipeline.start") as start:
        traceparent = tracing.current_traceparent()
    root = SimpleNamespace(tags={tracing.TRACEPARENT_TAG: traceparent})

    class Promises:
        reads = 0

        async def get(self, promise_id: str) -> Any:
            Promises.reads += 1
            return root

    # A worker that never saw the start: a new process, the context only on the promise.
    another_worker = tracing.TraceContexts()
    context = await another_worker.of(Promises(), "p-1")
    with tracing.span("tests", "pipeline.trigger", parent=context) as resumed:
        pass
    assert resumed.get_span_context().trace_id == start.get_span_context().trace_id
    assert resumed.parent is not None and resumed.parent.span_id == start.get_span_context().span_id
    # Read once per process: the tag never changes.
    await another_worker.of(Promises(), "p-1")
    assert Promises.reads == 1


async def test_a_malformed_or_missing_traceparent_starts_a_trace_of_its_own(provider: Any) -> None:
    for tags in ({}, {tracing.TRACEPARENT_TAG: "00-not-a-trace"}):

        class Promises:
            async def get(self, promise_id: str, tags: dict = tags) -> Any:
                return SimpleNamespace(tags=tags)

        assert await tracing.TraceContexts().of(Promises(), "p-1") is None


async def test_tracing_is_off_by_default_and_reads_no_promise() -> None:
    class Promises:
        async def get(self, promise_id: str) -> Any:
            raise AssertionError("no root is read while tracing is off")

    assert tracing.configure_tracing("pipeline-tests") is None
    assert not tracing.enabled()
    assert await tracing.TraceContexts().of(Promises(), "p-1") is None
    with tracing.span("tests", "pipeline.start"):
        assert tracing.current_traceparent() is None
        assert tracing.log_fields() == {}


def test_log_lines_carry_the_trace_and_span_ids(provider: Any) -> None:
    formatter = JsonFormatter("tests")
    with tracing.span("tests", "pipeline.trigger") as current:
        record = logging.LogRecord("tests", logging.INFO, __file__, 1, "Databricks run started", None, None)
        line = json.loads(formatter.format(record))
    ids = current.get_span_context()
    assert (line["trace_id"], line["span_id"]) == (
        trace.format_trace_id(ids.trace_id),
        trace.format_span_id(ids.span_id),
    )
    outside = json.loads(formatter.format(record))
    assert "trace_id" not in outside


def test_an_attribute_not_listed_is_refused_and_a_failure_says_only_its_type(
    provider: Any, receiver: OtlpReceiver
) -> None:
    with (
        pytest.raises(ValueError, match=r"\['pipeline.email'\]"),
        tracing.span("tests", "pipeline.email", attributes={"pipeline.email": RECIPIENT}),
    ):
        pass
    with pytest.raises(RuntimeError), tracing.span("tests", "pipeline.email", attributes={"pipeline.id": "p-2"}):
        raise RuntimeError(f"550 no such user {RECIPIENT}")
    assert provider.force_flush(5000)
    [failed] = [s for s in receiver.named("pipeline.email") if s.attributes.get("pipeline.id") == "p-2"]
    assert (failed.status, failed.status_message, failed.events) == (2, "RuntimeError", [])
