"""What the notifier's SMTP tests hand to ``deliver``: a composed email, a configuration for a sink, what arrived."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from typing import Any

from mailsink import MailSink, MessageFilter
from pipeline_notifier.email import compose_email
from pipeline_notifier.smtp import RetryPolicy, SmtpConfig
from pipeline_shared.models import DatabricksRun, Notification, PipelineState

#: Retries fast enough for a test, and as many as a test needs.
FAST = RetryPolicy(max_attempts=4, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)


def message_for(rcpt: str | None = None, state: PipelineState = PipelineState.SUCCEEDED) -> EmailMessage:
    notification = Notification(
        pipeline_id=f"p-{uuid.uuid4().hex[:12]}",
        email=rcpt or f"user-{uuid.uuid4().hex[:8]}@example.com",
        state=state,
        parameters={"date": "2026-11-26"},
        run=DatabricksRun(run_id=1, run_page_url="https://dbc.example.com/run/1"),
        result={"rows": 10},
    )
    return compose_email(notification, sender="pipelines@example.com", message_id_domain="example.com")


def config_for(sink: MailSink, **fields: Any) -> SmtpConfig:
    """Plain SMTP to ``sink``, fast retries; ``fields`` override (``port`` to reach it through a relay)."""
    values: dict[str, Any] = {
        "host": sink.smtp_host,
        "port": sink.smtp_port,
        "security": "none",
        "retry": FAST,
        "timeout_seconds": 5.0,
        "local_hostname": "notifier.test",
    }
    values.update(fields)
    return SmtpConfig(**values)


def stored(sink: MailSink, message: EmailMessage) -> list:
    return sink.store.find(MessageFilter(message_id=message["Message-ID"]))
