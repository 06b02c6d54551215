"""A stack tier is its folder: every test collected under it carries the tier's markers.

A ``pytestmark`` in a conftest.py applies to nothing but the conftest itself,
so a tier's conftest.py marks the collected items whose file lies under its
folder instead (``pytest_collection_modifyitems``). It must run before ``-m``
deselects and before tests/conftest.py orders the tiers by marker, hence
``tryfirst`` on the hooks that call this.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_folder(items: list[pytest.Item], folder: Path, *marks: pytest.MarkDecorator) -> None:
    """Add ``marks`` to each item whose test file lies under ``folder``."""
    for item in items:
        if item.path.is_relative_to(folder):
            for mark in marks:
                item.add_marker(mark)
