"""Delivering composed emails over real SMTP to an in-process sink, faults included."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailsink import Credentials, MailSink, SmtpOptions, Stage
from pipeline_notifier.smtp import (
    RetryPolicy,
    SmtpConfig,
    SmtpConfigurationError,
    SmtpTransientError,
    deliver,
)
from tests.support.mail_messages import TlsMaterial
from tests.support.smtp_delivery import FAST, config_for, message_for, stored

CREDENTIALS = Credentials("notifier", "smtp-test-password")


async def test_delivers_and_returns_a_receipt(sink: MailSink) -> None:
    message = message_for()
    receipt = await deliver(message, config_for(sink))

    assert receipt.delivered is True
    assert receipt.message_id == message["Message-ID"]
    assert receipt.error is None and receipt.smtp_code is None
    (arrived,) = stored(sink, message)
    assert arrived.envelope_to == [message["To"]]
    assert arrived.pipeline_id == message["X-Pipeline-Id"]
    assert arrived.text and "finished successfully" in arrived.text
    assert arrived.html and "<table>" in arrived.html


async def test_delivering_again_is_a_duplicate_to_the_recipient(sink: MailSink) -> None:
    message = message_for()
    await deliver(message, config_for(sink))
    await deliver(message, config_for(sink))
    (arrived,) = stored(sink, message)
    assert arrived.deliveries == 2


@pytest.mark.parametrize("stage", [Stage.MAIL, Stage.RCPT, Stage.DATA])
@pytest.mark.parametrize("code", [421, 450, 451, 452])
async def test_transient_replies_are_retried_until_delivered(sink: MailSink, stage: Stage, code: int) -> None:
    sink.faults.set_transient(code=code, stage=stage, count=2)
    message = message_for()
    receipt = await deliver(message, config_for(sink))

    assert receipt.delivered is True
    assert sink.stats.rejected_transient == 2
    assert sink.stats.transactions == 3
    assert len(stored(sink, message)) == 1


async def test_transient_failures_past_the_attempts_raise(sink: MailSink) -> None:
    sink.faults.set_transient(code=451, count=100)
    with pytest.raises(SmtpTransientError) as raised:
        await deliver(message_for(), config_for(sink))

    assert raised.value.attempts == FAST.max_attempts
    assert raised.value.smtp_code == 451
    assert "451 4.3.0" in str(raised.value)
    assert sink.stats.transactions == FAST.max_attempts
    assert len(sink.store) == 0


async def test_retries_stop_at_the_deadline(sink: MailSink) -> None:
    sink.faults.set_transient(code=450, count=100)
    policy = RetryPolicy(max_attempts=100, backoff_base_seconds=0.05, backoff_cap_seconds=0.05, deadline_seconds=0.2)
    with pytest.raises(SmtpTransientError) as raised:
        await deliver(message_for(), config_for(sink, retry=policy))
    # 0.2 s of 25-50 ms pauses: a handful of attempts, far fewer than 100.
    assert 2 <= raised.value.attempts <= 9


@pytest.mark.parametrize(
    ("code", "stage", "fragment"),
    [
        (550, Stage.RCPT, "550 5.1.1 Requested action not taken: mailbox unavailable (RCPT TO"),
        (553, Stage.RCPT, "553 5.1.3"),
        (
            552,
            Stage.DATA,
            "552 5.2.2 Requested mail action aborted: exceeded storage allocation (DATA)",
        ),
        (554, Stage.DATA, "554 5.7.1 Transaction failed (DATA)"),
    ],
)
async def test_permanent_refusal_is_a_receipt_not_an_exception(
    sink: MailSink, code: int, stage: Stage, fragment: str
) -> None:
    message = message_for()
    sink.faults.set_permanent(message["To"], code=code, stage=stage)
    receipt = await deliver(message, config_for(sink))

    assert receipt.delivered is False
    assert receipt.smtp_code == code
    assert receipt.message_id == message["Message-ID"]
    assert receipt.error is not None and fragment in receipt.error
    assert sink.stats.transactions == 1, "a permanent refusal is not retried"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _RetryLogged(logging.Handler):
    """Sets an event when ``deliver`` logs that it will retry."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retrying = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if "retrying in" in record.getMessage():
            self.retrying.set()


@pytest.fixture
def retry_log() -> Iterator[_RetryLogged]:
    handler = _RetryLogged()
    logger = logging.getLogger("pipeline_notifier.smtp")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_connection_refused_then_server_comes_up(retry_log: _RetryLogged) -> None:
    port = free_port()
    config = SmtpConfig(
        host="127.0.0.1",
        port=port,
        security="none",
        timeout_seconds=5,
        retry=RetryPolicy(max_attempts=20, backoff_base_seconds=0.05, backoff_cap_seconds=0.1),
    )
    message = message_for()
    sending = asyncio.create_task(deliver(message, config))
    await asyncio.wait_for(retry_log.retrying.wait(), 10)
    assert "connection failed" in retry_log.messages[0]

    async with MailSink(smtp_port=port, serve_http=False) as late_sink:
        receipt = await asyncio.wait_for(sending, 10)
        assert receipt.delivered is True
        assert len(stored(late_sink, message)) == 1


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never says a word: SMTP clients time out."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        server.close_clients()
        await server.wait_closed()


async def test_a_server_that_never_greets_times_out_and_raises(silent_server: int) -> None:
    config = SmtpConfig(
        host="127.0.0.1",
        port=silent_server,
        security="none",
        timeout_seconds=0.2,
        retry=RetryPolicy(max_attempts=2, backoff_base_seconds=0.01),
    )
    with pytest.raises(SmtpTransientError) as raised:
        await deliver(message_for(), config)
    assert raised.value.attempts == 2
    assert raised.value.smtp_code is None
    assert "timed out" in str(raised.value).lower()


async def test_a_421_that_drops_the_connection_is_retried(sink: MailSink) -> None:
    sink.faults.set_transient(code=421, stage=Stage.MAIL, count=1)
    message = message_for()
    assert (await deliver(message, config_for(sink))).delivered is True
    assert len(stored(sink, message)) == 1


@pytest.fixture
async def auth_sink() -> AsyncIterator[MailSink]:
    async with MailSink(options=SmtpOptions(credentials=CREDENTIALS), serve_http=False) as running:
        yield running


async def test_empty_credentials_mean_no_login(sink: MailSink) -> None:
    message = message_for()
    receipt = await deliver(message, config_for(sink, username="", password=""))
    assert receipt.delivered is True
    assert stored(sink, message)[0].authenticated_as is None


async def test_credentials_are_used(auth_sink: MailSink) -> None:
    message = message_for()
    config = config_for(auth_sink, username=CREDENTIALS.username, password=CREDENTIALS.password)
    assert (await deliver(message, config)).delivered is True
    (arrived,) = stored(auth_sink, message)
    assert arrived.authenticated_as == "notifier"


@pytest.mark.parametrize("credentials", [{"username": "notifier", "password": "wrong"}, {}], ids=["wrong", "missing"])
async def test_refused_or_missing_credentials_are_a_configuration_error(auth_sink: MailSink, credentials: dict) -> None:
    with pytest.raises(SmtpConfigurationError, match=r"refused to authenticate: 53[05]"):
        await deliver(message_for(), config_for(auth_sink, **credentials))
    assert len(auth_sink.store) == 0


async def test_starttls_with_a_private_ca(tls: TlsMaterial, ca_file: Path) -> None:
    message = message_for()
    async with MailSink(options=SmtpOptions(tls_context=tls.server), serve_http=False) as sink:
        config = config_for(sink, security="starttls", ca_file=str(ca_file))
        assert (await deliver(message, config)).delivered is True
        (arrived,) = stored(sink, message)
    assert arrived.tls is True


async def test_implicit_tls_with_credentials(tls: TlsMaterial, ca_file: Path) -> None:
    message = message_for()
    options = SmtpOptions(tls_context=tls.server, implicit_tls=True, credentials=CREDENTIALS)
    async with MailSink(options=options, serve_http=False) as sink:
        config = config_for(
            sink,
            security="tls",
            ca_file=str(ca_file),
            username=CREDENTIALS.username,
            password=CREDENTIALS.password,
        )
        assert (await deliver(message, config)).delivered is True
        (arrived,) = stored(sink, message)
    assert (arrived.tls, arrived.authenticated_as) == (True, "notifier")


async def test_starttls_required_but_not_offered_is_a_configuration_error(sink: MailSink) -> None:
    with pytest.raises(SmtpConfigurationError, match="STARTTLS"):
        await deliver(message_for(), config_for(sink, security="starttls"))
    assert len(sink.store) == 0


@pytest.mark.parametrize(("implicit_tls", "security"), [(False, "starttls"), (True, "tls")])
async def test_an_untrusted_certificate_is_a_configuration_error(
    tls: TlsMaterial, implicit_tls: bool, security: str
) -> None:
    options = SmtpOptions(tls_context=tls.server, implicit_tls=implicit_tls)
    async with MailSink(options=options, serve_http=False) as sink:
        with pytest.raises(SmtpConfigurationError, match="certificate is not trusted"):
            await deliver(message_for(), config_for(sink, security=security))
        assert sink.stats.transactions == 0


async def test_a_message_without_message_id_is_refused(sink: MailSink) -> None:
    message = message_for()
    del message["Message-ID"]
    with pytest.raises(ValueError, match="Message-ID"):
        await deliver(message, config_for(sink))
