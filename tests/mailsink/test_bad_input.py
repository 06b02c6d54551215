"""Bad input gets an SMTP error or is stored with its defects; the sink keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiosmtplib
import httpx
import pytest

from mailsink import MailSink, SmtpOptions
from tests.support.mail_messages import make_message, unique_address

#: Small, so the oversized message a test sends stays cheap.
SMALL_LIMIT = 64 * 1024


@pytest.fixture
async def small_sink() -> AsyncIterator[MailSink]:
    async with MailSink(options=SmtpOptions(max_message_bytes=SMALL_LIMIT)) as running:
        yield running


async def still_serving(sink: MailSink) -> None:
    """The sink answers health checks and stores ordinary mail."""
    rcpt = unique_address("after")
    await aiosmtplib.send(make_message(to=rcpt), hostname=sink.smtp_host, port=sink.smtp_port)
    async with httpx.AsyncClient(base_url=sink.http_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert len((await http.get("/messages", params={"to": rcpt})).json()["messages"]) == 1


async def send_raw(sink: MailSink, rcpt: str, raw: bytes) -> None:
    async with aiosmtplib.SMTP(hostname=sink.smtp_host, port=sink.smtp_port, start_tls=False) as c:
        await c.sendmail("sender@example.test", [rcpt], raw)


async def test_malformed_message_is_stored_with_its_defects(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    raw = (
        b"From: <<<not an address\r\n"
        b"To: " + rcpt.encode() + b"\r\n"
        b"Subject: caf\xe9 \xff\xfe\r\n"
        b"Date: yesterday-ish\r\n"
        b"Message-ID: <malformed@example.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n'
        b"\r\n"
        b"--b\r\n"
        b"Content-Type: text/plain; charset=no-such-charset\r\n"
        b"\r\n"
        b"plain \xff bytes\r\n"
        b"--b\r\n"
        b"Content-Type: text/html\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"!!!not base64!!!\r\n"
        b"(no closing boundary)\r\n"
    )
    await send_raw(sink, rcpt, raw)

    (message,) = (await http.get("/messages", params={"to": rcpt})).json()["messages"]
    assert message["message_id"] == "<malformed@example.test>"
    assert message["subject"].startswith("caf")
    assert message["date"] == "yesterday-ish"
    assert "plain" in message["text"]
    assert message["defects"], "the parser's complaints are reported"
    await still_serving(sink)


async def test_message_with_no_headers_at_all(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    await send_raw(sink, rcpt, b"\r\njust a body\r\n")
    (message,) = (await http.get("/messages", params={"to": rcpt})).json()["messages"]
    assert (message["message_id"], message["subject"], message["from"]) == (None, None, None)
    assert message["text"].strip() == "just a body"


async def test_oversized_message_announced_with_size_is_refused_at_mail(
    small_sink: MailSink,
) -> None:
    huge = make_message(to=unique_address(), text="x" * (SMALL_LIMIT * 2), html=None)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await aiosmtplib.send(huge, hostname=small_sink.smtp_host, port=small_sink.smtp_port)
    assert refused.value.code == 552
    await still_serving(small_sink)


async def test_oversized_data_without_size_is_refused_after_data(small_sink: MailSink) -> None:
    body = b"Subject: big\r\n\r\n" + (b"y" * 900 + b"\r\n") * (SMALL_LIMIT // 900 * 2)
    async with aiosmtplib.SMTP(hostname=small_sink.smtp_host, port=small_sink.smtp_port, start_tls=False) as client:
        # mail() with no SIZE: the sink learns the size only while reading DATA.
        await client.mail("sender@example.test")
        await client.rcpt(unique_address())
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.data(body)
    assert refused.value.code == 552
    await still_serving(small_sink)


async def test_line_longer_than_rfc_5321_allows_is_refused(sink: MailSink) -> None:
    async with aiosmtplib.SMTP(hostname=sink.smtp_host, port=sink.smtp_port, start_tls=False) as c:
        await c.mail("sender@example.test")
        await c.rcpt(unique_address())
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await c.data(b"Subject: long\r\n\r\n" + b"z" * 5000 + b"\r\n")
    assert refused.value.code == 500
    await still_serving(sink)


async def test_protocol_garbage_gets_errors_not_a_crash(sink: MailSink) -> None:
    reader, writer = await asyncio.open_connection(sink.smtp_host, sink.smtp_port)
    try:
        assert (await reader.readline()).startswith(b"220 ")
        replies = []
        for line in (
            b"\x00\x01\x02\xff binary\r\n",
            b"HELO\r\n",
            b"EHLO " + b"h" * 2000 + b"\r\n",
            b"MAIL FROM:<not closed\r\n",
            b"DATA\r\n",
        ):
            writer.write(line)
            await writer.drain()
            replies.append(await reader.readline())
        assert all(reply[:1] == b"5" for reply in replies), replies
    finally:
        writer.close()
        await writer.wait_closed()
    await still_serving(sink)


async def test_client_vanishing_mid_data_leaves_nothing_behind(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    reader, writer = await asyncio.open_connection(sink.smtp_host, sink.smtp_port)
    await reader.readline()
    for line in (
        b"EHLO client.test\r\n",
        b"MAIL FROM:<s@example.test>\r\n",
        f"RCPT TO:<{rcpt}>\r\n".encode(),
        b"DATA\r\n",
    ):
        writer.write(line)
        await writer.drain()
        while (reply := await reader.readline())[3:4] == b"-":
            pass
    assert reply.startswith(b"354")
    writer.write(b"Subject: cut off\r\n\r\nhalf a mess")
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    assert (await http.get("/messages", params={"to": rcpt})).json()["messages"] == []
    await still_serving(sink)
