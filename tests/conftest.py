"""Fixtures every test tier may use, and the order the tiers run in."""

from __future__ import annotations

import pytest

from tests.stack import stack  # noqa: F401  (the session-wide compose stack fixture)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run fault tests last: they kill and restart the stack's containers."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)
