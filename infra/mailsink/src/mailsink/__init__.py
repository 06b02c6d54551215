"""A local SMTP sink with an HTTP API, standing in for a mail server offline.

It accepts mail on SMTP, keeps it in memory the way a recipient would see it
(one message per Message-ID, deliveries counted), and lets tests read it, wait
for it and make the server refuse mail with real SMTP replies. It is a test
and development tool: it relays nothing and keeps nothing across restarts.
"""

from mailsink.faults import FaultPlan, Stage
from mailsink.server import MailSink
from mailsink.smtp import Credentials, SmtpOptions
from mailsink.store import PIPELINE_ID_HEADER, Limits, MailStore, MessageFilter

__all__ = [
    "PIPELINE_ID_HEADER",
    "Credentials",
    "FaultPlan",
    "Limits",
    "MailSink",
    "MailStore",
    "MessageFilter",
    "SmtpOptions",
    "Stage",
]
