"""The notifier's durable function: email one pipeline's outcome, or that it awaits repair.

``send_pipeline_email`` is a leaf: it performs no durable operation, so when
it raises, Resonate retries the whole function under :data:`EMAIL_RETRY`.
Within one attempt, :func:`.smtp.deliver` already retries 4xx replies and
connection trouble briefly; what outlives that (a mail server down for
minutes, a misconfigured login) is retried here, with a longer backoff and a
bound, after which the worker records the email as not sent.

Anything else that goes wrong (an address the notifier cannot send to, an
email that cannot be composed, an unexpected error) ends the email step at
once with a receipt saying it was not sent: retrying would fail the same
way, and the pipeline must reach its final state, with
``notification.delivered`` false and the cause. Every such failure is counted
in ``emails_failed_total`` by reason and logged with the pipeline id.

A retried send repeats the same Message-ID (derived from the pipeline id, the
kind of email, its state and the latest attempt), so a receiving server that
already accepted the message sees a duplicate, not a second email. A repaired
pipeline's emails (each wait for repair, the outcome) are separate calls of
this function with ids of their own, so one email's resend never stands in
for, or hides, another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from resonate.context import Context
from resonate.promises import Promises
from resonate.retry import Exponential

from pipeline_shared import tracing
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import Notification, NotificationReceipt
from pipeline_shared.recipients import RecipientRefused
from pipeline_shared.testhooks import TestHooks

from . import metrics
from .email import compose_email, latest_attempt
from .smtp import SmtpConfig, SmtpConfigurationError, SmtpTransientError, deliver
from .smtp_pool import SmtpPool

logger = logging.getLogger(__name__)

#: The tracer's scope: the notifier's spans (see pipeline_shared.tracing).
TRACE_SCOPE = "pipeline_notifier"

#: Characters of a failure's text kept in the receipt (the status document and the timeline show it).
MAX_RECEIPT_ERROR_CHARS = 500

#: After smtp.deliver's own quick retries: 5 s doubling to 5 min, 8 more
#: attempts (about 20 minutes in all) before the failure is recorded.
EMAIL_RETRY = Exponential(delay=5, factor=2, max_delay=300, max_retries=8)


@dataclass(frozen=True)
class NotifierDeps:
    #: Kept connections to the relay; a configuration alone opens one per email.
    smtp: SmtpConfig | SmtpPool
    sender: str
    message_id_domain: str
    #: The web page's base URL, which an approval request links the pipeline's page under (None: no link).
    page_url: str | None = None
    #: Pause points for fault tests; inert unless enabled (see pipeline_shared.testhooks).
    hooks: TestHooks = field(default_factory=lambda: TestHooks(enabled=False))
    #: Where each pipeline's trace context is read (its root promise); None: emails start traces of their own.
    promises: Promises | None = None
    traces: tracing.TraceContexts = field(default_factory=tracing.TraceContexts)


async def send_pipeline_email(ctx: Context, notification: Notification) -> NotificationReceipt:
    deps = ctx.get_dependency(NotifierDeps)
    if notification.settled_at is not None:
        metrics.EMAIL_PICKUP_SECONDS.observe(max(0.0, time.time() - notification.settled_at / 1000))
    # Which of the pipeline's emails this is: its logs name it, since one pipeline may send several.
    which = {
        "kind": notification.kind,
        "state": notification.state.value,
        "attempt": latest_attempt(notification),
        "step": notification.step,
    }
    parent = None if deps.promises is None else await deps.traces.of(deps.promises, notification.pipeline_id)
    # The span says which email this is, never to whom nor what it says (see tracing.ATTRIBUTES).
    attributes = {
        "pipeline.id": notification.pipeline_id,
        "email.kind": notification.kind,
        "pipeline.state": notification.state.value,
        "pipeline.attempt": which["attempt"],
        "pipeline.step": notification.step,
    }
    with (
        pipeline_context(notification.pipeline_id),
        tracing.span(TRACE_SCOPE, "pipeline.email", parent=parent, attributes=attributes) as span,
    ):
        try:
            receipt = await _compose_and_deliver(deps, notification, which)
            tracing.set_attributes(span, {"email.delivered": receipt.delivered})
            return receipt
        except SmtpTransientError as exc:
            metrics.EMAILS_FAILED.labels(reason="transient").inc()
            logger.warning("email not sent yet, will retry: %s", exc, extra={"fields": which})
            raise
        except SmtpConfigurationError as exc:
            metrics.EMAILS_FAILED.labels(reason="configuration").inc()
            logger.error("email not sent: the SMTP settings are wrong: %s", exc, extra={"fields": which})
            raise
        except RecipientRefused as exc:
            # The gateway refuses such addresses at start; this pipeline was accepted before it did.
            tracing.set_attributes(span, {"email.delivered": False})
            return _not_sent("address", f"the email was not sent: {exc}", which)
        except Exception as exc:
            # A bug, or a notification nobody foresaw: trying again would
            # compose the same email and fail the same way, and a raise would
            # leave the pipeline retrying (and "notifying") for many minutes
            # only to fail anyway. The email step ends now, as not sent.
            logger.exception("email not sent: composing or sending it failed unexpectedly", extra={"fields": which})
            tracing.set_attributes(span, {"email.delivered": False})
            return _not_sent("error", f"the email was not sent: {exc.__class__.__name__}: {exc}", which)


def _not_sent(reason: str, error: str, which: dict[str, object]) -> NotificationReceipt:
    """The receipt of an email that will not be sent, counted and logged: a durable outcome, not a retry."""
    metrics.EMAILS_FAILED.labels(reason=reason).inc()
    error = error if len(error) <= MAX_RECEIPT_ERROR_CHARS else error[: MAX_RECEIPT_ERROR_CHARS - 1] + "…"
    logger.error("email not sent: %s", error, extra={"fields": {**which, "reason": reason}})
    return NotificationReceipt(delivered=False, error=error)


async def _compose_and_deliver(
    deps: NotifierDeps, notification: Notification, which: dict[str, object]
) -> NotificationReceipt:
    # A fault test's way to make composing fail unexpectedly (inert unless enabled).
    await deps.hooks.checkpoint("fail_composing", notification.pipeline_id)
    message = compose_email(
        notification, sender=deps.sender, message_id_domain=deps.message_id_domain, page_url=deps.page_url
    )
    with metrics.SMTP_DELIVERY_SECONDS.time():
        receipt = await deliver(message, deps.smtp)
    if not receipt.delivered:
        metrics.EMAILS_FAILED.labels(reason="permanent").inc()
        logger.error(
            "email refused permanently",
            extra={"fields": {**which, "smtp_code": receipt.smtp_code, "error": receipt.error}},
        )
        return receipt
    metrics.EMAILS_SENT.labels(state=notification.state.value).inc()
    metrics.EMAILS_SENT_BY_KIND.labels(kind=notification.kind).inc()
    if notification.settled_at is not None:
        metrics.CALLBACK_TO_EMAIL_SECONDS.observe(max(0.0, time.time() - notification.settled_at / 1000))
    logger.info("email sent", extra={"fields": {**which, "message_id": receipt.message_id}})
    await deps.hooks.checkpoint("after_smtp", notification.pipeline_id)
    return receipt
