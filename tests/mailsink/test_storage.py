"""What a test reads back over HTTP after mail arrives over real SMTP."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from functools import partial

import aiosmtplib
import httpx
import pytest

from mailsink import Limits, MailSink
from mailsink.api import create_app
from mailsink.server import probe_smtp
from tests.support.mail_messages import make_message, unique_address, until_waiting


async def send(sink: MailSink, message, **kwargs) -> None:
    await aiosmtplib.send(message, hostname=sink.smtp_host, port=sink.smtp_port, **kwargs)


async def test_stored_message_has_envelope_headers_and_both_bodies(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    pipeline_id = f"p-{uuid.uuid4().hex[:8]}"
    message = make_message(
        to=rcpt,
        subject="Pipeline nightly succeeded — ✓",
        pipeline_id=pipeline_id,
        text="Rows: 12",
        html="<p>Rows: <b>12</b></p>",
    )
    await send(sink, message, sender="bounce@example.test")

    listed = (await http.get("/messages", params={"pipeline_id": pipeline_id})).json()["messages"]
    assert len(listed) == 1
    stored = listed[0]
    assert stored["message_id"] == message["Message-ID"]
    assert stored["pipeline_id"] == pipeline_id
    assert stored["envelope_from"] == "bounce@example.test"
    assert stored["envelope_to"] == [rcpt]
    assert stored["from"] == "pipelines@example.test"
    assert stored["to"] == rcpt
    assert stored["subject"] == "Pipeline nightly succeeded — ✓"
    assert stored["text"].strip() == "Rows: 12"
    assert stored["html"].strip() == "<p>Rows: <b>12</b></p>"
    assert stored["deliveries"] == 1
    assert stored["tls"] is False and stored["authenticated_as"] is None
    assert stored["defects"] == []
    assert stored["attachments"] == []
    assert stored["received_at_ms"] > 0 and stored["size"] > 0
    assert ["X-Pipeline-Id", pipeline_id] in stored["headers"]

    one = (await http.get(f"/messages/{stored['id']}")).json()
    assert one == stored
    raw = await http.get(f"/messages/{stored['id']}/raw")
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert f"X-Pipeline-Id: {pipeline_id}".encode() in raw.content


async def test_attachments_are_listed_with_their_decoded_size(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    message = make_message(to=rcpt)
    message.add_attachment(b"\x00\x01" * 100, maintype="application", subtype="octet-stream", filename="run-output.bin")
    message.add_attachment("ünïcode,1\n".encode(), maintype="text", subtype="csv", filename="résumé.csv")
    await send(sink, message)

    (stored,) = (await http.get("/messages", params={"to": rcpt})).json()["messages"]
    assert stored["attachments"] == [
        {"filename": "run-output.bin", "content_type": "application/octet-stream", "size": 200},
        {"filename": "résumé.csv", "content_type": "text/csv", "size": 12},
    ]
    assert stored["text"].strip() == "Plain body."


async def test_filters_by_recipient_and_message_id(sink: MailSink, http: httpx.AsyncClient) -> None:
    first, second = unique_address("first"), unique_address("second")
    a = make_message(to=first)
    b = make_message(to=second)
    await send(sink, a)
    await send(sink, b)

    by_rcpt = (await http.get("/messages", params={"to": first.upper()})).json()["messages"]
    assert [m["message_id"] for m in by_rcpt] == [a["Message-ID"]]
    bare_id = b["Message-ID"].strip("<>")
    by_id = (await http.get("/messages", params={"message_id": bare_id})).json()["messages"]
    assert [m["envelope_to"] for m in by_id] == [[second]]
    both = (await http.get("/messages", params={"to": first, "message_id": bare_id})).json()
    assert both["messages"] == []


async def test_same_message_id_twice_is_one_message_delivered_twice(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    message = make_message(to=rcpt)
    await send(sink, message)
    await send(sink, message)

    listed = (await http.get("/messages", params={"to": rcpt})).json()["messages"]
    assert len(listed) == 1
    assert listed[0]["deliveries"] == 2
    assert listed[0]["last_received_at"] >= listed[0]["received_at"]
    stats = (await http.get("/stats")).json()
    assert stats["accepted"] == 2 and stats["duplicates"] == 1 and stats["messages"] == 1


async def test_messages_without_message_id_are_each_new(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    message = make_message(to=rcpt)
    del message["Message-ID"]
    await send(sink, message)
    await send(sink, message)

    listed = (await http.get("/messages", params={"to": rcpt})).json()["messages"]
    assert [(m["message_id"], m["deliveries"]) for m in listed] == [(None, 1), (None, 1)]


async def test_wait_answers_when_the_message_arrives(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    waiting = asyncio.create_task(http.get("/messages/wait", params={"to": rcpt, "timeout": 20}))
    await until_waiting(http, 1)
    await send(sink, make_message(to=rcpt, subject="awaited"))

    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 200
    assert [m["subject"] for m in response.json()["messages"]] == ["awaited"]


async def test_wait_for_a_second_delivery_and_for_a_count(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    message = make_message(to=rcpt)
    await send(sink, message)
    second_delivery = asyncio.create_task(
        http.get(
            "/messages/wait",
            params={"message_id": message["Message-ID"], "min_deliveries": 2, "timeout": 20},
        )
    )
    two_messages = asyncio.create_task(http.get("/messages/wait", params={"to": rcpt, "count": 2, "timeout": 20}))
    await until_waiting(http, 2)
    await send(sink, message)
    assert (await second_delivery).json()["messages"][0]["deliveries"] == 2
    assert not two_messages.done()
    await send(sink, make_message(to=rcpt))
    assert len((await two_messages).json()["messages"]) == 2


async def test_wait_times_out_with_408(http: httpx.AsyncClient) -> None:
    response = await http.get("/messages/wait", params={"to": unique_address(), "timeout": 0.2})
    assert response.status_code == 408
    assert response.json()["code"] == "wait_timed_out"


async def test_bad_query_parameters_are_named(http: httpx.AsyncClient) -> None:
    response = await http.get("/messages/wait", params={"timeout": 10_000})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request" and "timeout" in body["message"]
    missing = await http.get("/messages/999999")
    assert missing.status_code == 404 and missing.json()["code"] == "message_not_found"


async def test_delete_forgets_everything(sink: MailSink, http: httpx.AsyncClient) -> None:
    await send(sink, make_message(to=unique_address()))
    await send(sink, make_message(to=unique_address()))
    assert (await http.delete("/messages")).json() == {"deleted": 2}
    assert (await http.get("/messages")).json() == {"messages": []}


async def test_oldest_messages_are_dropped_beyond_the_bound() -> None:
    async with MailSink(limits=Limits(max_messages=3)) as sink:
        rcpt = unique_address()
        subjects = [f"message {n}" for n in range(5)]
        for subject in subjects:
            await send(sink, make_message(to=rcpt, subject=subject))
        async with httpx.AsyncClient(base_url=sink.http_url) as http:
            kept = (await http.get("/messages")).json()["messages"]
            assert [m["subject"] for m in kept] == subjects[2:]
            assert (await http.get("/stats")).json()["evicted"] == 2


async def test_healthz_proves_smtp_answers(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "smtp": "250 OK"}


@pytest.fixture
async def not_smtp() -> AsyncIterator[int]:
    """A listener that answers like a server with no SMTP service (RFC 5321: 554)."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 No SMTP service here\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("listener", ["nothing listening", "not an SMTP server"])
async def test_healthz_fails_when_smtp_does_not_answer(sink: MailSink, not_smtp: int, listener: str) -> None:
    port = closed_port() if listener == "nothing listening" else not_smtp
    app = create_app(sink.store, sink.faults, sink.stats, partial(probe_smtp, "127.0.0.1", port))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as http:
        response = await http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert ("554" in body["smtp"]) == (listener == "not an SMTP server"), body
