"""Hostile recipients, hostile parameters and late notifications, on the compose stack.

A caller chooses who gets a pipeline's email and what text it carries, so an
email is a way to reach a stranger's inbox. Each test here asserts the
refusal (status, stable code, a message naming what was wrong) and that
nothing changed: no pipeline, no run, no email; or, where the request is
taken, that the stranger reads the caller's text as quoted data, cut short,
with no link of ours in it.
"""

from __future__ import annotations

import time

import httpx
import pytest

from pipeline_notifier.blocks import MAX_PARAMETER_CHARS
from pipeline_notifier.email import PARAMETERS_NOTE
from tests.support.stack import Stack
from tests.support.stack_clients import NOTIFICATION_CREDENTIALS, Emulator, Gateway, MailSink, new_id

#: Addresses no email can honestly go to, and the words the refusal must contain.
UNDELIVERABLE = [
    # RFC 6531: a non-ASCII local part needs the relay's SMTPUTF8, known only when sending.
    pytest.param("üser@exämple.com", "Internationalized characters before the @-sign", id="non-ascii-local-part"),
    # RFC 5321 4.5.3.1.1: 64 octets before the @.
    pytest.param("a" * 65 + "@example.com", "too long before the @-sign", id="65-char-local-part"),
    pytest.param("victim@example.com\r\nBcc: other@example.com", "invalid characters", id="header-injection-crlf"),
    pytest.param("victim@example.com\nSubject: urgent", "invalid characters", id="header-injection-lf"),
    pytest.param("IT Security <victim@example.com>", "display name", id="display-name"),
    pytest.param('"ceo@example.com" <attacker@example.com>', "display name", id="display-name-spoof"),
    pytest.param("victim@example.com, other@example.com", "invalid characters", id="two-recipients"),
    # RFC 5321 4.5.3.1.3: a path of 256 octets, two of them the angle brackets.
    pytest.param("a@" + "b" * 300 + ".com", "longer than an email address can be", id="overlong-address"),
]

#: How long a notification that was wrongly acted on would take to show: the
#: check it prompts runs at once and the index follows within a second.
SETTLE_SECONDS = 2


@pytest.mark.parametrize(("address", "why"), UNDELIVERABLE)
def test_an_address_the_notifier_cannot_deliver_to_is_refused_and_nothing_starts(
    gateway: Gateway, emulator: Emulator, mail: MailSink, address: str, why: str
) -> None:
    pipeline_id = new_id("rcpt")

    response = gateway.start(pipeline_id, email=address)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["message"].startswith("body.email: ") and why in body["message"], body["message"]
    assert gateway.http.get(f"/pipelines/{pipeline_id}").status_code == 404
    assert emulator.runs(pipeline_id) == []
    assert mail.messages(pipeline_id) == []


def test_a_callers_text_reaches_the_inbox_quoted_unlinked_escaped_and_bounded(gateway: Gateway, mail: MailSink) -> None:
    pipeline_id = new_id("as-data")
    lure = "Click http://evil.example/verify to verify your account <script>alert(1)</script>"
    text = f"{lure} " + "z" * 5000  # the job takes up to 6,000 characters

    started = gateway.start(pipeline_id, job="word-frequencies", parameters={"text": text, "top": "5"})
    assert started.status_code == 202, started.text
    gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    email = mail.wait_for(pipeline_id)

    plain, html = email["text"], email["html"]
    parameters = plain[plain.index(PARAMETERS_NOTE) :]
    shown = lure.replace("http://", "http[:]//")[:MAX_PARAMETER_CHARS]
    assert f'  | text = "{shown}' in parameters, parameters
    assert f"({len(text) - MAX_PARAMETER_CHARS:,} more characters)" in parameters
    for body in (plain, html):
        assert "http://evil" not in body, "no link of the caller's is one click away"
        assert "z" * (MAX_PARAMETER_CHARS + 1) not in body, "nor more than a value's bound of its text"
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<blockquote" in html


def test_a_notification_about_a_finished_pipeline_is_acknowledged_and_changes_nothing(
    gateway: Gateway, stack: Stack
) -> None:
    pipeline_id = new_id("late-note")
    gateway.start(pipeline_id, job="nightly-refresh", parameters={"table": "sales"})
    done = gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    timeline = gateway.wait_for_timeline(pipeline_id, "succeeded")
    run_id = done["databricks"]["run_id"]

    late = [
        httpx.post(
            f"{stack.callback_url}/notifications/databricks",
            json={"event_type": event, "workspace_id": "1", "run": {"run_id": run_id}, "job": {"job_id": 1}},
            auth=NOTIFICATION_CREDENTIALS,
        )
        for event in ("jobs.on_failure", "jobs.on_start", "jobs.on_success")
    ]

    # Acknowledged, so Databricks does not retry it; acted on by nobody.
    assert [(r.status_code, r.json()["outcome"]) for r in late] == [(202, "ignored")] * 3
    time.sleep(SETTLE_SECONDS)
    assert gateway.status(pipeline_id) == done
    assert gateway.timeline(pipeline_id) == timeline
