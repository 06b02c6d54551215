"""The integration tier: every test under this folder runs against the compose stack.

The folder is the marker. A ``pytestmark`` in a conftest.py is not
inherited by the modules beside it, so the mark is added here to each
collected item whose file lies under this folder; a test module here needs
no ``pytestmark = pytest.mark.integration`` of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ours before ``-m`` selects and tests/conftest.py orders the tiers by marker."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
