"""The integration tier: every test under this folder runs against the compose stack.

The folder is the marker (tests/support/tiers.py): a test module here needs
no ``pytestmark = pytest.mark.integration`` of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import mark_folder


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).resolve().parent, pytest.mark.integration)
