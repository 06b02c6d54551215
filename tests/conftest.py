"""Fixtures every test tier may use, and the order the tiers run in."""

from __future__ import annotations

import pytest

from tests.support.browser import browser, open_page, page, screenshots  # noqa: F401  (browser tests)
from tests.support.stack import Stack, stack  # noqa: F401  (the session-wide compose stack fixture)
from tests.support.stack_clients import Emulator, Gateway, MailSink


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Gateway:  # noqa: F811
    """The stack's gateway, as a client calls it."""
    return Gateway(stack.api_url)


@pytest.fixture(scope="session")
def emulator(stack: Stack) -> Emulator:  # noqa: F811
    """The stack's Databricks emulator: its control API and counters."""
    return Emulator(stack.databricks_url)


@pytest.fixture(scope="session")
def mail(stack: Stack) -> MailSink:  # noqa: F811
    """The stack's mail sink, as the recipient sees it."""
    return MailSink(stack.mailsink_url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run fault tests last: they kill and restart the stack's containers; then what checks their aftermath."""
    items.sort(key=lambda item: (item.get_closest_marker("faults") is not None, _after_faults(item)))


def _after_faults(item: pytest.Item) -> bool:
    return item.get_closest_marker("after_faults") is not None
