"""Fixtures for the mail sink's tests: a sink per test on free loopback ports."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import trustme
from mailsink import MailSink


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    async with MailSink() as running:
        yield running


@pytest.fixture
async def http(sink: MailSink) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sink.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
