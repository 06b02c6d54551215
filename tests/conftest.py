"""Fixtures every test tier may use, and the order the tiers run in."""

from __future__ import annotations

from typing import Any

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


#: Tests that share one thing a session starts: by group, the fixture that starts it and the files
#: its tests are in. Under pytest-xdist each group runs on one worker, in collection order (the
#: fault tests' aftermath last), beside the other workers; a worker holding a group of stack tests
#: starts a stack of its own (tests/support/stack.py). `-n 0` runs every group on one stack, the
#: fault tests last.
#: Listed by file because xdist's scheduler sees only test ids; a test using one of these fixtures
#: from a file not listed for it stops the run, naming it.
SHARED = {
    # The fault tests, which kill and restart containers, on a stack of their own beside the
    # integration tests' stack: the two were one worker's 13 minutes in a row, the critical path.
    # Three workers, not four: the in-process tests run on the third worker alone (it takes them
    # one at a time once its own group is nearly done), which keeps the load within what the
    # fault tests' timings allow (docs/tests.md, "How long").
    # The integration stack's tests take about a minute less than the fault tests', so it also takes
    # two files of fault tests (the Resonate server killed and restarted, and replaced by a new one
    # restored from a backup; run after its own tests: tests/conftest.py runs fault tests last): both
    # stacks' workers then end together.
    "compose-stack": (
        "stack",
        (
            "tests/integration/",
            "tests/client/test_against_stack.py",
            "tests/faults/test_resonate_killed.py",
            "tests/faults/test_backup_restore.py",
        ),
    ),
    "compose-stack-faults": ("stack", ("tests/faults/",)),
    "resonate-pg-container": (
        "resonate_pg",
        (
            "tests/api/index/",
            "tests/api/domain/test_snapshots.py",
            "tests/api/test_schedules.py",
            "tests/worker/test_sweep_database.py",
            "tests/shared/test_lost_client.py",
        ),
    ),
    # A plain Postgres (not our image) handed over as a managed service would, and `resonate-pg apply`
    # run on it as its admin (tests/support/plain_postgres.py): one server for the file's tests.
    "plain-postgres": ("plain_postgres", ("tests/deploy/test_bring_your_own_postgres.py",)),
}


def shared_group(nodeid: str) -> str | None:
    """The group a test id belongs to, by its file; None for a test that shares nothing."""
    return next((group for group, (_, files) in SHARED.items() if nodeid.startswith(files)), None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run fault tests last: they kill and restart the stack's containers; then what checks their aftermath."""
    _one_id_each(items)
    items.sort(key=lambda item: (item.get_closest_marker("faults") is not None, _after_faults(item)))
    shared_fixtures = {fixture for fixture, _ in SHARED.values()}
    for item in items:
        group = shared_group(item.nodeid)
        for fixture in shared_fixtures & set(getattr(item, "fixturenames", ())):
            if group is None or SHARED[group][0] != fixture:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the fixture {fixture!r}: list its file in tests/conftest.py SHARED, "
                    "so that its tests run on the worker that holds it"
                )


def _one_id_each(items: list[pytest.Item]) -> None:
    """Give every test an id of its own, or stop the run naming the ones that share one.

    xdist's scheduler keeps tests by id: of several tests under one id it runs one and
    counts the rest as never collected, and the run still passes. schemathesis (4.x,
    under pytest 9) names each generated test after its operation
    (``test_x[POST /pipelines]``) but leaves its id the function's, so CI ran 2 of
    the 26 fuzz tests. Such a test takes its name as its id.
    """
    for item in items:
        if item.parent is not None and item.name != item.nodeid.rpartition("::")[2]:
            # What pytest (9.2, _pytest/nodes.py) computes an id from when it makes the item.
            item._id = item.parent.id.child(item.name)  # type: ignore[attr-defined]
    seen: set[str] = set()
    shared = sorted({item.nodeid for item in items if item.nodeid in seen or seen.add(item.nodeid)})
    if shared:
        raise pytest.UsageError(f"tests sharing an id (xdist would run one of each): {shared}")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Each group of :data:`SHARED` as one unit of work, the largest first; every other test on its own.

    (``--dist loadgroup`` with ``xdist_group`` marks does this too, but xdist 3.8 marks a test by
    rewriting its id, which pytest 9.2 no longer reads: the marks were ignored.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class SharedGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_group(nodeid) or nodeid

    return SharedGroups(config, log)


def _after_faults(item: pytest.Item) -> bool:
    return item.get_closest_marker("after_faults") is not None
