"""Fixtures for the mail sink's tests: a sink per test on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mailsink import MailSink
from tests.support.mail_messages import TlsMaterial, tls_material


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    async with MailSink() as running:
        yield running


@pytest.fixture
async def http(sink: MailSink) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sink.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def tls() -> TlsMaterial:
    return tls_material()
