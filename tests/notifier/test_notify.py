"""``send_pipeline_email`` as Resonate runs it, against the in-process mail sink."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY
from resonate.retry import Constant
from resonate.testing import local_resonate

from mailsink import MailSink
from mailsink.store import MessageFilter
from mailsink.threads import conversations
from pipeline_notifier.notify import NotifierDeps, send_pipeline_email
from pipeline_notifier.smtp import RetryPolicy, SmtpConfig
from pipeline_shared import ids, names
from pipeline_shared.logs import JsonFormatter
from pipeline_shared.models import (
    Attempt,
    DatabricksRun,
    Notification,
    NotificationReceipt,
    PipelineState,
    RunError,
)
from pipeline_shared.testhooks import NOTIFIER_POINTS
from pipeline_shared.testhooks import TestHooks as PausePoints


@pytest.fixture
def hooks() -> PausePoints:
    """The notifier's fault points, armed by the tests that need one (inert otherwise)."""
    return PausePoints(enabled=True, points=NOTIFIER_POINTS)


@pytest.fixture
async def notifier(sink: MailSink, hooks: PausePoints) -> AsyncIterator:
    resonate = local_resonate(autostart=False)
    resonate.with_dependency(
        NotifierDeps(
            smtp=SmtpConfig(
                host=sink.smtp_host,
                port=sink.smtp_port,
                security="none",
                retry=RetryPolicy(max_attempts=2, backoff_base_seconds=0.01, backoff_cap_seconds=0.01),
            ),
            sender="pipelines@example.test",
            message_id_domain="example.test",
            hooks=hooks,
        )
    )
    # The production policy waits minutes between attempts; the behaviour
    # under test is that a failed attempt is retried at all.
    resonate.register(
        send_pipeline_email, name=names.SEND_PIPELINE_EMAIL, retry_policy=Constant(delay=0, max_retries=5)
    )
    resonate.start()
    yield resonate
    await resonate.stop()


def notification(**fields: object) -> Notification:
    return Notification(
        **{
            "pipeline_id": f"n-{uuid.uuid4().hex[:10]}",
            "email": "owner@example.com",
            "state": PipelineState.SUCCEEDED,
            "parameters": {"source": "sample"},
            "run": DatabricksRun(run_id=7, run_page_url="http://databricks.test/#job/1/run/7"),
            "result": {"row_count": 3},
            **fields,
        }
    )


async def run(notifier, note: Notification, call: str = "") -> NotificationReceipt:  # type: ignore[no-untyped-def]
    """Send ``note`` as the worker would: one durable call, named by ``call`` among the pipeline's emails."""
    handle = notifier.run(f"email-{note.pipeline_id}{call}", send_pipeline_email, note)
    return NotificationReceipt.model_validate(await asyncio.wait_for(handle.result(), 20))


async def test_the_email_arrives_with_the_derived_message_id(notifier, sink: MailSink) -> None:  # type: ignore[no-untyped-def]
    note = notification()

    receipt = await run(notifier, note)

    expected_id = ids.email_message_id(note.pipeline_id, "succeeded", "example.test")
    assert receipt == NotificationReceipt(delivered=True, message_id=expected_id)
    [message] = sink.store.find(MessageFilter(pipeline_id=note.pipeline_id))
    assert message.message_id == expected_id and message.deliveries == 1
    assert "http://databricks.test/#job/1/run/7" in (message.text or "")


async def test_a_mail_server_down_for_a_while_is_retried_until_delivered(notifier, sink: MailSink) -> None:  # type: ignore[no-untyped-def]
    # More refusals than one attempt's quick retries absorb: Resonate retries the step.
    sink.faults.set_transient(code=451, count=4)
    note = notification()

    receipt = await run(notifier, note)

    assert receipt.delivered
    [message] = sink.store.find(MessageFilter(pipeline_id=note.pipeline_id))
    assert message.deliveries == 1


async def test_a_permanent_refusal_is_a_receipt_not_a_retry(notifier, sink: MailSink) -> None:  # type: ignore[no-untyped-def]
    note = notification(email="gone@example.com", state=PipelineState.FAILED, result=None)
    sink.faults.set_permanent("gone@example.com", code=550)

    receipt = await run(notifier, note)

    assert (receipt.delivered, receipt.smtp_code) == (False, 550)
    assert sink.store.find(MessageFilter(pipeline_id=note.pipeline_id)) == []


def failed_with(reason: str) -> float:
    return REGISTRY.get_sample_value("emails_failed_total", {"reason": reason}) or 0.0


@pytest.fixture
def log_lines() -> Iterator[list[dict]]:
    """The notifier's log lines as the service writes them (JSON, with the pipeline id)."""
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Collect()
    handler.setFormatter(JsonFormatter("notifier"))
    logger = logging.getLogger("pipeline_notifier")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


async def test_an_address_the_notifier_cannot_send_to_ends_the_email_step_as_not_sent(  # type: ignore[no-untyped-def]
    notifier, sink: MailSink, log_lines: list[dict]
) -> None:
    # Accepted by the gateway before it checked addresses: a non-ASCII local part needs SMTPUTF8.
    note = notification(email="üser@exämple.com")
    before = failed_with("address")

    receipt = await run(notifier, note)

    assert not receipt.delivered and receipt.message_id is None
    assert "üser@exämple.com" in (receipt.error or "") and "before the @-sign" in (receipt.error or "")
    assert failed_with("address") == before + 1
    assert sink.store.find(MessageFilter(pipeline_id=note.pipeline_id)) == []
    [logged] = [line for line in log_lines if line["msg"].startswith("email not sent")]
    assert (logged["level"], logged["pipeline_id"], logged["reason"]) == ("ERROR", note.pipeline_id, "address")


async def test_an_unexpected_error_while_composing_ends_the_email_step_as_not_sent(  # type: ignore[no-untyped-def]
    notifier, sink: MailSink, hooks: PausePoints, log_lines: list[dict]
) -> None:
    note = notification()
    hooks.arm("fail_composing", [note.pipeline_id])
    before = failed_with("error")

    receipt = await run(notifier, note)

    assert not receipt.delivered
    assert receipt.error == "the email was not sent: InjectedFault: test hook fail_composing failed on purpose"
    assert failed_with("error") == before + 1
    assert sink.store.find(MessageFilter(pipeline_id=note.pipeline_id)) == []
    logged = [line for line in log_lines if line["msg"].startswith("email not sent")]
    assert [(line["pipeline_id"], line.get("reason")) for line in logged] == [
        (note.pipeline_id, None),  # the traceback, once
        (note.pipeline_id, "error"),
    ]
    assert "InjectedFault" in logged[0]["exc"]


async def test_an_internationalised_domain_is_sent_in_its_idna_form(notifier, sink: MailSink) -> None:  # type: ignore[no-untyped-def]
    note = notification(email="owner@exämple.com")

    receipt = await run(notifier, note)

    assert receipt.delivered
    [message] = sink.store.find(MessageFilter(pipeline_id=note.pipeline_id))
    assert message.header("To") == "owner@xn--exmple-cua.com"


FAILURE = RunError(type="SparkException", message="task count failed")


def attempt(number: int, outcome: str) -> Attempt:
    return Attempt(
        number=number,
        repair_id=None if number == 0 else 500 + number,
        started_at=1_796_320_800_000 + number * 3_600_000,
        reason="the original run" if number == 0 else f"repair {number}",
        by=None if number == 0 else "alice",
        rerun_tasks=[] if number == 0 else ["count"],
        outcome=outcome,  # type: ignore[arg-type]
        error=FAILURE if outcome == "failure" else None,
    )


def awaiting_repair(pipeline_id: str, attempts: list[Attempt], thread: list[str]) -> Notification:
    return notification(
        pipeline_id=pipeline_id,
        state=PipelineState.AWAITING_REPAIR,
        kind="awaiting_repair",
        result=None,
        error=FAILURE,
        attempts=attempts,
        thread=thread,
        repair_deadline=1_796_407_200_000,
    )


def sent_with_state(state: str) -> float:
    return REGISTRY.get_sample_value("emails_sent_total", {"state": state}) or 0.0


async def test_a_repaired_pipelines_three_emails_are_one_conversation(  # type: ignore[no-untyped-def]
    notifier, sink: MailSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline_notifier.notify")
    pid = f"n-{uuid.uuid4().hex[:10]}"
    awaiting_before = sent_with_state("awaiting_repair")

    # What the worker does: each email is its own call, and carries the ids of those already sent.
    first = await run(notifier, awaiting_repair(pid, [attempt(0, "failure")], []), "-wait0")
    second = await run(
        notifier, awaiting_repair(pid, [attempt(0, "failure"), attempt(1, "failure")], [first.message_id]), "-wait1"
    )
    done = await run(
        notifier,
        notification(
            pipeline_id=pid,
            attempts=[attempt(0, "failure"), attempt(1, "failure"), attempt(2, "success")],
            thread=[first.message_id, second.message_id],
        ),
        "-outcome",
    )

    receipts = [first, second, done]
    assert all(r.delivered for r in receipts)
    assert [r.message_id for r in receipts] == [
        ids.email_message_id(pid, "awaiting_repair", "example.test", kind="awaiting_repair", attempt=0),
        ids.email_message_id(pid, "awaiting_repair", "example.test", kind="awaiting_repair", attempt=1),
        ids.email_message_id(pid, "succeeded", "example.test", kind="outcome", attempt=2),
    ]
    stored = sink.store.find(MessageFilter(pipeline_id=pid))
    [conversation] = conversations(stored)
    assert [m.message_id for m in conversation.messages] == [r.message_id for r in receipts]
    assert [m.replies_to for m in conversation.messages] == [
        [],
        [first.message_id],
        [first.message_id, second.message_id],
    ]
    assert [m.header("Subject") for m in conversation.messages] == [
        f"Pipeline {pid} awaiting repair",
        f"Pipeline {pid} awaiting repair",
        f"Pipeline {pid} succeeded",
    ]
    assert "finished successfully after 2 repairs" in (conversation.newest.text or "")
    assert sent_with_state("awaiting_repair") == awaiting_before + 2
    sent = [r.fields for r in caplog.records if r.getMessage() == "email sent"]  # type: ignore[attr-defined]
    assert [(f["kind"], f["state"], f["attempt"], f["message_id"]) for f in sent] == [
        ("awaiting_repair", "awaiting_repair", 0, first.message_id),
        ("awaiting_repair", "awaiting_repair", 1, second.message_id),
        ("outcome", "succeeded", 2, done.message_id),
    ]


async def test_an_email_awaiting_repair_sent_twice_is_one_email_delivered_twice(notifier, sink: MailSink) -> None:  # type: ignore[no-untyped-def]
    # Two executions of the same step (a lapsed lease, a crash after the mail
    # server accepted it) compose the same message: the same Message-ID.
    note = awaiting_repair(f"n-{uuid.uuid4().hex[:10]}", [attempt(0, "failure"), attempt(1, "failure")], [])

    again = [await run(notifier, note, "-a"), await run(notifier, note, "-b")]

    assert again[0] == again[1] and again[0].delivered
    [message] = sink.store.find(MessageFilter(pipeline_id=note.pipeline_id))
    assert message.deliveries == 2 and message.message_id == again[0].message_id


def sent_of_kind(kind: str) -> float:
    return REGISTRY.get_sample_value("emails_sent_by_kind_total", {"kind": kind}) or 0.0


async def test_a_steps_email_sent_again_is_the_same_message_and_each_step_its_own(notifier, sink: MailSink) -> None:  # type: ignore[no-untyped-def]
    pid = f"n-{uuid.uuid4().hex[:10]}"
    before = sent_of_kind("step")
    step = notification(
        pipeline_id=pid, state=PipelineState.WAITING, kind="step", step="3", subject="Scored", lines=["Score 91"]
    )

    first = await run(notifier, step, "-3")
    # A worker that crashed after the send asks again: the same email, not a second one.
    again = await run(notifier, step, "-3-again")
    other = await run(notifier, step.model_copy(update={"step": "6"}), "-6")

    assert (
        first.message_id
        == again.message_id
        == ids.email_message_id(pid, "waiting", "example.test", kind="step", step="3")
    )
    assert other.message_id != first.message_id
    stored = {m.message_id: m for m in sink.store.find(MessageFilter(pipeline_id=pid))}
    assert stored[first.message_id].deliveries == 2 and stored[other.message_id].deliveries == 1
    assert sent_of_kind("step") == before + 3
