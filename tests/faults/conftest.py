"""What every fault test uses: a batch, the pause points, the mail sink's faults, and a stack put back.

The folder is the tier (tests/support/tiers.py): every test under it is
marked ``integration`` (it needs the stack) and ``faults`` (it kills
containers, so tests/conftest.py runs it last).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fault_batch import Batch, PausePoints
from tests.support.stack_clients import Emulator, Gateway, MailSink
from tests.support.tiers import mark_folder

#: Every service of the test stack, in the order a stopped one is started again.
STACK_SERVICES = ("resonate", "api", "worker", "notifier", "databricks", "mailsink")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).resolve().parent, pytest.mark.integration, pytest.mark.faults)


@pytest.fixture
def batch(gateway: Gateway, emulator: Emulator, mail: MailSink, request: pytest.FixtureRequest) -> Batch:
    return Batch(gateway, emulator, mail, request.node.name.removeprefix("test_")[:20].replace("_", "-"))


@pytest.fixture
def hooks(stack) -> PausePoints:  # type: ignore[no-untyped-def]
    return PausePoints(stack.worker_ops_url)


@pytest.fixture
def notifier_hooks(stack) -> PausePoints:  # type: ignore[no-untyped-def]
    return PausePoints(stack.notifier_ops_url)


@pytest.fixture
def mail_faults(stack) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    """The mail sink's fault API; every fault is cleared afterwards."""
    with httpx.Client(base_url=stack.mailsink_url, timeout=10) as client:
        yield client
        client.delete("/faults")


@pytest.fixture(autouse=True)
def stack_restored(stack) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Whatever a test broke, every service is up and healthy before the next one."""
    yield
    # One `docker compose ps` for all six services, not two each (twelve calls took about 1.5 s a
    # test); read again after a start, as a service may turn healthy only once another is back.
    states = stack.states()
    stopped = [service for service in STACK_SERVICES if states.get(service, ("", ""))[0] != "running"]
    for service in stopped:
        stack.start(service)  # waits until it is healthy
    if stopped:
        states = stack.states()
    for service in STACK_SERVICES:
        if states.get(service, ("", ""))[1] != "healthy":
            stack.wait_healthy(service)
