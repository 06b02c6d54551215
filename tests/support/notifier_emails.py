"""Notifications and the emails the notifier composes from them, read back as a mail client would."""

from __future__ import annotations

import email
import email.policy
import uuid
from email.message import EmailMessage
from typing import Any

from pipeline_notifier.email import compose_email
from pipeline_shared.models import DatabricksRun, Notification, PipelineState

SENDER = "Pipelines <pipelines@example.com>"
DOMAIN = "notify.example.com"
RUN = DatabricksRun(run_id=4242, run_page_url="https://dbc.example.com/jobs/7/runs/4242")


def notification(state: PipelineState, **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "pipeline_id": f"nightly-{uuid.uuid4().hex[:8]}",
        "email": "analyst@example.com",
        "state": state,
        "parameters": {"date": "2026-11-26", "region": "eu-west"},
        "run": RUN,
    }
    values.update(fields)
    return Notification(**values)


def compose(n: Notification, **kwargs: Any) -> EmailMessage:
    return compose_email(n, sender=SENDER, message_id_domain=DOMAIN, **kwargs)


def bodies(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML a mail client would show, after a trip through bytes."""
    parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()
