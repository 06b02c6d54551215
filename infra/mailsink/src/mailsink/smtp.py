"""The SMTP side of the sink: aiosmtpd, with a handler that stores or refuses.

aiosmtpd speaks the protocol (EHLO, SIZE, 8BITMIME, STARTTLS, AUTH PLAIN and
LOGIN, the DATA size limit); this module only decides, at each command of a
transaction, whether the fault plan refuses it, and otherwise hands accepted
mail to the store. It runs on the same event loop as the HTTP API, so the
store and the fault plan are shared without locks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import warnings
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

from mailsink.faults import FaultPlan, PermanentFault, Reply, Stage, TransientFault
from mailsink.store import Delivery, MailStore

log = logging.getLogger(__name__)

#: What the sink answers when its own code fails: RFC 5321's reply for a local
#: error, transient, so a client retries instead of losing mail to a sink bug.
LOCAL_ERROR_REPLY = "451 4.3.0 Requested action aborted: local error in processing"


@dataclass(slots=True)
class SinkStats:
    """Counters since start, for tests that check how often a client tried."""

    #: MAIL commands seen: each starts a transaction.
    transactions: int = 0
    #: Deliveries accepted, duplicates included.
    accepted: int = 0
    #: Deliveries whose Message-ID was already stored.
    duplicates: int = 0
    #: Transactions refused by a transient fault.
    rejected_transient: int = 0
    #: Replies sent for a permanent fault.
    rejected_permanent: int = 0
    #: AUTH attempts with wrong credentials.
    auth_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one login the sink accepts when AUTH is on."""

    username: str
    password: str

    def accept(self, login: bytes, password: bytes) -> bool:
        # Compare in constant time although this is a test tool: it costs
        # nothing and keeps the habit.
        return hmac.compare_digest(login, self.username.encode()) & hmac.compare_digest(
            password, self.password.encode()
        )


def _uses_tls(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


class SinkHandler:
    """aiosmtpd handler: refuse what the fault plan says, store the rest."""

    def __init__(self, store: MailStore, faults: FaultPlan, stats: SinkStats) -> None:
        self.store = store
        self.faults = faults
        self.stats = stats
        # The transient fault each open transaction met at MAIL; keyed by the
        # envelope aiosmtpd creates per transaction, dropped with it.
        self._transaction_faults: weakref.WeakKeyDictionary[Envelope, TransientFault] = (
            weakref.WeakKeyDictionary()
        )

    def _refuse(self, server: SMTP, reply: Reply) -> str:
        if reply.closes_connection and server.transport is not None:
            # aiosmtpd writes the reply after this hook returns, without
            # yielding to the loop first; closing on the next loop turn lets
            # the reply go out before the connection ends.
            server.loop.call_soon(server.transport.close)
        return reply.line

    def _transient(self, server: SMTP, envelope: Envelope, stage: Stage) -> str | None:
        fault = self._transaction_faults.get(envelope)
        if fault is None or fault.stage is not stage:
            return None
        return self._refuse(server, fault.reply)

    def _permanent(self, server: SMTP, fault: PermanentFault | None) -> str | None:
        if fault is None:
            return None
        self.stats.rejected_permanent += 1
        log.info("refusing mail to %s with %s", fault.recipient, fault.reply.code)
        return self._refuse(server, fault.reply)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.stats.transactions += 1
        fault = self.faults.begin_transaction()
        if fault is not None:
            self.stats.rejected_transient += 1
            log.info(
                "transient fault %s meets this transaction at %s", fault.reply.code, fault.stage
            )
            if fault.stage is Stage.MAIL:
                return self._refuse(server, fault.reply)
            self._transaction_faults[envelope] = fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._transient(server, envelope, Stage.RCPT) or self._permanent(
            server, self.faults.permanent_for(address, Stage.RCPT)
        )
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self._transient(server, envelope, Stage.DATA)
        if refusal is not None:
            return refusal
        for rcpt in envelope.rcpt_tos:
            refusal = self._permanent(server, self.faults.permanent_for(rcpt, Stage.DATA))
            if refusal is not None:
                return refusal
        stored = self.store.deliver(
            Delivery(
                envelope_from=envelope.mail_from or "",
                envelope_to=list(envelope.rcpt_tos),
                raw=envelope.original_content or b"",
                authenticated_as=session.auth_data if isinstance(session.auth_data, str) else None,
                tls=_uses_tls(server),
            )
        )
        self.stats.accepted += 1
        if stored.deliveries > 1:
            self.stats.duplicates += 1
        log.info(
            "stored message %d (%s), delivery %d", stored.id, stored.message_id, stored.deliveries
        )
        return f"250 2.0.0 OK stored as message {stored.id}"

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client gave up on the handshake (it distrusts our
            # certificate, say): its problem, and aiosmtpd closes the session.
            log.info("TLS handshake failed: %s", error.__cause__ or error)
        else:
            log.error("SMTP session failed", exc_info=error)
        return LOCAL_ERROR_REPLY


def make_authenticator(credentials: Credentials, stats: SinkStats) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator accepting only ``credentials``."""

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and credentials.accept(
            auth_data.login, auth_data.password
        ):
            return AuthResult(success=True, auth_data=credentials.username)
        stats.auth_failures += 1
        # handled=False: aiosmtpd then answers 535 5.7.8 itself.
        return AuthResult(success=False, handled=False)

    return authenticate


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    """How the listener behaves, beyond where it listens."""

    #: The name the sink gives in its greeting and EHLO reply.
    hostname: str = "mailsink"
    #: Largest message accepted; announced as SIZE, larger ones get 552.
    max_message_bytes: int = 10 * 1024 * 1024
    #: When set, AUTH is required and only these credentials pass.
    credentials: Credentials | None = None
    #: Offered as STARTTLS when ``implicit_tls`` is False.
    tls_context: ssl.SSLContext | None = None
    #: Speak TLS from the first byte (SMTPS) instead of offering STARTTLS.
    implicit_tls: bool = False
    #: Idle seconds before the sink drops a connection.
    idle_timeout_seconds: float = 300.0


def smtp_protocol_factory(
    options: SmtpOptions, store: MailStore, faults: FaultPlan, stats: SinkStats
) -> Callable[[], SMTP]:
    """A protocol factory for ``loop.create_server``."""
    handler = SinkHandler(store, faults, stats)
    authenticator = make_authenticator(options.credentials, stats) if options.credentials else None

    def build() -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns on every connection that AUTH without TLS is
            # unsafe; for this sink that is the point (see auth_require_tls).
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return _build()

    def _build() -> SMTP:
        return SMTP(
            handler,
            hostname=options.hostname,
            ident="mailsink",
            data_size_limit=options.max_message_bytes,
            # Addresses and headers in UTF-8 are accepted, as real servers do.
            enable_SMTPUTF8=True,
            tls_context=None if options.implicit_tls else options.tls_context,
            timeout=options.idle_timeout_seconds,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            # A development sink: AUTH over plain TCP is allowed so the
            # notifier's credentials can be tested without TLS.
            auth_require_tls=False,
            loop=asyncio.get_running_loop(),
        )

    return build
