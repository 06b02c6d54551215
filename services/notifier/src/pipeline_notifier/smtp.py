"""Handing one composed email to an SMTP server, and saying what became of it.

SMTP tells a client whether to try again: a 4xx reply, a dropped connection
or a timeout is transient, a 5xx reply is the server's final word. This module
turns that into the notifier's three outcomes:

* delivered: the server accepted the message;
* refused for good (5xx): a :class:`NotificationReceipt` with
  ``delivered=False``, the reply text and code. Nothing is raised: trying
  again would only be refused again, and the pipeline's outcome stands;
* still failing after the retries here: :class:`SmtpTransientError` is
  raised, so the durable step above fails and Resonate retries it later, with
  a longer backoff than is sensible to hold a connection slot for.

Errors, as raised by :func:`deliver`::

    SmtpDeliveryError
    ├── SmtpTransientError       4xx / connection / timeout, retries used up
    └── SmtpConfigurationError   the server cannot be used as configured:
                                 STARTTLS or AUTH missing, credentials refused

Connections come from a :class:`.smtp_pool.SmtpPool`, which keeps them
between emails; a kept connection the server had dropped is replaced there at
once, so it costs the email neither an attempt nor a delay here.

Retrying is safe because the message carries a Message-ID derived from the
pipeline: a server (or the recipient's client) sees a repeat, not a new mail.
Retries are written out here rather than with a retry library because each
failure has three possible ends (retry, receipt, raise), decided by the reply
code, and the loop is short.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from pipeline_shared.models import NotificationReceipt

# The configuration is read from here by every caller; it lives apart so the
# pool can take it without importing this module.
from .smtp_config import RetryPolicy as RetryPolicy
from .smtp_config import SmtpConfig
from .smtp_pool import SmtpPool

log = logging.getLogger(__name__)

#: RFC 4954's replies about authentication itself: 530 authentication
#: required, 534 mechanism too weak, 535 credentials invalid, 538 encryption
#: required. They say the notifier is misconfigured, not that the message is
#: unwanted, so they are not a reason to give up on the email.
AUTH_REPLY_CODES = frozenset({530, 534, 535, 538})


class SmtpDeliveryError(Exception):
    """The email could not be handed over, and may be on a later try."""


class SmtpTransientError(SmtpDeliveryError):
    """Every attempt met a transient failure (4xx, connection, timeout).

    Raised so the caller's durable step fails and is retried later.
    """

    def __init__(self, message: str, *, attempts: int, smtp_code: int | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        #: The last SMTP reply code, or None when the last failure had none.
        self.smtp_code = smtp_code


class SmtpConfigurationError(SmtpDeliveryError):
    """The server cannot be used as configured; an operator must act.

    Raised, not reported as a receipt, because the email itself is fine and
    will go once the configuration is fixed.
    """


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt, classified."""

    kind: Literal["transient", "permanent", "configuration"]
    text: str
    code: int | None = None


def _reply(code: int, message: str, where: str) -> _Failure:
    text = f"{code} {message} ({where})"
    if code in AUTH_REPLY_CODES:
        return _Failure("configuration", f"the server refused to authenticate: {text}", code)
    if 500 <= code < 600:
        return _Failure("permanent", text, code)
    # 4xx, and anything a well-behaved server would not send here (aiosmtplib
    # reports an unparsable reply as -1): the server is having trouble.
    return _Failure("transient", text, code)


def _certificate_problem(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``error``, if any.

    aiosmtplib wraps it in ``SMTPConnectError`` for implicit TLS and lets it
    through bare during STARTTLS.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _classify(error: Exception) -> _Failure:
    """What an aiosmtplib exception means for this email.

    Which exception carries which reply (aiosmtplib 4.x/5.x):
    ``SMTPRecipientsRefused`` holds one ``SMTPRecipientRefused`` per refused
    ``RCPT``, each with a code; ``SMTPSenderRefused`` (``MAIL``),
    ``SMTPDataError`` (``DATA``), ``SMTPHeloError``, ``SMTPAuthenticationError``
    and ``SMTPConnectResponseError`` (the greeting) are
    ``SMTPResponseException``\\ s with ``code``. ``SMTPConnectError``,
    ``SMTPServerDisconnected`` and the ``SMTPTimeoutError`` family carry no
    code. ``SMTPNotSupported`` and plain ``SMTPException`` mean a missing
    extension (STARTTLS, AUTH, SMTPUTF8).
    """
    if (bad_certificate := _certificate_problem(error)) is not None:
        # Retrying cannot make an untrusted certificate trusted.
        return _Failure("configuration", f"the server's TLS certificate is not trusted: {bad_certificate}")
    match error:
        case aiosmtplib.SMTPRecipientsRefused(recipients=refused) if refused:
            failures = [_reply(r.code, r.message, f"RCPT TO {r.recipient}") for r in refused]
            # One recipient per email; with more, any that may yet succeed
            # makes the whole send worth retrying.
            return next((f for f in failures if f.kind != "permanent"), failures[0])
        case aiosmtplib.SMTPAuthenticationError(code=code, message=message):
            return _Failure("configuration", f"the server refused to authenticate: {code} {message}", code)
        case aiosmtplib.SMTPSenderRefused(code=code, message=message):
            return _reply(code, message, "MAIL FROM")
        case aiosmtplib.SMTPDataError(code=code, message=message):
            return _reply(code, message, "DATA")
        case aiosmtplib.SMTPConnectResponseError(code=code, message=message):
            return _reply(code, message, "greeting")
        case aiosmtplib.SMTPResponseException(code=code, message=message):
            return _reply(code, message, "reply")
        case aiosmtplib.SMTPConnectError() | aiosmtplib.SMTPServerDisconnected():
            return _Failure("transient", f"connection failed: {error}")
        case aiosmtplib.SMTPTimeoutError():
            return _Failure("transient", f"timed out: {error}")
        case aiosmtplib.SMTPNotSupported() | aiosmtplib.SMTPException():
            return _Failure("configuration", f"the server cannot be used as configured: {error}")
        case ssl.SSLError() | OSError():
            return _Failure("transient", f"network error: {error.__class__.__name__}: {error}")
    raise error


async def deliver(message: EmailMessage, smtp: SmtpConfig | SmtpPool) -> NotificationReceipt:
    """Send ``message`` to the recipients in its headers, retrying transient failures.

    ``smtp`` is a pool of kept connections (see :mod:`.smtp_pool`), or a
    configuration alone, for a connection of this email's own, closed after it.

    Returns a receipt with ``delivered=True`` once the server accepts the
    message, or ``delivered=False`` with the reply text and ``smtp_code`` when
    the server refuses it permanently (5xx). Transient failures (4xx replies,
    refused or dropped connections, timeouts) are retried with exponential
    backoff under ``config.retry``.

    Raises :class:`SmtpTransientError` when the retries are used up and the
    failures were all transient: the caller's durable step should fail so
    that Resonate retries the whole step later. Raises
    :class:`SmtpConfigurationError` when the server cannot be used as
    configured (STARTTLS or AUTH not offered, credentials refused). Raises
    ``ValueError`` for a message without a Message-ID.
    """
    message_id = str(message["Message-ID"] or "")
    if not message_id:
        raise ValueError("the message has no Message-ID; compose it with compose_email")
    pool = smtp if isinstance(smtp, SmtpPool) else SmtpPool(smtp, size=0)
    policy = pool.config.retry
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            await pool.send(message)
        except Exception as exc:
            failure = _classify(exc)
        else:
            log.info("delivered %s on attempt %d", message_id, attempt)
            return NotificationReceipt(delivered=True, message_id=message_id)

        if failure.kind == "permanent":
            log.warning("%s refused for good: %s", message_id, failure.text)
            return NotificationReceipt(
                delivered=False, message_id=message_id, error=failure.text, smtp_code=failure.code
            )
        if failure.kind == "configuration":
            raise SmtpConfigurationError(failure.text)

        delay = policy.delay(attempt)
        out_of_time = (
            policy.deadline_seconds is not None and time.monotonic() - started + delay > policy.deadline_seconds
        )
        if attempt >= policy.max_attempts or out_of_time:
            raise SmtpTransientError(
                f"{message_id} not delivered after {attempt} attempt(s): {failure.text}",
                attempts=attempt,
                smtp_code=failure.code,
            )
        log.warning(
            "attempt %d for %s failed (%s); retrying in %.2f s",
            attempt,
            message_id,
            failure.text,
            delay,
        )
        await asyncio.sleep(delay)
