"""The notifier's Prometheus metrics."""

from prometheus_client import Counter, Histogram

EMAILS_SENT = Counter("emails_sent_total", "Emails accepted by the SMTP server, by pipeline state.", ["state"])
EMAILS_FAILED = Counter(
    "emails_failed_total",
    "Emails that could not be sent, by reason: permanent (5xx) or transient (retried later).",
    ["reason"],
)
CALLBACK_TO_EMAIL_SECONDS = Histogram(
    "callback_to_email_seconds",
    "From the moment a pipeline's outcome was accepted (callback, watchdog or cancel) to the SMTP server "
    "accepting its email.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
