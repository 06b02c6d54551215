"""Helpers the sink's test modules import: unique addresses and test messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from email.message import EmailMessage

import httpx


def unique_address(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.test"


def make_message(
    *,
    to: str,
    sender: str = "pipelines@example.test",
    subject: str = "Pipeline finished",
    message_id: str | None = None,
    pipeline_id: str | None = None,
    text: str = "Plain body.",
    html: str | None = "<p>HTML body.</p>",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.test>"
    if pipeline_id is not None:
        message["X-Pipeline-Id"] = pipeline_id
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


async def until_waiting(http: httpx.AsyncClient, expected: int, *, within: float = 5.0) -> None:
    """Return once ``expected`` long polls are parked in the sink.

    Polls ``/stats`` with a deadline: the sink has no event to await for a
    request that has merely arrived.
    """
    deadline = time.monotonic() + within
    while True:
        waiting = (await http.get("/stats")).json()["waiting"]
        if waiting >= expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{waiting} long poll(s) parked after {within} s, wanted {expected}"
            )
        await asyncio.sleep(0.01)
