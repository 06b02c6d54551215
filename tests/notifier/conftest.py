"""Fixtures for the notifier's SMTP tests: an in-process mail sink per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailsink import MailSink
from tests.support.mail_messages import TlsMaterial, tls_material


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    # SMTP only: the tests read the sink's store directly, and an HTTP API
    # would only add start-up time.
    async with MailSink(serve_http=False) as running:
        yield running


@pytest.fixture(scope="session")
def tls() -> TlsMaterial:
    return tls_material()


@pytest.fixture(scope="session")
def ca_file(tls: TlsMaterial, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA as a PEM file, the way the notifier is configured with one."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls.ca.cert_pem.write_to_path(str(path))
    return path
