"""Test mail for the mail sink: unique addresses, messages, its parked long polls, TLS material."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage

import httpx
import trustme


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
    replying_to: list[str] | None = None,
) -> EmailMessage:
    """A text (and HTML) email; ``replying_to`` names its thread, oldest first."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.test>"
    if pipeline_id is not None:
        message["X-Pipeline-Id"] = pipeline_id
    if replying_to:
        message["In-Reply-To"] = replying_to[-1]
        message["References"] = " ".join(replying_to)
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
            raise AssertionError(f"{waiting} long poll(s) parked after {within} s, wanted {expected}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """A private CA with a server certificate for 127.0.0.1 and localhost."""

    ca: trustme.CA
    #: Server side: presents the certificate.
    server: ssl.SSLContext
    #: Client side: trusts the CA.
    client: ssl.SSLContext


@functools.cache
def tls_material() -> TlsMaterial:
    """One CA per test process: issuing certificates costs a little CPU."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TlsMaterial(ca, server, client)
