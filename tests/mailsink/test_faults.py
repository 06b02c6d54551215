"""Injected faults, as an SMTP client meets them: the reply codes and when they stop."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib
import httpx
import pytest

from mailsink import MailSink
from tests.support.mail_messages import make_message, unique_address


async def send(sink: MailSink, message) -> None:
    await aiosmtplib.send(message, hostname=sink.smtp_host, port=sink.smtp_port)


async def test_transient_fault_refuses_the_next_n_transactions_then_delivers(
    sink: MailSink, http: httpx.AsyncClient
) -> None:
    rcpt = unique_address()
    response = await http.post("/faults/transient", json={"count": 2})
    assert response.status_code == 200
    assert response.json()["transient"] == {
        "code": 451,
        "text": "4.3.0 Requested action aborted: local error in processing",
        "stage": "rcpt",
        "remaining": 2,
        "seconds_left": None,
    }

    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink, make_message(to=rcpt))
        (only,) = refused.value.recipients
        assert (only.code, only.recipient) == (451, rcpt)
    await send(sink, make_message(to=rcpt))

    assert len((await http.get("/messages", params={"to": rcpt})).json()["messages"]) == 1
    assert (await http.get("/faults")).json()["transient"] is None
    stats = (await http.get("/stats")).json()
    assert stats["rejected_transient"] == 2 and stats["accepted"] == 1


@pytest.mark.parametrize(
    ("stage", "code", "error"),
    [
        ("mail", 450, aiosmtplib.SMTPSenderRefused),
        ("data", 452, aiosmtplib.SMTPDataError),
    ],
)
async def test_transient_fault_at_each_stage_raises_the_matching_client_error(
    sink: MailSink, http: httpx.AsyncClient, stage: str, code: int, error: type
) -> None:
    await http.post("/faults/transient", json={"count": 1, "stage": stage, "code": code})
    with pytest.raises(error) as refused:
        await send(sink, make_message(to=unique_address()))
    assert refused.value.code == code
    assert refused.value.message.startswith(f"{code // 100}.")


async def test_421_closes_the_connection(sink: MailSink, http: httpx.AsyncClient) -> None:
    await http.post("/faults/transient", json={"count": 1, "code": 421, "stage": "mail"})
    client = aiosmtplib.SMTP(hostname=sink.smtp_host, port=sink.smtp_port, start_tls=False)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await client.mail("sender@example.test")
    assert refused.value.code == 421
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()
    client.close()


async def test_timed_transient_fault_lifts_by_itself(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    started = time.monotonic()
    await http.post("/faults/transient", json={"seconds": 0.3})
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(sink, make_message(to=rcpt))
    # Keep trying, as a client with backoff would, until the fault lifts.
    deadline = started + 5
    while True:
        try:
            await send(sink, make_message(to=rcpt))
            break
        except aiosmtplib.SMTPRecipientsRefused:
            assert time.monotonic() < deadline, "the timed fault did not lift"
            await asyncio.sleep(0.05)
    assert time.monotonic() - started >= 0.3


async def test_permanent_fault_refuses_one_recipient_until_reset(sink: MailSink, http: httpx.AsyncClient) -> None:
    doomed, fine = unique_address("doomed"), unique_address("fine")
    response = await http.post("/faults/permanent", json={"recipient": doomed.upper()})
    assert response.json()["permanent"] == [
        {
            "recipient": doomed.upper(),
            "code": 550,
            "text": "5.1.1 Requested action not taken: mailbox unavailable",
            "stage": "rcpt",
        }
    ]

    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink, make_message(to=doomed))
        assert refused.value.recipients[0].code == 550
    await send(sink, make_message(to=fine))

    assert (await http.delete("/faults")).json() == {"transient": None, "permanent": []}
    await send(sink, make_message(to=doomed))
    assert len((await http.get("/messages", params={"to": doomed})).json()["messages"]) == 1


async def test_permanent_fault_at_data_refuses_the_whole_message(sink: MailSink, http: httpx.AsyncClient) -> None:
    rcpt = unique_address()
    await http.post("/faults/permanent", json={"recipient": rcpt, "code": 554, "stage": "data"})
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(sink, make_message(to=rcpt))
    assert (refused.value.code, refused.value.message) == (554, "5.7.1 Transaction failed")
    assert (await http.get("/messages", params={"to": rcpt})).json()["messages"] == []


@pytest.mark.parametrize(
    ("path", "body", "code", "mentions"),
    [
        ("/faults/transient", {"count": 1, "seconds": 1}, "invalid_request", "exactly one"),
        ("/faults/transient", {}, "invalid_request", "exactly one"),
        ("/faults/transient", {"count": 0}, "invalid_request", "count"),
        ("/faults/transient", {"count": 1, "code": 550}, "invalid_fault", "421, 450, 451, 452"),
        ("/faults/transient", {"count": 1, "stage": "quit"}, "invalid_request", "stage"),
        ("/faults/permanent", {"recipient": "x@example.test", "code": 451}, "invalid_fault", "550"),
        ("/faults/permanent", {"recipient": "nobody"}, "invalid_fault", "address"),
        (
            "/faults/permanent",
            {"recipient": "x@example.test", "stage": "mail"},
            "invalid_request",
            "stage",
        ),
    ],
)
async def test_bad_fault_requests_say_what_is_wrong(
    http: httpx.AsyncClient, path: str, body: dict, code: str, mentions: str
) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert mentions in response.json()["message"]
    assert (await http.get("/faults")).json() == {"transient": None, "permanent": []}
