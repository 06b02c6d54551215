"""The notifier's Prometheus metrics.

``callback_to_email_seconds`` is the whole wait a user sees once the outcome is
known; ``email_pickup_seconds`` and ``smtp_delivery_seconds`` split it into the
part spent before the notifier starts (Resonate resuming the workflow, the
worker asking for the email, Resonate handing it over) and the part spent
talking to the mail server, so the benchmark (tests/benchmark) can say which
hop to optimise.
"""

from prometheus_client import Counter, Histogram

#: Labelled by the state the email announces: a final state, or awaiting_repair
#: for the emails asking a person to repair or abandon a failed run.
EMAILS_SENT = Counter(
    "emails_sent_total",
    "Emails accepted by the SMTP server, by the pipeline state they announce (final, or awaiting_repair).",
    ["state"],
)
#: Labelled by the kind of email: outcome, awaiting_repair, step (an email a pipeline's code sent) or
#: approval_request (a gate asking the people who may decide), so a dashboard tells a pipeline's own
#: emails from ours.
EMAILS_SENT_BY_KIND = Counter(
    "emails_sent_by_kind_total",
    "Emails accepted by the SMTP server, by kind: outcome, awaiting_repair, step or approval_request.",
    ["kind"],
)
EMAILS_FAILED = Counter(
    "emails_failed_total",
    "Emails that could not be sent, by reason: permanent (5xx), transient (retried later), configuration (the "
    "SMTP settings are wrong; retried), address (the notifier cannot send to it) or error (composing or sending "
    "failed unexpectedly).",
    ["reason"],
)
CALLBACK_TO_EMAIL_SECONDS = Histogram(
    "callback_to_email_seconds",
    "From the moment a pipeline's outcome was accepted (callback, watchdog or cancel) to the SMTP server "
    "accepting its email.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
EMAIL_PICKUP_SECONDS = Histogram(
    "email_pickup_seconds",
    "From the moment a pipeline's outcome was accepted to the notifier starting on its email: the workflow "
    "resumed by Resonate, the worker asking for the email, Resonate handing it to the notifier.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SMTP_DELIVERY_SECONDS = Histogram(
    "smtp_delivery_seconds",
    "One attempt to hand an email to the SMTP server: MAIL, RCPT and DATA, after connect and EHLO when no kept "
    "connection was free, with the quick retries within the attempt.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
#: Against emails_sent_total, how well connections are reused (pipeline_notifier.smtp_pool): near one per
#: email means each pays for its own connect, EHLO, TLS and AUTH.
SMTP_CONNECTIONS_OPENED = Counter(
    "smtp_connections_opened_total",
    "SMTP connections opened (connected, greeted, EHLO, STARTTLS and AUTH as configured); kept ones serve many emails.",
)

# Every failure reason is exported from the start, at 0. A labelled counter
# otherwise appears only at its first increment, already at 1, and the
# alerts on its increase (infra/observability/prometheus/alerts.yml) could
# not see that first failure, which for "permanent" may be the only one.
for _reason in ("permanent", "transient", "configuration", "address", "error"):
    EMAILS_FAILED.labels(reason=_reason)
for _kind in ("outcome", "awaiting_repair", "step", "approval_request"):
    EMAILS_SENT_BY_KIND.labels(kind=_kind)
