"""AUTH and TLS, optional in the sink, as a real client negotiates them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import httpx
import pytest

from mailsink import Credentials, MailSink, SmtpOptions
from tests.support.mail_messages import TlsMaterial, make_message, unique_address

CREDENTIALS = Credentials("notifier", "s3cret-for-tests")


@pytest.fixture
async def auth_sink() -> AsyncIterator[MailSink]:
    async with MailSink(options=SmtpOptions(credentials=CREDENTIALS)) as running:
        yield running


async def stored(sink: MailSink, rcpt: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=sink.http_url) as http:
        return (await http.get("/messages", params={"to": rcpt})).json()["messages"]


@pytest.mark.parametrize("mechanism", ["auth_plain", "auth_login"])
async def test_correct_credentials_deliver_and_are_recorded(auth_sink: MailSink, mechanism: str) -> None:
    rcpt = unique_address()
    client = aiosmtplib.SMTP(hostname=auth_sink.smtp_host, port=auth_sink.smtp_port, start_tls=False)
    async with client:
        await client.ehlo()
        assert {"plain", "login"} <= set(client.server_auth_methods)
        await getattr(client, mechanism)(CREDENTIALS.username, CREDENTIALS.password)
        await client.send_message(make_message(to=rcpt))
    (message,) = await stored(auth_sink, rcpt)
    assert message["authenticated_as"] == "notifier"


async def test_mail_without_auth_is_refused_with_530(auth_sink: MailSink) -> None:
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await aiosmtplib.send(
            make_message(to=unique_address()),
            hostname=auth_sink.smtp_host,
            port=auth_sink.smtp_port,
        )
    assert refused.value.code == 530


async def test_wrong_password_is_refused_with_535_and_counted(auth_sink: MailSink) -> None:
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await aiosmtplib.send(
            make_message(to=unique_address()),
            hostname=auth_sink.smtp_host,
            port=auth_sink.smtp_port,
            username=CREDENTIALS.username,
            password="wrong",
        )
    assert refused.value.code == 535
    async with httpx.AsyncClient(base_url=auth_sink.http_url) as http:
        # aiosmtplib tries each mechanism the server offers before giving up.
        assert (await http.get("/stats")).json()["auth_failures"] >= 1


@pytest.mark.parametrize(
    ("implicit_tls", "client_mode"),
    [(False, {"start_tls": True}), (True, {"use_tls": True})],
    ids=["starttls", "implicit"],
)
async def test_tls_is_negotiated_and_recorded(tls: TlsMaterial, implicit_tls: bool, client_mode: dict) -> None:
    rcpt = unique_address()
    options = SmtpOptions(tls_context=tls.server, implicit_tls=implicit_tls)
    async with MailSink(options=options) as sink:
        await aiosmtplib.send(
            make_message(to=rcpt),
            hostname=sink.smtp_host,
            port=sink.smtp_port,
            tls_context=tls.client,
            **client_mode,
        )
        (message,) = await stored(sink, rcpt)
        async with httpx.AsyncClient(base_url=sink.http_url) as http:
            health = await http.get("/healthz")
    assert message["tls"] is True
    # The health probe speaks TLS from the first byte too when it must.
    assert health.json() == {"status": "ok", "smtp": "250 OK"}
