"""Connections to the SMTP server, kept between emails and handed to one send at a time.

Opening a connection costs a TCP handshake, the greeting, EHLO and, as
configured, a TLS handshake and AUTH: most of an email's SMTP time when the
message itself is small. A :class:`SmtpPool` keeps a few connections open
after their email and sends the next ones on them, so TLS and AUTH happen once
per connection, never per email.

What it promises, and why:

* A connection serves one send at a time: a send takes it out of the pool and
  gives it back only after the server accepted the message.
* A send never waits for a connection: when every kept one is busy, it opens
  its own. Waiting would queue an email behind another's slow exchange (up to
  the SMTP timeout) just when a burst of completions needs them all out; the
  number open at once is already bounded by the sends the process runs at once
  (``MAX_CONCURRENT_TASKS``). Only ``size`` connections are kept afterwards;
  the rest say QUIT.
* Any failure during a send closes that connection: a transaction left in an
  unknown state is not one to hand the next email (aiosmtplib's RSET could
  repair it, but failures are rare and a new connection is certain).
* A connection idle longer than ``max_idle_seconds`` is closed, not reused:
  RFC 5321 (4.5.3.2.7) lets a server drop a client idle for 5 minutes, and a
  busy one drops it sooner. Idle ones are looked at when a send takes or
  gives back a connection, and closed by :meth:`SmtpPool.close` at shutdown;
  one the server drops meanwhile is closed by aiosmtplib when the socket ends.
* A kept connection the server dropped without our noticing (a reset, a 421,
  the socket gone) costs its email nothing: the send goes again at once on a
  new connection, once, before any error reaches :func:`.smtp.deliver`'s
  retries. No NOOP probes a connection before use: it would cost a round trip
  per email, the very thing the pool saves, to catch what this retry catches.

It must not decide what a failure means for the email: that is
:func:`.smtp.deliver`'s, which runs its retries above the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from email.message import EmailMessage

import aiosmtplib

from . import metrics
from .smtp_config import SmtpConfig

log = logging.getLogger(__name__)

#: The reply a server gives when it is closing the connection (RFC 5321
#: 4.2.3), what a kept connection meets when the server timed it out.
CLOSING_REPLY_CODE = 421


class SmtpPool:
    """Connected clients to the one server ``config`` names, reused across emails.

    ``size`` is how many idle connections are kept; 0 keeps none, so every
    email has a connection of its own, closed after it (the behaviour before
    the pool). Not shared between event loops.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        size: int = 4,
        max_idle_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative, got {size}")
        if max_idle_seconds <= 0:
            raise ValueError(f"max_idle_seconds must be positive, got {max_idle_seconds}")
        self.config = config
        self.size = size
        self.max_idle_seconds = max_idle_seconds
        self._clock = clock
        #: (given back at, client), oldest first; sends take the newest, so
        #: under light load the extra ones age out instead of all staying warm.
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []
        self._closed = False

    @property
    def idle(self) -> int:
        """Connections kept and not in use."""
        return len(self._idle)

    async def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the server on a kept connection, or a new one.

        Raises what aiosmtplib raised, for the caller to classify.
        """
        kept = self._take()
        if kept is not None:
            try:
                await self._send_on(kept, message)
            except Exception as exc:
                if not _dropped_by_server(exc):
                    raise
                log.info("a kept SMTP connection was closed by the server (%s); sending on a new one", exc)
            else:
                return
        await self._send_on(await self._open(), message)

    async def close(self) -> None:
        """Say QUIT on every idle connection; those in use close when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for _, client in idle))

    async def _send_on(self, client: aiosmtplib.SMTP, message: EmailMessage) -> None:
        try:
            await client.send_message(message)
        except BaseException:
            # Cancelled or failed: whatever state the transaction is in, it
            # is not one to hand the next email.
            client.close()
            raise
        if self._closed or len(self._idle) >= self.size or not client.is_connected:
            await _quit(client)
        else:
            self._idle.append((self._clock(), client))
        self._close_expired()

    def _take(self) -> aiosmtplib.SMTP | None:
        self._close_expired()
        while self._idle:
            _, client = self._idle.pop()
            # aiosmtplib closes a client whose socket the server ended.
            if client.is_connected:
                return client
        return None

    def _close_expired(self) -> None:
        # Closed without QUIT: a connection this old may already be dropped
        # at the other end, and a server takes a silent close in its stride.
        oldest_kept = self._clock() - self.max_idle_seconds
        while self._idle and self._idle[0][0] < oldest_kept:
            _, client = self._idle.pop(0)
            client.close()

    async def _open(self) -> aiosmtplib.SMTP:
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.security == "tls",
            # False, not None: with None aiosmtplib would upgrade opportunistically
            # under "none" and silently go plain under "starttls".
            start_tls=config.security == "starttls",
            cert_bundle=config.ca_file,
            username=config.username or None,
            password=config.password or None,
            local_hostname=config.local_hostname,
            timeout=config.timeout_seconds,
        )
        # Connects, reads the greeting, says EHLO, then STARTTLS and AUTH as
        # configured; on failure aiosmtplib closes the socket itself.
        await client.connect(timeout=config.connect_timeout_seconds or config.timeout_seconds)
        metrics.SMTP_CONNECTIONS_OPENED.inc()
        return client


def _dropped_by_server(error: Exception) -> bool:
    """Whether ``error`` says the server had closed the connection, not refused the email."""
    match error:
        case aiosmtplib.SMTPServerDisconnected() | ConnectionError():
            return True
        case aiosmtplib.SMTPRecipientsRefused(recipients=refused):
            return any(recipient.code == CLOSING_REPLY_CODE for recipient in refused)
        case aiosmtplib.SMTPResponseException(code=code):
            return code == CLOSING_REPLY_CODE
    return False


async def _quit(client: aiosmtplib.SMTP) -> None:
    """End a connection politely; the email it carried is delivered whatever QUIT meets."""
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
