"""Fixtures of the web page's tests: a keys file of three principals, and the page served over ASGI on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.keys_files import write_keys
from tests.support.ui_gateway import (
    ALICE,
    BOB,
    READER,
    Page,
    serve,
)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys.toml"
    write_keys(path, ALICE, BOB, READER)
    return path


@pytest.fixture
async def page(keys_file: Path) -> AsyncIterator[Page]:
    async with serve(keys_file) as page:
        yield page
