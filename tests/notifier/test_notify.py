"""``send_pipeline_email`` as Resonate runs it, against the in-process mail sink."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from resonate.retry import Constant
from resonate.testing import local_resonate

from mailsink import MailSink
from mailsink.store import MessageFilter
from pipeline_notifier.notify import NotifierDeps, send_pipeline_email
from pipeline_notifier.smtp import RetryPolicy, SmtpConfig
from pipeline_shared import ids, names
from pipeline_shared.models import DatabricksRun, Notification, NotificationReceipt, PipelineState


@pytest.fixture
async def notifier(sink: MailSink) -> AsyncIterator:
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


async def run(notifier, note: Notification) -> NotificationReceipt:  # type: ignore[no-untyped-def]
    handle = notifier.run(f"email-{note.pipeline_id}", send_pipeline_email, note)
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
