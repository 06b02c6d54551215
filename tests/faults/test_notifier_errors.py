"""The notifier failing unexpectedly while composing an email: the pipeline still ends.

An email that cannot be composed would fail the same way on every retry, so
the email step ends at once as not sent: the pipeline reaches its final state
with ``notification.delivered`` false and the cause, the failure is counted
in ``emails_failed_total{reason="error"}`` and logged with the pipeline id.
Before, such an error left the pipeline ``notifying`` while the step was
retried for a quarter of an hour, and then ended it as a failed workflow.

The notifier's ``fail_composing`` test hook (``pipeline_shared.testhooks``)
raises the unexpected error for the pipelines it is armed for.
"""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fault_batch import PausePoints
from tests.support.stack_clients import Gateway, MailSink, new_id


def emails_failed(ops_url: str, reason: str) -> float:
    text = httpx.get(f"{ops_url}/metrics/", timeout=10).text
    samples = (s for family in text_string_to_metric_families(text) for s in family.samples)
    return next(s.value for s in samples if s.name == "emails_failed_total" and s.labels["reason"] == reason)


def test_an_unexpected_error_while_composing_ends_the_pipeline_with_the_email_not_sent(  # type: ignore[no-untyped-def]
    stack, gateway: Gateway, mail: MailSink, notifier_hooks: PausePoints
) -> None:
    pipeline_id = new_id("compose-fault")
    notifier_hooks.arm("fail_composing", [pipeline_id])
    failed_before = emails_failed(stack.notifier_ops_url, "error")

    assert gateway.start(pipeline_id).status_code == 202
    done = gateway.wait_for(pipeline_id, "succeeded", timeout=90)

    assert pipeline_id in notifier_hooks.stopped("fail_composing")
    note = done["notification"]
    assert note["delivered"] is False
    assert note["error"] == "the email was not sent: InjectedFault: test hook fail_composing failed on purpose"
    assert gateway.wait_for_timeline(pipeline_id, "succeeded")["events"][-2]["kind"] == "email_refused"
    assert emails_failed(stack.notifier_ops_url, "error") == failed_before + 1
    assert mail.messages(pipeline_id) == []
    lines = stack.logs("notifier").splitlines()
    logged = [json.loads(line.partition("| ")[2]) for line in lines if pipeline_id in line]
    assert [(line["msg"], line.get("reason")) for line in logged if line["level"] == "ERROR"] == [
        ("email not sent: composing or sending it failed unexpectedly", None),
        (f"email not sent: {note['error']}", "error"),
    ]
