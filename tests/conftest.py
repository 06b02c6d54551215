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


#: Fixtures whose tests share one thing a session starts (a compose stack, a resonate-pg container):
#: under pytest-xdist, each set runs on one worker, in the order below, beside the others.
SHARED_BY_FIXTURE = {"stack": "compose-stack", "resonate_pg": "resonate-pg-container"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run fault tests last: they kill and restart the stack's containers; then what checks their aftermath.

    Tests sharing what a session starts are grouped (``xdist_group``), so
    ``--dist loadgroup`` gives each group to one worker, in this order, and
    spreads the independent tests over the others (xdist hands out the
    largest group first: the stack's tests start at once).
    """
    items.sort(key=lambda item: (item.get_closest_marker("faults") is not None, _after_faults(item)))
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        group = next((name for fixture, name in SHARED_BY_FIXTURE.items() if fixture in fixtures), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def _after_faults(item: pytest.Item) -> bool:
    return item.get_closest_marker("after_faults") is not None
